"""What runs one cell: a `CellWorker` keeps a model loaded and runs cells through the runner.

Both executors use it: a local worker process holds one, a Ray actor is one. Cells
arrive grouped by (model, backend), so a worker loads each model once and serves
every cell of it. Model-free scripted cells (silent, oracle, skyline) run here too,
writing the same records and run directory as the runner.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lpca_envs
from lpca_protocols.episode_log import append_episodes, write_atomic
from lpca_protocols.sweep.grid import Cell


class CellWorker:
    """Runs cells, one at a time, keeping the last model loaded (cells come grouped by model)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._group: tuple[str, str] | None = None
        self._agent: Any = None
        self.loads = 0
        """How many times this worker loaded a model (a test checks it is once per model)."""

    def agent(self, cell: Cell) -> Any:
        """The agents of `cell`: agent name -> LMAgent, each distinct model loaded once per group."""
        if self._group != cell.group:
            self._agent = None  # free the previous models before loading the next
            self._group = cell.group
            if self.threads and cell.run.backend == "torch":
                import torch

                torch.set_num_threads(self.threads)
            self._agent = {}
        from lpca_protocols.runner import load_agents

        names = tuple(lpca_envs.get_family(cell.run.env_id).agents)
        before = len(self._agent)
        agents = load_agents(
            cell.run.model,
            names,
            backend=cell.run.backend,
            max_new_tokens=cell.run.max_new_tokens,
            loaded=self._agent,
        )
        self.loads += len(self._agent) - before
        return agents

    def run(self, cell: Cell, run_dir: str) -> dict[str, Any]:
        """Run (or finish) `cell` in `run_dir`; its summary."""
        with cell_lock(Path(run_dir)):
            if cell.scripted is not None:
                return run_scripted(cell, Path(run_dir))
            from lpca_protocols.runner import run

            opts = asdict(cell.run)
            env_id, channel, model = opts.pop("env_id"), opts.pop("channel"), opts.pop("model")
            summary = run(env_id, channel, model, run_dir=run_dir, agent=self.agent(cell), **opts).summary
            return summary | {"model_loads": self.loads}


@contextlib.contextmanager
def cell_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock: one writer per cell, even across sweeps started twice.

    The lock dies with its process, so after a kill the next sweep takes it at once;
    a worker orphaned by a killed driver finishes its cell first, then the lock frees.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: one sweep per directory is then the user's care
        yield
        return
    with open(run_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_scripted(cell: Cell, run_dir: Path) -> dict[str, Any]:
    """Play `cell`'s seeds with scripted agents, resuming `run_dir` like the runner does.

    Each episode's scripted randomness is seeded from the episode's own seed, so a
    resumed cell records exactly what an uninterrupted one would. It is not the env
    seed itself: a guesser drawing from the same stream as the task generator would
    "guess" the secret every time.
    """
    from lpca_protocols.runner import resume_run_dir, summarize

    cfg = cell.run
    records = resume_run_dir(run_dir, cfg)
    done = {r["seed"] for r in records}
    todo = [s for s in range(cfg.seed, cfg.seed + cfg.episodes) if s not in done]
    env = lpca_envs.make(cfg.env_id, level=cfg.level)
    for start in range(0, len(todo), cfg.batch_size):
        batch = []
        for s in todo[start : start + cfg.batch_size]:
            t = time.perf_counter()
            rng = random.Random(f"scripted-{s}")
            r = lpca_envs.play_episode(env, cell.scripted, seed=s, rng=rng)  # type: ignore[arg-type]
            batch.append(
                {
                    "task_id": r.task_id,
                    "seed": s,
                    "success": bool(r.success),
                    "score": r.score,
                    "detail": "",
                    "answer": None,
                    "messages": [],
                    "bits": r.bits,
                    "info_bits": r.info_bits,
                    "tokens_generated": 0,
                    "prompt_tokens": 0,
                    "forward_passes": 0,
                    "time_sender_s": 0.0,
                    "time_channel_s": time.perf_counter() - t,
                    "time_receiver_s": 0.0,
                    "violations": [v.as_dict() for v in r.violations],
                    "diagnostics": {},
                }
            )
        append_episodes(run_dir / "episodes.jsonl", batch)
        records.extend(batch)
    records.sort(key=lambda r: r["seed"])
    summary = summarize(records)
    summary.update(channel=cfg.channel, env_id=cfg.env_id, level=cfg.level, model=cfg.model)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
