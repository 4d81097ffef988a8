"""What one run can learn or leave behind (issue 16): the caller's environment, host name and
the supervisor's memory stay out of reach, a run writes at most `Limits.disk_mb` in all, a
reused docker container starts every run from a clean state, nothing a run detaches survives
it (the process backend included), and a run that kills its supervisor still gets a typed
verdict with an int exit code.
"""

import os
import uuid

import pytest
from procs import gone, pids_with

from lpca_envs.code.sandbox import Limits, Outcome, open_sandbox, unavailable_reason

SECRET_VAR = "LPCA_TEST_SECRET_TOKEN"


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def sandbox(request):
    kind = request.param
    why = unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} sandbox unavailable here: {why}")
    secret = uuid.uuid4().hex
    old = os.environ.get(SECRET_VAR)
    os.environ[SECRET_VAR] = secret  # in the caller's environment while every sandbox starts
    sb = open_sandbox(kind, **({"pool_size": 1} if kind == "docker" else {}))
    sb.secret = secret
    yield sb
    sb.close()
    if old is None:
        os.environ.pop(SECRET_VAR, None)
    else:
        os.environ[SECRET_VAR] = old


PROBE = r"""
import os, socket
secret = os.environ.get("SECRET", "")
print("host", socket.gethostname())
leaks = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for what in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if b"LPCA_TEST_SECRET_TOKEN" in data or (secret and secret.encode() in data):
            leaks.append(f"{pid}/{what}")
    try:
        with open(f"/proc/{pid}/mem", "rb") as f:
            if pid != str(os.getpid()):
                leaks.append(f"{pid}/mem opened")
    except OSError:
        pass
print("leaks", leaks)
print("env", sorted(os.environ))
"""


def test_caller_environment_hostname_and_supervisor_memory_are_unreadable(sandbox):
    r = sandbox.run({"probe.py": PROBE}, ["python3", "probe.py"])
    assert r.ok, r
    assert sandbox.secret not in r.stdout + r.stderr
    assert "leaks []" in r.stdout, r.stdout
    assert "host sandbox" in r.stdout and f"host {os.uname().nodename}\n" not in r.stdout, r.stdout
    assert SECRET_VAR not in r.stdout


FILL = r"""
import errno, os, sys
total = 0
chunk = b"x" * (256 * 1024)
budget = int(sys.argv[1])
places = ("/work", "/tmp", "/dev/shm", "/dev", "/var/tmp", "/run", "/home", "/")
dirs = [d for d in places if os.path.isdir(d)]
for d in dirs:
    for i in range(10_000):
        if total >= budget:
            break
        try:
            with open(os.path.join(d, f"fill{i}"), "wb") as f:
                for _ in range(8):  # 2 MiB per file, under the per-file cap
                    f.write(chunk)
                    f.flush()
                    total += len(chunk)
        except OSError:
            break
print("wrote", total)
"""


def test_a_run_writes_at_most_disk_mb_in_all(sandbox):
    disk_mb = 8
    r = sandbox.run(
        {"fill.py": FILL}, ["python3", "fill.py", str(4 * disk_mb << 20)], Limits(disk_mb=disk_mb, timeout=20)
    )
    assert r.exit_code == 0, r
    wrote = int(r.stdout.split()[-1])
    # What the script counted includes its last partial chunk per place (256 KiB each).
    assert wrote <= (disk_mb << 20) + 8 * 256 * 1024, f"wrote {wrote} bytes with disk_mb={disk_mb}"
    assert wrote >= (disk_mb << 20) // 2, wrote  # the places really are writable up to the cap


LEAVE = r"""
import ctypes, os, sys
token = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
places = []
for root, dirs, files in os.walk("/", topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys")]
    if os.access(root, os.W_OK):
        try:
            with open(os.path.join(root, f".{token}"), "w") as f:
                f.write(token)
            places.append(root)
        except OSError:
            pass
# a directory the next run's cleaner cannot enter, unless it restores the permissions
os.makedirs(f"/tmp/locked-{token}/inner")
open(f"/tmp/locked-{token}/inner/f", "w").write(token)
os.chmod(f"/tmp/locked-{token}/inner", 0)
os.chmod(f"/tmp/locked-{token}", 0)
shm = libc.shmget(0x4C504341, 4096, 0o1000 | 0o600)  # IPC_CREAT: a System V segment
print("places", places, "shm", shm)
"""

FIND = r"""
import os, sys
token = sys.argv[1]
found = []
for root, dirs, files in os.walk("/", topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys")]
    found += [os.path.join(root, n) for n in files + dirs if token in n]
with open("/proc/sysvipc/shm") as f:
    segments = f.read().splitlines()[1:]
print("found", found, "segments", len(segments))
"""


def test_every_run_starts_from_a_clean_state(sandbox):
    token = f"leak{uuid.uuid4().hex[:12]}"
    first = sandbox.run({"leave.py": LEAVE}, ["python3", "leave.py", token])
    assert first.ok, first
    assert "/tmp" in first.stdout and "/work" in first.stdout and "/dev/shm" in first.stdout, first.stdout
    second = sandbox.run({"find.py": FIND}, ["python3", "find.py", token])
    assert second.ok, second
    assert "found [] segments 0" in second.stdout, second.stdout


def test_killing_the_supervisor_is_ignored_and_the_run_ends_normally(sandbox):
    body = "import os\nfor pid in (os.getppid(), 1):\n    os.kill(pid, 9)\nprint('still here')"
    r = sandbox.run({}, ["python3", "-c", body])
    assert r.exit_code == 0 and r.stdout == "still here\n" and r.outcome is Outcome.OK, r


# -- the process backend: no boundary, but nothing outlives a run -----------------------------------
DETACH = """
import os, subprocess, sys
marker = sys.argv[1]
subprocess.Popen(["sleep", marker], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", marker])
    os._exit(0)
print("spawned")
"""


def test_process_backend_kills_detached_descendants():
    marker = f"1002.{uuid.uuid4().int % 10**9}"
    with open_sandbox("process") as sb:
        r = sb.run({"detach.py": DETACH}, ["python3", "detach.py", marker], Limits(timeout=5))
    try:
        assert r.ok and "spawned" in r.stdout, r
        assert r.stragglers >= 2, r
        assert gone(marker), "a detached process outlived the run"
    finally:
        for pid in pids_with(marker):
            os.kill(pid, 9)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root caller drops runs to a uid of their own")
def test_process_backend_run_that_kills_its_supervisor_gets_a_typed_verdict_and_leaves_nothing():
    marker = f"1003.{uuid.uuid4().int % 10**9}"
    body = DETACH + "import signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
    with open_sandbox("process") as sb:
        r = sb.run({"detach.py": body}, ["python3", "detach.py", marker], Limits(timeout=5))
    try:
        assert isinstance(r.exit_code, int) and r.exit_code == -9, r
        assert r.outcome is Outcome.SANDBOX_LOST and "supervisor" in r.error and not r.ok, r
        assert gone(marker), "a process of the run outlived its killed supervisor"
    finally:
        for pid in pids_with(marker):
            os.kill(pid, 9)


def test_outcome_of_every_result_is_typed():
    cases = [
        (Outcome.OK, ["python3", "-c", "pass"], Limits()),
        (Outcome.FAILED, ["python3", "-c", "raise SystemExit(3)"], Limits()),
        (Outcome.FAILED, ["no-such-command-lpca"], Limits()),  # exit 127, like a shell
        (Outcome.KILLED, ["python3", "-c", "import os; os.kill(os.getpid(), 15)"], Limits()),
        (Outcome.TIMEOUT, ["python3", "-c", "while True: pass"], Limits(timeout=0.5)),
        (Outcome.OUTPUT_CAP, ["python3", "-c", "print('y' * 5000)"], Limits(output_bytes=100)),
    ]
    with open_sandbox("process") as sb:
        for want, cmd, limits in cases:
            r = sb.run({}, cmd, limits)
            assert r.outcome is want and isinstance(r.exit_code, int), (want, r)
