"""Two hosts: `lpca serve` in one network namespace, a client in another, joined by a veth pair.

Needs root and iproute2 (`apt-get install iproute2`); skips with the reason otherwise.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lpca_models
from lpca_protocols import wire

ROOT = Path(__file__).resolve().parents[1]

CLIENT = r"""
import json, sys, numpy as np
from lpca_protocols import wire
host, port, model_fp, tok_fp, wq, hidden_path, out_path = sys.argv[1:]
ep = wire.Endpoint(bytes.fromhex(model_fp), bytes.fromhex(tok_fp), wq, "host-b")
with wire.BlockingClient(ep, host, int(port), timeout=30) as c:
    r = c.resume(np.load(hidden_path), 2, codec="q8_0", want=wire.WANT_LOGITS | wire.WANT_TOP, top_k=3)
np.save(out_path, r.logits)
print(json.dumps({"top": r.top_ids.tolist(), "bits": r.payload_bits, "sent": r.request_bytes}))
"""


def sh(*args):
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_namespaces():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed (apt-get install iproute2)")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    tag = f"{os.getpid() % 100000}"
    a, b = f"lpca{tag}a", f"lpca{tag}b"
    net = 10 + os.getpid() % 200
    ip_a, ip_b = f"10.231.{net}.1", f"10.231.{net}.2"
    try:
        sh("netns", "add", a)
        sh("netns", "add", b)
        sh("link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b")
        sh("link", "set", f"v{tag}a", "netns", a)
        sh("link", "set", f"v{tag}b", "netns", b)
        sh("-n", a, "addr", "add", f"{ip_a}/24", "dev", f"v{tag}a")
        sh("-n", b, "addr", "add", f"{ip_b}/24", "dev", f"v{tag}b")
        for ns, dev in ((a, f"v{tag}a"), (b, f"v{tag}b")):
            sh("-n", ns, "link", "set", dev, "up")
            sh("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip() or exc}")
    yield a, b, ip_a
    for ns in (a, b):  # deleting a namespace removes its end of the veth pair, and so the pair
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_packet_crosses_between_two_namespaces(two_namespaces, tmp_path):
    ns_a, ns_b, ip_a = two_namespaces
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ready = tmp_path / "ready"
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns_a,
            sys.executable,
            "-m",
            "lpca_protocols.wire.serve_cli",
            "--model",
            "tiny-random-llama",
            "--host",
            ip_a,
            "--port",
            "0",
            "--name",
            "host-a",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 90
        while not ready.exists():
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"server did not start: {server.communicate(timeout=5)}")
            time.sleep(0.1)
        port = int(ready.read_text().split()[1])

        b = lpca_models.load("tiny-random-llama")
        ids = b.tokenize("a packet between two hosts", add_special_tokens=True)
        ref = b.forward(ids, capture=[2], logits="last")
        np.save(tmp_path / "hidden.npy", ref.hidden[2])
        ep = wire.Endpoint.of(b, "host-b")
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns_b,
                sys.executable,
                "-c",
                CLIENT,
                ip_a,
                str(port),
                ep.model_fingerprint.hex(),
                ep.tokenizer_fingerprint.hex(),
                ep.weight_quant,
                str(tmp_path / "hidden.npy"),
                str(tmp_path / "logits.npy"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        logits = np.load(tmp_path / "logits.npy")
        local = wire.LoopbackClient(wire.ResumeService(b)).resume(ref.hidden[2], 2, codec="q8_0", top_k=3)
        assert np.array_equal(logits, local.logits)  # same bytes in, same model, same answer
        assert got["top"] == local.top_ids.tolist()
        assert got["bits"] == ref.hidden[2].size // 32 * 34 * 8
        # the server is not reachable from the root namespace: the packet really crossed the veth
        with (
            pytest.raises(wire.ConnectionClosedError),
            wire.BlockingClient(ep, ip_a, port, connect_timeout=0.5) as c,
        ):
            c.ping()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
