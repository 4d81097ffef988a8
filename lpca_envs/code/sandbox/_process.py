"""`ProcessSandbox`: rlimits and a timeout in a temporary directory. NOT a security boundary.

The command runs as an ordinary process on the host: it can read whatever its
user can read and open network connections. Use it only where neither docker nor
bubblewrap exists, and only by naming it explicitly (``open_sandbox("process")``).

Nothing it starts outlives the run: the supervisor is a child subreaper (processes
that detach with ``setsid`` or a double fork are re-parented to it) and kills every
descendant after the command. When run as root it also drops each run to a uid of
its own (from 2^31 up, otherwise unused), so that the rlimits apply (RLIMIT_NPROC is
not enforced for root), the run's process count is its own, and afterwards every
process of that uid is killed, even if the command killed its supervisor (docker and
bwrap sandboxes run as 65534).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from lpca_envs.code.sandbox._api import GRACE_SECONDS, SUPERVISOR_ENV, Limits, Sandbox

#: Per-run uids when dropping from root: 2^31 + (pid mod 2^16) * 2^8 + a counter mod 2^8.
_UID_BASE = 1 << 31
_COUNTER = itertools.count()
_COUNTER_LOCK = threading.Lock()


def _run_uid() -> int:
    with _COUNTER_LOCK:
        n = next(_COUNTER)
    return _UID_BASE + ((os.getpid() & 0xFFFF) << 8) + (n & 0xFF)


def _uid_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def kill_uid(uid: int, within: float = 5.0) -> int:
    """SIGKILL every process whose real uid is `uid` until none is left; return how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit() and _uid_of(n) == uid]
        if not pids:
            break
        for pid in pids:
            killed.add(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    return len(killed)


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
        uid = _run_uid() if os.geteuid() == 0 else None
        try:
            if uid is not None:
                os.chown(tmp, uid, uid)
            stdin = self.encode(job, os.path.join(tmp, "work"))
            p = subprocess.Popen(
                self.supervisor_argv(self.python),
                cwd=tmp,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=SUPERVISOR_ENV,
                **({"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}),
            )
            try:
                out, err = p.communicate(stdin, timeout=limits.timeout + GRACE_SECONDS)
                return out, err, p.returncode
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                return out, err, None
        finally:
            if uid is not None:  # whatever the run left, even if it killed its supervisor
                kill_uid(uid)
            shutil.rmtree(tmp, ignore_errors=True)
