"""The supervisor: runs inside every sandbox and runs each command for it.

Standalone (stdlib only, no lpca import): the host starts this file's text with
``python3 -S -s -P -c <text>`` and sends jobs on stdin, each as one length line and
that many bytes of JSON: ``{"files": {path: base64}, "command": [...], "workdir": dir,
"limits": {...}, "isolated": bool, "clean": [dirs]}``. One answer line per job on
stdout: ``LPCA-SUPERVISOR <json>``. With ``--serve`` it answers jobs until EOF (a
container's PID 1), otherwise exactly one.

Per job it empties the ``clean`` dirs (and, with ``clean_ipc``, the IPC namespace's
System V objects) and checks they are empty, writes the files, runs the command in a
new session under rlimits with stdout and stderr on pipes it caps, kills the command's
process group at the wall-clock timeout or as soon as an output cap is passed, and,
when ``isolated`` (a PID namespace of its own: docker, bwrap), kills every other
process it may signal before and after the run, so nothing outlives a run. Not
isolated (the process backend), it makes itself a child subreaper, so descendants
that detach (``setsid``, double fork) are re-parented to it, and kills every
descendant after the run. A dir it cannot empty is answered with ``unclean`` (and a
serving supervisor then exits, so that its container is replaced).

It makes itself non-dumpable: the command runs as the same uid, and this keeps it
from opening the supervisor's descriptors or writing its memory through /proc.
A command ``python3 [flags] script.py ...`` is run by forking this interpreter
(no second interpreter start-up): the child inherits non-dumpability.
"""

import base64
import contextlib
import json
import os
import resource
import select
import signal
import sys
import time

MARK = b"LPCA-SUPERVISOR "
_PY_FLAGS = {"-I", "-S", "-s", "-P", "-E", "-B", "-u"}
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}  # fmt: skip


def _nondumpable():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    except Exception:
        pass


def _others():
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit() and int(n) not in (1, me)]


def _kill_others():
    """Kill every process this uid may signal except PID 1 and ourselves; count them."""
    n = len(_others())
    if n:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
    # Reap our children (as PID 1, orphans are ours too); SIGKILLed ones die at once.
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                if os.getpid() != 1:
                    break
                time.sleep(0.001)
        except ChildProcessError:
            break
    return n


def _clean(path):
    """Empty `path` (same uid as whatever wrote there: restore permissions it took away first)."""
    with contextlib.suppress(OSError):
        os.chmod(path, os.stat(path).st_mode & 0o7777 | 0o700)
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        p = os.path.join(path, name)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o700)
                _clean(p)
                os.rmdir(p)
            else:
                os.unlink(p)
        except OSError:
            pass


def _leftovers(dirs):
    out = []
    for d in dirs:
        try:
            out += [os.path.join(d, n) for n in os.listdir(d)]
        except FileNotFoundError:
            pass
        except OSError as e:
            out.append(f"{d} ({e.strerror})")
    return out


def _clean_ipc():
    """Remove every System V shared memory segment, semaphore set and message queue of this IPC
    namespace (a reused container's: they would outlive the run that made them). Left over: count."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        return 0
    left = 0
    for kind, rm in (("shm", lambda i: libc.shmctl(i, 0, None)), ("sem", lambda i: libc.semctl(i, 0, 0)),
                     ("msg", lambda i: libc.msgctl(i, 0, None))):  # fmt: skip  # IPC_RMID = 0
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                ids = [int(line.split()[1]) for line in f.readlines()[1:] if line.strip()]
        except (OSError, ValueError, IndexError):
            continue
        for i in ids:
            if rm(i) != 0:
                left += 1
    return left


def _descendants():
    """Pids of every live descendant of this process (from /proc's parent links)."""
    parent = {}
    for n in os.listdir("/proc"):
        if n.isdigit():
            try:
                with open(f"/proc/{n}/stat", "rb") as f:
                    stat = f.read()
                parent[int(n)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    me, out = os.getpid(), []
    for pid in parent:
        p, seen = parent.get(pid), 0
        while p and p != me and seen < 4096:
            p, seen = parent.get(p), seen + 1
        if p == me:
            out.append(pid)
    return out


def _kill_descendants():
    """Kill every descendant (detached ones come back to us as their subreaper); count them."""
    seen = set()
    for _ in range(100):
        pids = _descendants()
        if not pids:
            break
        for pid in pids:
            seen.add(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.001)
            except ChildProcessError:
                break
    return len(seen)


def _subreaper():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _oom_kills():
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


def _read_job():
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line:
        raise EOFError
    return json.loads(stdin.read(int(line)))


def _rlimits(limits):
    out = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256)]
    if limits.get("memory_mb"):
        out.append((resource.RLIMIT_AS, int(limits["memory_mb"]) << 20))
    if limits.get("nproc"):
        out.append((resource.RLIMIT_NPROC, int(limits["nproc"])))
    if limits.get("file_mb"):
        out.append((resource.RLIMIT_FSIZE, int(limits["file_mb"]) << 20))
    if limits.get("timeout"):
        out.append((resource.RLIMIT_CPU, int(limits["timeout"]) + 2))
    return out


def _python_script(command):
    """``[python3, flags..., script, args...]`` -> (script, args, safe_path), else None."""
    if not command or os.path.basename(command[0]) not in ("python3", "python"):
        return None
    i = 1
    while i < len(command) and command[i] in _PY_FLAGS:
        i += 1
    if i >= len(command) or command[i].startswith("-"):
        return None
    safe_path = "-I" in command[1:i] or "-P" in command[1:i]
    return command[i], command[i + 1 :], safe_path


def _child_setup(workdir, rl, out_w, err_w):
    os.setsid()
    os.chdir(workdir)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 1 << 16)
    for res, val in rl:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (val, val))


def _spawn(command, workdir, rl):
    """Start the command; return (pid, stdout fd, stderr fd)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    script = _python_script(command)
    if script is None:
        exe = command[0] if "/" in command[0] else _which(command[0])
        if exe is None:
            raise OSError(f"command not found: {command[0]}")
    pid = os.fork()
    if pid == 0:
        code = 127
        try:
            _child_setup(workdir, rl, out_w, err_w)
            if script is None:
                os.execve(exe, command, _ENV)
            code = _run_script(*script)
        except BaseException:
            pass
        os._exit(code)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def _which(name):
    for d in _ENV["PATH"].split(":"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def _run_script(path, args, safe_path):
    """Run a Python file in this (forked) interpreter, as ``python3 -S path args`` would."""
    import runpy
    import traceback

    os.environ.clear()
    os.environ.update(_ENV)
    sys.argv = [path, *args]
    if not safe_path:  # like the interpreter: the script's directory comes first on the path
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    sys.modules.pop("__main__", None)
    code = 0
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        c = e.code
        if c is None:
            code = 0
        elif isinstance(c, int):
            code = c & 0xFF
        else:
            print(c, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    return code


def _wait(pid, timeout):
    """Exit status (negative: killed by that signal) or None if still running after `timeout`."""
    until = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() >= until:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def run_job(job):
    """Run one job; return the answer dict."""
    isolated = bool(job.get("isolated"))
    limits = job.get("limits", {})
    stragglers_before = _kill_others() if isolated else 0
    clean = job.get("clean", [])
    for d in clean:
        _clean(d)
    ipc_left = _clean_ipc() if job.get("clean_ipc") else 0
    left = _leftovers(clean)
    if left or ipc_left:
        what = ", ".join(left[:5]) + (f" and {ipc_left} System V IPC objects" if ipc_left else "")
        return {"exit_code": None, "unclean": True, "error": f"the sandbox could not be cleaned: {what}"}
    workdir = job["workdir"]
    os.makedirs(workdir, exist_ok=True)
    for rel, b64 in job.get("files", {}).items():
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(b64))
    cap = int(limits.get("output_bytes", 65536))
    timeout = float(limits.get("timeout", 10.0))
    oom0 = _oom_kills()
    start = time.monotonic()
    deadline = start + timeout
    try:
        pid, out_fd, err_fd = _spawn(job["command"], workdir, _rlimits(limits))
    except OSError as e:
        msg = base64.b64encode(f"cannot start command: {e}\n".encode()).decode()
        return {"exit_code": 127, "stdout": "", "stderr": msg, "duration": 0.0}
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    open_fds = set(bufs)
    timed_out = truncated = exited = False
    code = None

    def read(fd):
        nonlocal truncated
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            open_fds.discard(fd)
            return
        room = cap - len(bufs[fd])
        if room > 0:
            bufs[fd] += chunk[:room]
        if len(chunk) > room:
            truncated = True

    while not truncated:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        watch = list(open_fds) + ([pidfd] if pidfd is not None else [])
        wait = deadline - now if pidfd is not None else min(0.02, deadline - now)
        ready = select.select(watch, [], [], wait)[0] if watch else time.sleep(wait) or []
        for fd in ready:
            if fd == pidfd:
                exited = True
            else:
                read(fd)
        if pidfd is None:
            code = _wait(pid, 0)
            exited = code is not None
        if exited:  # collect what is already in the pipes (children may hold them open), then stop
            drain_until = time.monotonic() + 0.1
            while open_fds and not truncated and time.monotonic() < drain_until:
                ready = select.select(list(open_fds), [], [], 0.01)[0]
                if not ready:
                    break
                for fd in ready:
                    read(fd)
            break
    duration = time.monotonic() - start
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    if code is None:
        code = _wait(pid, 5.0)
    stragglers = _kill_others() if isolated else _kill_descendants()
    for fd in (out_fd, err_fd, pidfd):
        if fd is not None:
            os.close(fd)
    oom = _oom_kills() > oom0 or b"MemoryError" in bytes(bufs[err_fd][-4096:])
    return {
        "exit_code": code,
        "timed_out": timed_out,
        "oom": oom,
        "duration": duration,
        "output_truncated": truncated,
        "stragglers": stragglers,
        "stragglers_before": stragglers_before,
        "stdout": base64.b64encode(bytes(bufs[out_fd])).decode(),
        "stderr": base64.b64encode(bytes(bufs[err_fd])).decode(),
    }


def _answer(result):
    out = sys.stdout.buffer
    out.write(MARK + json.dumps(result).encode() + b"\n")
    out.flush()


def main():
    """One job from stdin, one answer on stdout."""
    _nondumpable()
    _subreaper()
    _answer(run_job(_read_job()))


def serve():
    """Container PID 1: answer jobs from stdin until EOF.

    The kernel shields a PID namespace's init from signals sent inside it, so the
    sandboxed code cannot kill this process.
    """
    _nondumpable()
    while True:
        try:
            job = _read_job()
        except (ValueError, EOFError):
            return
        try:
            result = run_job(job)
        except Exception as e:
            result = {"exit_code": None, "error": f"supervisor error: {type(e).__name__}: {e}"}
        _kill_others()
        _answer(result)
        if result.get("unclean"):
            return  # PID 1 exits: the container stops and is replaced


if __name__ == "__main__":
    serve() if sys.argv[1:] == ["--serve"] else main()
