"""Sweep throughput (1 vs 2 local workers) and the sweep machinery's per-episode overhead.

The same small grid (4 cells), measured side by side, each a fresh process timed from start
to exit (interpreter, imports, model load and all):

- direct: one process loads the model and calls `lpca_protocols.runner.run` for each cell
  (reusing the agent, writing a run directory per cell) -- what a user without sweeps does;
- sweep, 1 worker: `lpca sweep CONFIG --workers 1` (driver + one worker process);
- sweep, 2 workers: `lpca sweep CONFIG --workers 2`.

direct and the 1-worker sweep run at E and 2E episodes per cell: the slope between the two is
the marginal time per episode, free of the fixed start-up costs, and the sweep's per-episode
overhead is the ratio of the slopes. Targets: 2 workers >= 1.7x the episodes/s of 1 (one
torch thread per worker); sweep overhead per episode <= 5% of direct.

    python benchmarks/bench_sweep.py --model smollm2-135m --episodes 32
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Zoo id of the model serving every agent."""
    episodes: int = 32
    """Episodes per cell (a multiple of the batch size)."""
    batch_size: int = 8
    """Episodes per batched model call."""
    max_new_tokens: int = 8
    """Longest answer: short, so the grid stays small."""
    repeats: int = 1
    """Times each measurement is taken (the median is reported)."""
    threads: int = 1
    """Torch threads per process (direct run and every sweep worker). 1 makes the 2-worker figure
    a measure of the executor's scaling (one core per worker) and avoids OpenMP spin-waiting; a
    last row runs 1 worker on every core, the sweep's default on this machine."""


def grid_toml(cfg: Config) -> str:
    """4 cells: SecretRelay L0/L1 x (P0 none, P1 text forwarding the view: no message generation)."""
    return f"""
name = "bench"
models = ["{cfg.model}"]
episodes = {cfg.episodes}
batch_size = {cfg.batch_size}
max_new_tokens = {cfg.max_new_tokens}
[[envs]]
id = "lpca/SecretRelay-v0"
levels = [0, 1]
[[channels]]
name = "none"
[[channels]]
name = "text"
options = {{ forward_view = true }}
"""


DIRECT = """
import sys, time, torch
import lpca_models
from dataclasses import asdict
from lpca_models.agents import LMAgent
from lpca_protocols.runner import run
from lpca_protocols.sweep import expand, load_config
torch.set_num_threads(int(sys.argv[3]))
cells = expand(load_config(sys.argv[1]))
agent = None
for c in cells:
    if agent is None:
        backend = lpca_models.load(c.run.model, backend=c.run.backend)
        agent = LMAgent(backend, max_new_tokens=c.run.max_new_tokens)
    opts = asdict(c.run)
    env, ch, model = opts.pop("env_id"), opts.pop("channel"), opts.pop("model")
    run(env, ch, model, agent=agent, out_dir=sys.argv[2], **opts)
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and every worker it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{cmd[:4]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in vars(Config()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    cfg = Config(**vars(p.parse_args()))
    cores = os.cpu_count() or 1
    t = cfg.threads or 1
    rows: dict[str, tuple[int, float, float]] = {}  # name -> (episodes, median wall s, median CPU s)
    with tempfile.TemporaryDirectory() as tmp:
        lpca = [sys.executable, "-m", "lpca_protocols.cli", "sweep"]

        def measure(name: str, eps: int, cmd: Callable[[str, str], list[str]]) -> None:
            config = Path(tmp) / f"bench{eps}.toml"
            config.write_text(grid_toml(replace(cfg, episodes=eps)))
            got = [timed(cmd(str(config), f"{tmp}/{len(rows)}_{i}")) for i in range(cfg.repeats)]
            wall, cpu = (sorted(x)[len(x) // 2] for x in zip(*got))
            rows[name] = (4 * eps, wall, cpu)
            print(f"{name}: {4 * eps} episodes, {wall:.1f} s wall, {cpu:.1f} CPU s", flush=True)

        e, e2 = cfg.episodes, 2 * cfg.episodes
        for eps in (e, e2):
            measure(f"direct, {eps}/cell", eps, lambda c, o: [sys.executable, "-c", DIRECT, c, o, str(t)])
            measure(
                f"sweep 1 worker, {eps}/cell",
                eps,
                lambda c, o: [*lpca, c, "--out", o, "--workers", "1", "--threads", str(t)],
            )
        measure(
            f"sweep 2 workers, {e2}/cell",
            e2,
            lambda c, o: [*lpca, c, "--out", o, "--workers", "2", "--threads", str(t)],
        )
        if cores > t:
            measure(f"sweep 1 worker x {cores} threads, {e2}/cell", e2, lambda c, o: [*lpca, c, "--out", o])
    shape = f"{cfg.model}, 4 cells, batch {cfg.batch_size}, {t} torch thread(s) per process"
    print(f"\n{shape}, {cores} cores, medians of {cfg.repeats}\n")
    print("| run | episodes | wall s | episodes/s | CPU s |\n|---|---:|---:|---:|---:|")
    for k, (n, w, c) in rows.items():
        print(f"| {k} | {n} | {w:.1f} | {n / w:.2f} | {c:.1f} |")
    one, two = rows[f"sweep 1 worker, {e2}/cell"], rows[f"sweep 2 workers, {e2}/cell"]
    print(f"\n2 workers vs 1 ({t} thread(s) each, wall): {one[1] / two[1]:.2f}x (target >= 1.7x)")
    # Marginal seconds per episode: the slope between E and 2E episodes per cell, so the fixed
    # costs (interpreter, imports, model load, worker spawn) cancel out of the comparison.
    n = 4 * (e2 - e)
    for what, i in (("wall", 1), ("CPU", 2)):
        direct = (rows[f"direct, {e2}/cell"][i] - rows[f"direct, {e}/cell"][i]) / n
        sweep = (rows[f"sweep 1 worker, {e2}/cell"][i] - rows[f"sweep 1 worker, {e}/cell"][i]) / n
        print(
            f"marginal {what} s/episode: direct {direct:.4f}, sweep {sweep:.4f}: "
            f"overhead {100 * (sweep / direct - 1):+.1f}% (target <= 5%)"
        )
    fixed = rows[f"sweep 1 worker, {e}/cell"][1] - rows[f"direct, {e}/cell"][1]
    print(f"fixed cost of a sweep over a direct run (wall, {e}/cell): {fixed:+.1f} s")


if __name__ == "__main__":
    main()
