"""Verifications per second and per-verification latency of every sandbox backend on CodeRepair.

One verification = run a function's hidden tests on one candidate in a sandbox and
parse the report (`lpca_envs.code.verify.test_code` with the verdict cache off):
what the env does when agent A answers. Candidates cycle through CodeRepair's
references and shipped buggy variants (all levels), so about half pass.

Backends: ``docker-warm`` (pool of containers kept running, one job each way over
the attached supervisor), ``docker-cold`` (a new container per verification),
``bwrap`` (a new namespace per verification) and ``process`` (no isolation).
Latency is measured with one client, throughput with ``--clients`` concurrent
clients (default: one per core). Overhead = latency minus the time the test
harness itself ran inside the sandbox. Targets: warm docker overhead <= 150 ms
per verification, >= 10 verifications/s on 2 cores.

    python benchmarks/bench_sandbox.py                       # every available backend
    python benchmarks/bench_sandbox.py --backends docker-warm --seconds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass

from lpca_envs.code.repair import CodeRepair
from lpca_envs.code.sandbox import open_sandbox, unavailable_reason
from lpca_envs.code.verify import TestSuite, test_code

BACKENDS = ("docker-warm", "docker-cold", "bwrap", "process")


@dataclass
class Config:
    backends: tuple[str, ...] = BACKENDS
    """Which backends to measure (unavailable ones are reported and skipped)."""
    latency_runs: int = 60
    """Sequential verifications for the latency percentiles (after 5 warm-up runs)."""
    seconds: float = 10.0
    """Wall time of the throughput phase per backend."""
    clients: int = os.cpu_count() or 2
    """Concurrent clients in the throughput phase (and warm containers in the docker pool)."""


def workload() -> list[tuple[TestSuite, str]]:
    """(suite, candidate) pairs: each problem's reference, then its variants, interleaved."""
    out = []
    for p in CodeRepair().problems().values():
        out.append((p.suite, p.reference))
        out.extend((p.suite, p.buggy(v)) for v in p.variants[:3])
    return out


def open_backend(name: str, clients: int):
    if name == "docker-warm":
        sb = open_sandbox("docker", pool_size=clients)
        sb.warm_up()
        return sb
    if name == "docker-cold":
        return open_sandbox("docker", pool_size=0)
    return open_sandbox(name)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def measure(name: str, cfg: Config, jobs: list[tuple[TestSuite, str]]) -> dict:
    sb = open_backend(name, cfg.clients)
    try:
        for suite, code in jobs[:5]:  # warm-up: image, pool, page cache
            test_code(suite, code, sb, use_cache=False)
        lat, over = [], []
        for i in range(cfg.latency_runs):
            suite, code = jobs[i % len(jobs)]
            t0 = time.perf_counter()
            rep = test_code(suite, code, sb, use_cache=False)
            dt = time.perf_counter() - t0
            lat.append(dt)
            inside = rep.sandbox.duration if rep.sandbox is not None else 0.0
            over.append(dt - inside)
        done = [0]
        lock = threading.Lock()
        stop = time.perf_counter() + cfg.seconds

        def client(k: int) -> None:
            i = k * 7919
            while time.perf_counter() < stop:
                suite, code = jobs[i % len(jobs)]
                test_code(suite, code, sb, use_cache=False)
                i += 1
                with lock:
                    done[0] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(cfg.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = done[0] / (time.perf_counter() - t0)
    finally:
        sb.close()
    return {
        "p50": percentile(lat, 0.5),
        "p95": percentile(lat, 0.95),
        "overhead_p50": percentile(over, 0.5),
        "overhead_mean": statistics.fmean(over),
        "rate": rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=list(Config.backends), choices=BACKENDS)
    p.add_argument("--latency-runs", type=int, default=Config.latency_runs)
    p.add_argument("--seconds", type=float, default=Config.seconds)
    p.add_argument("--clients", type=int, default=Config.clients)
    a = p.parse_args()
    cfg = Config(tuple(a.backends), a.latency_runs, a.seconds, a.clients)
    jobs = workload()
    print(
        f"# bench_sandbox: CodeRepair, {len(jobs)} candidates cycled, {cfg.latency_runs} sequential runs, "
        f"{cfg.seconds:g}s x {cfg.clients} clients; python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores\n"
    )
    print("| backend | p50 latency | p95 latency | overhead p50 | verifications/s | targets |")
    print("|---|---:|---:|---:|---:|---|")
    for name in cfg.backends:
        why = unavailable_reason(name.split("-")[0])
        if why:
            print(f"| {name} | - | - | - | - | unavailable: {why} |")
            continue
        m = measure(name, cfg, jobs)
        target = ""
        if name == "docker-warm":
            ok = m["overhead_p50"] <= 0.150 and m["rate"] >= 10
            target = "ok" if ok else "MISSED (<= 150 ms overhead, >= 10/s)"
        print(
            f"| {name} | {m['p50'] * 1e3:.0f} ms | {m['p95'] * 1e3:.0f} ms "
            f"| {m['overhead_p50'] * 1e3:.0f} ms | {m['rate']:.1f} | {target} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
