"""`ProcessSandbox`: rlimits and a timeout in a temporary directory. NOT a security boundary.

The command runs as an ordinary process on the host: it can read whatever its
user can read, open network connections, and leave processes behind that escape
its process group. Use it only where neither docker nor bubblewrap exists, and
only by naming it explicitly (``open_sandbox("process")``). When run as root it
drops to uid/gid 65533, an otherwise unused uid, so that the rlimits apply
(RLIMIT_NPROC is not enforced for root) and its process count is its own
(docker and bwrap sandboxes run as 65534).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from lpca_envs.code.sandbox._api import GRACE_SECONDS, SUPERVISOR_ENV, Limits, Sandbox

_UID = 65533


def _python() -> str:
    if os.geteuid() == 0:  # uid 65533 must be able to execute it: prefer the system interpreter
        for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.access(p, os.X_OK):
                return p
    return sys.executable


class ProcessSandbox(Sandbox):
    name = "process"
    isolated = False

    def __init__(self, python: str | None = None) -> None:
        self.python = python or _python()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if os.name == "posix" else "the process sandbox needs a POSIX system (rlimits)"

    def _supervise(self, job: dict[str, Any], limits: Limits) -> tuple[bytes, bytes, int | None]:
        tmp = tempfile.mkdtemp(prefix="lpca-process-")
        drop = os.geteuid() == 0
        try:
            if drop:
                os.chown(tmp, _UID, _UID)
            stdin = self.encode(job, os.path.join(tmp, "work"))
            p = subprocess.Popen(
                self.supervisor_argv(self.python), cwd=tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, env=SUPERVISOR_ENV,
                **({"user": _UID, "group": _UID, "extra_groups": []} if drop else {}),
            )
            try:
                out, err = p.communicate(stdin, timeout=limits.timeout + GRACE_SECONDS)
                return out, err, p.returncode
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                return out, err, None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
