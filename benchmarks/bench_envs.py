"""Episodes per second of every environment with scripted agents, on one core.

One episode = reset (task generation) + every step + the scripted agents'
actions + verification, i.e. `lpca_envs.play_episode`. Target: >= 20,000
episodes/s for every family at its easiest level (issue 18; it was 10,000).

    python benchmarks/bench_envs.py            # all envs, all levels
    python benchmarks/bench_envs.py --seconds 1 --kind silent
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from dataclasses import dataclass

import lpca_envs


@dataclass
class Config:
    seconds: float = 2.0
    """Wall time spent measuring each (env, level) cell, after a warm-up."""
    kind: str = "oracle"
    """Scripted agents: oracle (messages cross every episode), silent or skyline."""
    target: float = 20_000.0
    """Episodes/s every family must reach at its easiest level."""


def measure(env_id: str, level: int, cfg: Config) -> float:
    env = lpca_envs.make(env_id, level=level)
    rng = random.Random(0)
    env.reset(seed=0)
    for _ in range(200):  # warm-up: caches, imports, branch predictors
        lpca_envs.play_episode(env, cfg.kind, rng=rng)  # type: ignore[arg-type]
    n, start = 0, time.perf_counter()
    deadline = start + cfg.seconds
    while True:
        for _ in range(100):
            lpca_envs.play_episode(env, cfg.kind, rng=rng)  # type: ignore[arg-type]
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=Config.seconds)
    p.add_argument("--kind", default=Config.kind, choices=lpca_envs.SCRIPTED_KINDS)
    args = p.parse_args()
    cfg = Config(seconds=args.seconds, kind=args.kind)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(
        f"# bench_envs: {cfg.kind} agents, {cfg.seconds}s per cell, python {platform.python_version()}, "
        f"{platform.machine()}, one core\n"
    )
    print("| env | level | episodes/s | target at level 0 |")
    print("|---|---:|---:|---|")
    worst = float("inf")
    for env_id in lpca_envs.list_envs():
        fam = lpca_envs.get_family(env_id)
        if hasattr(fam, "episodes_for_generic_tests"):
            continue  # every episode is a sandbox run: see bench_sandbox.py
        for level in fam.levels:
            eps = measure(env_id, level, cfg)
            mark = ""
            if level == fam.levels[0]:
                worst = min(worst, eps)
                mark = "ok" if eps >= cfg.target else "MISSED"
            print(f"| {env_id} | {level} | {eps:,.0f} | {mark} |", flush=True)
    print(f"\nslowest easiest level: {worst:,.0f} episodes/s (target {cfg.target:,.0f})")


if __name__ == "__main__":
    main()
