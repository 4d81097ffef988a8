"""Hostile code in the docker and bwrap sandboxes: each attack is contained with a clear result,
the host is unaffected, and nothing (process or container) is left behind.

Every run carries a unique token in its command line; after each test no host process
shows it. The module's docker sandbox is closed at the end and must leave no container.
"""

import contextlib
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
from procs import gone

from lpca_envs.code.sandbox import Limits, open_sandbox, unavailable_reason


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def sandbox(request):
    kind = request.param
    why = unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} sandbox unavailable here: {why}")
    sb = open_sandbox(kind, **({"pool_size": 1} if kind == "docker" else {}))
    yield sb
    sb.close()
    if kind == "docker":
        assert sb.containers() == [], "a sandbox container outlived the suite"


def hostile(sb, body: str, timeout: float = 3.0, **limits):
    """Run `body` as ``python3 -c``; return (result, token). The token tags every process it makes."""
    token = f"lpca{uuid.uuid4().hex[:12]}"
    r = sb.run({}, ["python3", "-c", f"# {token}\n{body}"], Limits(timeout=timeout, **limits))
    return r, token


def test_fork_bomb(sandbox):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r, tok = hostile(sandbox, bomb)
    assert r.timed_out and r.duration < 6, r
    assert gone(tok), "fork bomb processes survived the run"
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_network_connections_fail_including_host_loopback(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept())

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    body = f"""
import socket
for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
        print("CONNECTED", host)
    except OSError as e:
        print("refused", host, type(e).__name__)
try:
    socket.getaddrinfo("pypi.org", 443)
    print("RESOLVED")
except OSError as e:
    print("no dns", type(e).__name__)
"""
    try:
        r, _tok = hostile(sandbox, body, timeout=10)
    finally:
        stop.set()
        t.join()
        server.close()
    assert r.exit_code == 0, r
    assert "CONNECTED" not in r.stdout and "RESOLVED" not in r.stdout, r.stdout
    assert r.stdout.count("refused") == 3 and "no dns" in r.stdout
    assert accepted == [], "the sandbox reached a server on the host's loopback"


def test_writing_outside_the_work_dir_fails(sandbox, tmp_path):
    host_target = tmp_path / "written_by_sandbox.txt"
    paths = ["/etc/lpca_probe", "/usr/lpca_probe", "/lpca_probe", "/root/lpca_probe", str(host_target)]
    body = f"""
for p in {paths!r} + ["inside.txt", "/tmp/scratch.txt"]:
    try:
        with open(p, "w") as f:
            f.write("x")
        print("WROTE", p)
    except OSError as e:
        print("denied", p, type(e).__name__)
"""
    r, _ = hostile(sandbox, body)
    assert r.exit_code == 0, r
    assert r.stdout.count("WROTE") == 2, r.stdout
    assert "WROTE inside.txt" in r.stdout and "WROTE /tmp/scratch.txt" in r.stdout
    assert not host_target.exists()
    for p in ("/lpca_probe", "/etc/lpca_probe", "/usr/lpca_probe", "/root/lpca_probe"):
        assert not os.path.exists(p)


def test_host_files_are_invisible(sandbox, tmp_path):
    secret = uuid.uuid4().hex
    host_file = tmp_path / "secret.txt"
    host_file.write_text(secret)
    tmp_file = f"/tmp/lpca-secret-{secret[:8]}"
    with open(tmp_file, "w") as f:
        f.write(secret)
    try:
        body = f"""
import os
for p in ({str(host_file)!r}, {tmp_file!r}, "/root/.bashrc", "/work/main/setup.cfg"):
    try:
        print("READ", p, open(p).read()[:40])
    except OSError as e:
        print("denied", p, type(e).__name__)
print(sorted(os.listdir("/tmp")))
"""
        r, _ = hostile(sandbox, body)
    finally:
        os.unlink(tmp_file)
    assert r.exit_code == 0, r
    assert secret not in r.stdout and "READ" not in r.stdout, r.stdout


def test_memory_blowup_is_stopped(sandbox):
    r, tok = hostile(sandbox, "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 1024 * 1024))")
    assert r.oom and r.exit_code != 0 and not r.timed_out, r
    r, _ = hostile(sandbox, "x = bytearray(8 * 1024 ** 3)")
    assert r.oom, r
    assert gone(tok)


def test_infinite_loop_is_killed_at_the_timeout(sandbox):
    r, tok = hostile(sandbox, "while True:\n    pass", timeout=1.5)
    assert r.timed_out and 1.4 < r.duration < 4, r
    assert gone(tok)


def test_a_gigabyte_of_stdout_is_cut_at_the_cap(sandbox):
    body = "import sys\nb = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(b)"
    start = time.monotonic()
    r, tok = hostile(sandbox, body, timeout=20, output_bytes=100_000)
    assert r.output_truncated and len(r.stdout) == 100_000 and not r.timed_out, r.summary()
    assert time.monotonic() - start < 10
    assert gone(tok)


def test_sleeping_past_the_timeout(sandbox):
    r, tok = hostile(sandbox, "import time\ntime.sleep(600)", timeout=1)
    assert r.timed_out and r.duration < 3, r
    assert gone(tok)


def test_background_process_does_not_outlive_the_run(sandbox):
    marker = f"1000.{uuid.uuid4().int % 10**9}"
    body = f"""
import os, subprocess
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{marker}"])
    os._exit(0)
print("spawned")
"""
    r, tok = hostile(sandbox, body)
    assert r.exit_code == 0 and "spawned" in r.stdout, r
    assert r.stragglers >= 2
    assert gone(marker) and gone(tok)


def test_killing_the_parent_or_everyone_is_contained(sandbox):
    canary_marker = f"1001.{uuid.uuid4().int % 10**9}"
    canary = subprocess.Popen(["sleep", canary_marker])
    try:
        body = f"""
import os
for pid in (os.getppid(), 1, {canary.pid}, {os.getpid()}):
    try:
        os.kill(pid, 9)
    except OSError as e:
        print("denied", pid, type(e).__name__)
try:
    os.kill(-1, 9)
except OSError as e:
    print("denied -1", type(e).__name__)
print("still here")
"""
        r, tok = hostile(sandbox, body)
        # The supervisor is the namespace's init (docker's PID 1, bwrap --as-pid-1): the kernel
        # ignores the signals, and the run ends normally.
        assert r.exit_code == 0 and "still here" in r.stdout, r
        assert canary.poll() is None, "the sandbox killed a host process"
        assert gone(tok)
        again = sandbox.run({}, ["python3", "-c", "print('usable')"])
        assert again.stdout == "usable\n"
    finally:
        canary.kill()
        canary.wait()
