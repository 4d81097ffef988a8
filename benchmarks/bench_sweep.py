"""Sweep throughput (1 vs 2 local workers) and the sweep machinery's per-episode overhead.

Three measurements of the same small grid, side by side, each a fresh process timed from
start to exit (interpreter, imports, model load and all):

- direct: one process loads the model and calls `lpca_protocols.runner.run` for each cell
  (reusing the agent, writing a run directory per cell) -- what a user without sweeps does;
- sweep, 1 worker: `lpca sweep CONFIG --workers 1` (driver + one worker process);
- sweep, 2 workers: `lpca sweep CONFIG --workers 2` (torch threads split between them).

Targets: 2 workers >= 1.7x the episodes/s of 1; sweep overhead per episode <= 5% of direct.

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
from dataclasses import dataclass
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
    threads: int = 0
    """Torch threads of the direct run and of the 1-worker sweep (0: all cores, the sweep's default).
    On a shared machine 1 avoids OpenMP spin-waiting on contended cores, which inflates 2-thread times."""


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
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(grid_toml(cfg))
        episodes = 4 * cfg.episodes
        lpca = [sys.executable, "-m", "lpca_protocols.cli", "sweep", str(config)]
        times: dict[str, list[tuple[float, float]]] = {
            "direct": [],
            "sweep 1 worker": [],
            "sweep 2 workers": [],
        }
        for i in range(cfg.repeats):
            times["direct"].append(
                timed([sys.executable, "-c", DIRECT, str(config), f"{tmp}/d{i}", str(cores)])
            )
            times["sweep 1 worker"].append(timed([*lpca, "--out", f"{tmp}/s1_{i}", "--workers", "1"]))
            times["sweep 2 workers"].append(timed([*lpca, "--out", f"{tmp}/s2_{i}", "--workers", "2"]))
            print(
                f"repeat {i}: "
                + ", ".join(f"{k} {v[-1][0]:.1f}s ({v[-1][1]:.1f} CPU s)" for k, v in times.items())
            )
    wall = {k: sorted(w for w, _ in v)[len(v) // 2] for k, v in times.items()}
    cpu = {k: sorted(c for _, c in v)[len(v) // 2] for k, v in times.items()}
    shape = f"{cfg.model}, 4 cells x {cfg.episodes}, batch {cfg.batch_size}"
    print(f"\n{episodes} episodes ({shape}), {cores} cores, medians of {cfg.repeats}\n")
    print("| run | wall s | episodes/s | CPU s | CPU s/episode |\n|---|---:|---:|---:|---:|")
    for k in times:
        print(f"| {k} | {wall[k]:.1f} | {episodes / wall[k]:.2f} | {cpu[k]:.1f} | {cpu[k] / episodes:.3f} |")
    speedup = wall["sweep 1 worker"] / wall["sweep 2 workers"]
    print(f"\n2 workers vs 1 (wall): {speedup:.2f}x (target >= 1.7x)")
    for name, m in (("wall", wall), ("CPU", cpu)):
        overhead = (m["sweep 1 worker"] - m["direct"]) / m["direct"]
        print(f"sweep overhead per episode vs direct runner ({name}): {100 * overhead:+.1f}% (target <= 5%)")


if __name__ == "__main__":
    main()
