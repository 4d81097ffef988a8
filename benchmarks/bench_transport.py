"""Wire protocol and transport: packet sizes and (de)serialization cost, round trips, throughput.

1. Packets for one SmolLM2 hidden state (576 floats): bytes on the wire per codec, and
   the time to build a packet (codec encode + framing + CRC32C) and to admit one
   (parse + checks + codec decode). The public reference run moved ~3.8 KB fp16 /
   ~1.9 KB q8_0 packets with ~0.6 ms encode and ~1.1 ms decode.
2. Round trips of 4 KB PING packets (parse, checksum, replay check, echo; no model):
   in-process loopback, TCP with client and server in one event loop, and TCP with
   the server in another process. p50 / p99 of sequential requests, then the
   throughput with `depth` requests in flight on one connection. Target: TCP p50 <= 200 us.
   (The reference's network round trip was ~1.2 s.)
3. A RESUME with a real model over TCP (tiny-random-llama, 8 positions): round trip
   minus the server's reported compute time = what the protocol costs around the model.

    python benchmarks/bench_transport.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpca_protocols import codecs, wire
from lpca_protocols.wire import packet as pk


@dataclass
class Config:
    payload_kb: int = 4
    """PING payload size in KiB."""
    requests: int = 3000
    """Sequential round trips per transport (after 200 warm-up requests)."""
    depth: int = 32
    """Requests in flight for the throughput figure."""
    pipelined: int = 6000
    """Requests sent in the throughput figure."""


EP = wire.Endpoint(b"M" * 32, b"T" * 32, "float32", "bench-client")

ECHO_SERVER = r"""
import asyncio, sys
from lpca_protocols import wire
async def main():
    server = await wire.WireServer(wire.ResumeService(None, host="echo"), "127.0.0.1", 0).start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.close(grace=0.5)
asyncio.run(main())
"""


def pct(samples_ns: list[int]) -> tuple[float, float, float]:
    a = np.array(samples_ns) / 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def best_us(fn, number: int = 2000, repeat: int = 5) -> float:
    import timeit

    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def packets() -> list[tuple[str, int, float, float]]:
    """(codec, packet bytes, build us, admit us) for one 576-float hidden state."""
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((1, 576)) * 3).astype(np.float32)
    out = []
    for spec in ("fp32", "fp16", "q8_0", "q4_0", "rotq:bits=4", "rotq:bits=3"):
        c = codecs.get(spec)
        sender = wire.Sender(EP, "server")
        sections = (wire.ResumeRequest().section(),)
        _, data = sender.packet(wire.Kind.RESUME, {"hidden": h}, codec=c, layer=24, sections=sections)
        build = best_us(
            lambda c=c, s=sender, sec=sections: s.packet(
                wire.Kind.RESUME, {"hidden": h}, codec=c, layer=24, sections=sec
            )
        )
        rx = wire.Receiver(EP, guard=wire.ReplayGuard(max_age_s=None))

        def admit(data=data, rx=rx, c=c):
            p = pk.decode(data)
            rx.check_compatible(p)
            rx.decode_tensor(p.tensors[0], c)

        out.append((spec, len(data), build, best_us(admit)))
    return out


async def round_trips(client, payload: bytes, cfg: Config) -> tuple[list[int], float]:
    for _ in range(200):
        await client.ping(payload)
    lat = []
    for _ in range(cfg.requests):
        t = time.perf_counter_ns()
        await client.ping(payload)
        lat.append(time.perf_counter_ns() - t)
    sem = asyncio.Semaphore(cfg.depth)

    async def one():
        async with sem:
            await client.ping(payload)

    t = time.perf_counter()
    await asyncio.gather(*[one() for _ in range(cfg.pipelined)])
    return lat, cfg.pipelined / (time.perf_counter() - t)


async def tcp_same_loop(cfg: Config, payload: bytes):
    server = await wire.WireServer(wire.ResumeService(None, host="echo"), "127.0.0.1", 0).start()
    async with wire.WireClient(EP, "127.0.0.1", server.port) as c:
        r = await round_trips(c, payload, cfg)
    await server.close()
    return r


async def tcp_other_process(cfg: Config, payload: bytes):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        port = int(proc.stdout.readline())
        async with wire.WireClient(EP, "127.0.0.1", port) as c:
            return await round_trips(c, payload, cfg)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


async def resume_overhead(n: int = 300) -> tuple[float, float, float, int]:
    import lpca_models

    b = lpca_models.load("tiny-random-llama")
    ids = b.tokenize("one two three four five six seven", add_special_tokens=True)[:8]
    h = b.forward(ids, capture=[2], logits="none").hidden[2]
    server = await wire.WireServer(wire.ResumeService(b), "127.0.0.1", 0).start()
    total, compute = [], []
    async with wire.WireClient.for_backend(b, "127.0.0.1", server.port) as c:
        for i in range(n + 20):
            t = time.perf_counter_ns()
            r = await c.resume(h, 2, codec="q8_0")
            if i >= 20:
                total.append(time.perf_counter_ns() - t)
                compute.append(r.compute_ns)
    await server.close()
    over = np.array(total) - np.array(compute)
    return (
        float(np.median(total)) / 1e3,
        float(np.median(compute)) / 1e3,
        float(np.median(over)) / 1e3,
        r.request_bytes,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=Config.requests)
    args = ap.parse_args()
    cfg = Config(requests=args.requests)
    payload = os.urandom(cfg.payload_kb * 1024)

    print("## One 576-float hidden state per packet\n")
    print("| codec | packet bytes | build packet us | admit + decode us |")
    print("|---|---:|---:|---:|")
    for spec, n, build, admit in packets():
        print(f"| {spec} | {n} | {build:.1f} | {admit:.1f} |")

    sender = wire.Sender(EP)
    ping = sender.packet(wire.Kind.PING, {"echo": np.frombuffer(payload, np.float32)})[1]
    print(
        f"\nPING packet of {len(ping)} bytes: encode {best_us(lambda: pk.encode(pk.decode(ping))):.1f} us "
        f"(decode + re-encode), decode {best_us(lambda: pk.decode(ping)):.1f} us\n"
    )

    print(
        f"## Round trips of {cfg.payload_kb} KiB PING packets ({cfg.requests} sequential; "
        f"throughput with {cfg.depth} in flight)\n"
    )
    print("| transport | p50 us | p99 us | mean us | packets/s pipelined |")
    print("|---|---:|---:|---:|---:|")
    svc = wire.ResumeService(None, host="echo")
    lb = wire.LoopbackClient(svc, EP)
    lat = []
    for i in range(cfg.requests + 200):
        t = time.perf_counter_ns()
        lb.ping(payload)
        if i >= 200:
            lat.append(time.perf_counter_ns() - t)
    p50, p99, mean = pct(lat)
    print(f"| loopback (in-process, no socket) | {p50:.0f} | {p99:.0f} | {mean:.0f} | {1e6 / mean:,.0f} |")
    for label, fn in (
        ("TCP 127.0.0.1, client and server in one event loop", tcp_same_loop),
        ("TCP 127.0.0.1, server in another process", tcp_other_process),
    ):
        lat, tput = asyncio.run(fn(cfg, payload))
        p50, p99, mean = pct(lat)
        print(f"| {label} | {p50:.0f} | {p99:.0f} | {mean:.0f} | {tput:,.0f} |")

    total, compute, over, nbytes = asyncio.run(resume_overhead())
    print(
        f"\nRESUME over TCP, tiny-random-llama, 8 positions x 64 (q8_0, {nbytes} bytes): round trip "
        f"{total:.0f} us median, server compute {compute:.0f} us, protocol + transport {over:.0f} us"
    )


if __name__ == "__main__":
    main()
