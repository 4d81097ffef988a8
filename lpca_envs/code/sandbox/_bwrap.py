"""`BwrapSandbox`: bubblewrap namespaces around the supervisor; one fresh sandbox per run.

``bwrap --unshare-all`` gives the run its own user, PID, network (loopback only,
no route out), IPC, UTS and cgroup namespaces. The root filesystem is empty but
for read-only binds of ``/usr`` (the interpreter and its libraries), fresh
``/proc`` and ``/dev``, and size-capped tmpfs ``/tmp`` and ``/work``: no host file
outside ``/usr`` is visible, and the root itself is read-only. All capabilities are dropped, ``--new-session``
blocks terminal injection, ``--die-with-parent`` ties the sandbox to the caller.
When the caller is root, bwrap itself runs as uid/gid 65534 so the sandboxed
uid maps to an unprivileged host uid (host files owned by root stay root's).
The supervisor sets the rlimits; RLIMIT_NPROC counts per user namespace, so
the pids limit is per run. When the supervisor exits, the namespace's init
exits and the kernel kills everything left inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from lpca_envs.code.sandbox._api import GRACE_SECONDS, SUPERVISOR_ENV, Limits, Sandbox

_NOBODY = 65534
_TMPFS_BYTES = 64 << 20


class BwrapSandbox(Sandbox):
    name = "bwrap"
    isolated = True

    def __init__(self, bwrap: str | None = None, python: str = "/usr/bin/python3") -> None:
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.python = python

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("bwrap") is None:
            return "bubblewrap is not installed (apt-get install bubblewrap)"
        if not os.access("/usr/bin/python3", os.X_OK):
            return "the bwrap sandbox runs /usr/bin/python3, which is missing (apt-get install python3)"
        r = subprocess.run(
            [*_argv("bwrap"), "/usr/bin/python3", "-S", "-c", "pass"],
            capture_output=True, timeout=30, **_drop(),
        )
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip()
            return f"bwrap cannot create its namespaces here ({err}); unprivileged user namespaces needed"
        return None

    def _supervise(self, job: dict[str, Any], limits: Limits) -> tuple[bytes, bytes, int | None]:
        argv = [*_argv(self.bwrap), *self.supervisor_argv(self.python)]
        p = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
            start_new_session=True, **_drop(),
        )
        try:
            out, err = p.communicate(self.encode(job, "/work"), timeout=limits.timeout + GRACE_SECONDS)
            return out, err, p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            return out, err, None


def _drop() -> dict[str, Any]:
    return {"user": _NOBODY, "group": _NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


def _argv(bwrap: str) -> list[str]:
    return [
        bwrap,
        "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", *[a for k, v in SUPERVISOR_ENV.items() for a in ("--setenv", k, v)],
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(_TMPFS_BYTES), "--tmpfs", "/tmp",
        "--size", str(_TMPFS_BYTES), "--tmpfs", "/work",
        "--remount-ro", "/", "--chdir", "/work",
    ]  # fmt: skip
