"""What an accepted RESUME of at most 64 KiB can cost a receiver to admit and decode (issue 16).

For each receiver width (the tiny test model's d=64, SmolLM2's d=576, Qwen2.5-Coder-0.5B's d=896),
the script searches over every built-in codec and its parameters (rotq / rotq-tcq at 1..8 bits and
every rotation kind, the index codec's sizes, the float and ggml codecs) and over the number of
positions T (1, and the largest T whose packet fits in the size cap), builds the packet, and
measures `ResumeService.admit` + decoding the hidden tensor: CPU seconds (`time.process_time`,
all threads, best of `repeats`) and peak traced memory (`tracemalloc`, which numpy reports to).
Packets admission refuses are counted, not timed. The service is warmed first, as `lpca serve`
does (`ResumeService.warm`); the one-time table costs are reported separately.

Only admission and decoding are measured (the model run is budgeted separately by positions and
position-blocks), so the receivers of d=576 and d=896 are shape-only stand-ins for those models:
`info` with their sizes and no weights.

    python benchmarks/bench_admission.py            # the table and the worst case
    python benchmarks/bench_admission.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

import lpca_models
from lpca_models import ModelInfo
from lpca_protocols import codecs, wire
from lpca_protocols.wire.errors import WireError


@dataclass
class Config:
    """What to search."""

    #: The packet size cap of the target (bytes).
    max_bytes: int = 64 << 10
    #: Timing repeats per packet (the best is kept: scheduling noise only adds).
    repeats: int = 3
    #: Receiver widths besides the tiny model's (shape-only stand-ins, see the module docstring).
    widths: tuple[int, ...] = (576, 896)


class ShapeOnly:
    """A receiver with a model's sizes and no weights: admission and decoding only read `info`."""

    def __init__(self, d: int, layers: int = 24, vocab: int = 49152):
        self.info = ModelInfo(f"d{d}", "none", "none", layers, d, vocab, "float32", "cd" * 32, False)
        self.path = None

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(text)]


def codec_specs(d: int) -> list[str]:
    out = ["fp32", "fp16", "bf16", "q8_0", "q4_0"]
    kinds = ["auto", "dense"] + (["hadamard"] if d & (d - 1) == 0 else [])
    for name in ("rotq", "rotq-tcq"):
        out += [f"{name}:bits={b},seed=0,rotation={k}" for b in range(1, 9) for k in kinds]
    out += [f"index:size={s}" for s in (2, 256, 65537, 1 << 24)]
    return out


def packet(service: wire.ResumeService, spec: str, t: int) -> bytes | None:
    """A RESUME of T x d states in codec `spec` (None if the codec cannot encode them)."""
    d = service.endpoint.hidden_size
    c = codecs.get(spec)
    rng = np.random.default_rng(t)
    h = (
        rng.integers(0, c.size, (t, d)).astype(np.float32)
        if spec.startswith("index")
        else rng.standard_normal((t, d))
    )
    s = wire.Sender(service.endpoint, "bench")
    return s.packet(wire.Kind.RESUME, {"hidden": h.astype(np.float32)}, codec=c, layer=1)[1]


def largest_t(service: wire.ResumeService, spec: str, cap: int) -> int:
    lo, hi = 1, 4096
    if len(packet(service, spec, 1)) > cap:
        return 0
    while lo < hi:  # the largest T whose packet fits in `cap`
        mid = (lo + hi + 1) // 2
        if len(packet(service, spec, mid)) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return lo


def measure(service: wire.ResumeService, data: bytes, repeats: int) -> tuple[float, int] | None:
    best_cpu, peak = float("inf"), 0
    for _ in range(repeats):
        # a fresh replay state per repeat: the same packet is admitted each time
        service.receiver.guard = wire.ReplayGuard()
        tracemalloc.start()
        t0 = time.process_time()
        try:
            p = service.admit(data)
            service.receiver.array(p, "hidden")
        except WireError:
            tracemalloc.stop()
            return None
        cpu = time.process_time() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        best_cpu = min(best_cpu, cpu)
    return best_cpu, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()
    cfg = Config()
    receivers = [("tiny-random-llama d=64", lpca_models.load("tiny-random-llama"))]
    receivers += [(f"shape-only d={d}", ShapeOnly(d)) for d in cfg.widths]
    rows, refused = [], 0
    print("| receiver | codec | T | packet bytes | CPU ms | peak MB |\n|---|---|---:|---:|---:|---:|")
    for label, backend in receivers:
        service = wire.ResumeService(backend, host="bench")
        t0 = time.process_time()
        service.warm()
        warm = time.process_time() - t0
        print(f"| {label} | (warm: every rotation and alphabet, once) | | | {warm * 1e3:.0f} | |")
        for spec in codec_specs(service.endpoint.hidden_size):
            for t in sorted({1, largest_t(service, spec, cfg.max_bytes)} - {0}):
                data = packet(service, spec, t)
                got = measure(service, data, cfg.repeats)
                if got is None:
                    refused += 1
                    continue
                cpu, peak = got
                rows.append(
                    {"receiver": label, "codec": spec, "T": t, "bytes": len(data), "cpu_s": cpu, "peak": peak}
                )
    rows.sort(key=lambda r: -r["cpu_s"])
    for r in rows[:12]:
        print(
            f"| {r['receiver']} | {r['codec']} | {r['T']} | {r['bytes']:,} | {r['cpu_s'] * 1e3:.1f} | "
            f"{r['peak'] / 1e6:.1f} |"
        )
    worst_cpu = rows[0]
    worst_mem = max(rows, key=lambda r: r["peak"])
    print(
        f"\n{len(rows)} accepted packets <= {cfg.max_bytes} bytes measured ({refused} refused by admission). "
        f"Worst CPU: {worst_cpu['cpu_s'] * 1e3:.1f} ms ({worst_cpu['codec']}, T={worst_cpu['T']}, "
        f"{worst_cpu['receiver']}); worst peak memory: {worst_mem['peak'] / 1e6:.1f} MB "
        f"({worst_mem['codec']}, T={worst_mem['T']}, {worst_mem['receiver']}). Target: 50 ms and 64 MB."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
