"""Runner throughput: episodes/s for P0 and P1 on SmolLM2, batch 1 vs batch 8, side by side.

The same seeded episodes (SecretRelay level 0) run through `lpca_protocols.runner.run`
with one model instance; only the batch size changes. Target: batched >= 4x unbatched.

    python benchmarks/bench_runner.py --episodes 16
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import lpca_models
from lpca_models.agents import LMAgent
from lpca_protocols.runner import run


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Zoo id of the model serving every agent."""
    env_id: str = "lpca/SecretRelay-v0"
    """Environment (level 0): short prompts, short answers."""
    episodes: int = 16
    """Episodes per measurement (a multiple of 8)."""


def measure(agent: LMAgent, cfg: Config, channel: str, batch: int) -> tuple[float, float]:
    t = time.perf_counter()
    r = run(
        cfg.env_id,
        channel,
        cfg.model,
        agent=agent,
        out_dir=None,
        episodes=cfg.episodes,
        batch_size=batch,
        seed=500,
    )
    return cfg.episodes / (time.perf_counter() - t), r.summary["success_rate"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=Config.episodes)
    cfg = Config(episodes=p.parse_args().episodes)
    agent = LMAgent(lpca_models.load(cfg.model))
    run(cfg.env_id, "none", cfg.model, agent=agent, out_dir=None, episodes=2)  # warm-up
    print(
        "| channel | batch 1 eps/s | batch 8 eps/s | speedup | success (b1 / b8) |\n|---|---:|---:|---:|---|"
    )
    for channel in ("none", "text"):
        e1, s1 = measure(agent, cfg, channel, 1)
        e8, s8 = measure(agent, cfg, channel, 8)
        print(f"| {channel} | {e1:.2f} | {e8:.2f} | {e8 / e1:.2f}x | {s1:.0%} / {s8:.0%} |", flush=True)


if __name__ == "__main__":
    main()
