"""`BwrapSandbox`: bubblewrap namespaces around the supervisor; one fresh sandbox per run.

``bwrap --unshare-all`` gives the run its own user, PID, network (loopback only,
no route out), IPC, UTS (host name ``sandbox``) and cgroup namespaces. The root
filesystem is empty but for read-only binds of ``/usr`` (the interpreter and its
libraries), a fresh ``/proc`` and a read-only minimal ``/dev`` (null, zero, full,
random, urandom, tty, pts), and three size-capped tmpfs, the only writable places:
``/work`` (half of `Limits.disk_mb`), ``/tmp`` and ``/dev/shm`` (a quarter each), so
a run writes at most ``disk_mb`` in all. No host file outside ``/usr`` is visible.
All capabilities are dropped, ``--new-session`` blocks terminal injection,
``--die-with-parent`` ties the sandbox to the caller.

bwrap itself is started with only `SUPERVISOR_ENV` (never the caller's environment,
which a sandboxed program could otherwise read from bwrap's ``/proc/<pid>/environ``),
and ``--as-pid-1`` makes the supervisor, not bwrap, the namespace's PID 1: it is
non-dumpable (its memory and environment are unreadable from inside) and the kernel
shields a namespace's init from signals sent inside it, so the sandboxed code cannot
kill it. When the caller is root, bwrap runs as uid/gid 65534 so the sandboxed uid
maps to an unprivileged host uid (host files owned by root stay root's). The
supervisor sets the rlimits; RLIMIT_NPROC counts per user namespace, so the pids
limit is per run. When the supervisor exits, the namespace's init exits and the
kernel kills everything left inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from lpca_envs.code.sandbox._api import GRACE_SECONDS, SUPERVISOR_ENV, Limits, Sandbox

_NOBODY = 65534


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
            [*_argv("bwrap", Limits()), "/usr/bin/python3", "-S", "-c", "pass"],
            capture_output=True,
            timeout=30,
            env=dict(SUPERVISOR_ENV),
            **_drop(),
        )
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip()
            return f"bwrap cannot create its namespaces here ({err}); unprivileged user namespaces needed"
        return None

    def _supervise(self, job: dict[str, Any], limits: Limits) -> tuple[bytes, bytes, int | None]:
        argv = [*_argv(self.bwrap, limits), *self.supervisor_argv(self.python)]
        p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            start_new_session=True,
            env=dict(SUPERVISOR_ENV),
            **_drop(),
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


def _argv(bwrap: str, limits: Limits) -> list[str]:
    size = limits.disk_bytes()
    return [
        bwrap,
        "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--as-pid-1",
        "--hostname", "sandbox",
        "--clearenv", *[a for k, v in SUPERVISOR_ENV.items() for a in ("--setenv", k, v)],
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(size["shm"]), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
        "--size", str(size["tmp"]), "--tmpfs", "/tmp",
        "--size", str(size["work"]), "--tmpfs", "/work",
        "--remount-ro", "/", "--chdir", "/work",
    ]  # fmt: skip
