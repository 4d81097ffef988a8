"""Per-layer sufficiency of a real model: logit lens vs tuned lens, split layers, oracle labels.

The prompt set is every task family's views (train seeds 0.., held-out seeds 10_000..) plus
HumanEval prompts (`lpca_models.split.capture`). A tuned lens is trained on the train side
(torch), both lenses are measured on both sides, candidate split layers are chosen from the
held-out tuned-lens top-1 agreement, and the held-out positions get oracle labels at the
published thresholds (KL 4.0, margin delta 0.15) plus a threshold sweep. With ``--mlx`` the
saved lens is loaded on the MLX backend and the held-out figures are measured again there.

    .venv/bin/python benchmarks/bench_split_lenses.py                              # smollm2-135m
    .venv/bin/python benchmarks/bench_split_lenses.py --model qwen2.5-coder-0.5b --steps 100 --mlx

Writes OUT/report.md, report.json, report.png and lens/ (OUT: runs/split/bench-MODEL).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import lpca_models
from lpca_models.split import (
    LensReportConfig,
    LensTraining,
    capture,
    humaneval_prompts,
    lens_stats,
    load_lens,
    run_lens_report,
    task_prompts,
)


@dataclass(frozen=True)
class Config:
    model: str = "smollm2-135m"
    """Zoo id of the model under study."""
    out: str = ""
    """Report directory ("" = runs/split/bench-MODEL)."""
    threads: int = 1
    """Torch threads (the numbers in RESULTS.md use 1)."""
    train_seeds: int = 3
    """Env seeds per task family on the train side."""
    heldout_seeds: int = 1
    """Env seeds per task family on the held-out side."""
    humaneval_train: int = 6
    """HumanEval prompts on the train side."""
    humaneval_heldout: int = 2
    """HumanEval prompts on the held-out side."""
    positions: int = 8
    """Positions per prompt (evenly spaced over its private tokens, the last included)."""
    steps: int = 40
    """Tuned-lens training steps."""
    batch: int = 64
    """Positions per step."""
    lr: float = 1e-3
    """Adam learning rate."""
    mlx: bool = False
    """Also measure the saved lens on the MLX backend (held-out side)."""


def parse() -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in Config.__dataclass_fields__.items():
        flag = "--" + name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return Config(**vars(p.parse_args()))


def mlx_check(cfg: Config, report: dict, lens_dir: Path) -> dict:
    """The held-out figures again on MLX (its own forward passes, the torch-trained lens)."""
    mb = lpca_models.load(cfg.model, backend="mlx")
    lens = load_lens(lens_dir, mb.info)
    prompts = [p for p in task_prompts(mb, None, cfg.train_seeds, cfg.heldout_seeds) if p.heldout]
    prompts += [p for p in humaneval_prompts(cfg.humaneval_train, cfg.humaneval_heldout) if p.heldout]
    t = time.perf_counter()
    held = capture(mb, prompts, cfg.positions)
    summary = {
        name: lens_stats(mb, held.hidden, lz).summary() for name, lz in (("logit", None), ("tuned", lens))
    }
    out = {"positions": len(held), "wall_s": round(time.perf_counter() - t, 1)}
    for name in ("logit", "tuned"):
        ref = report["layers"][f"{name}/heldout"]
        for key in ("kl_mean", "top1"):
            diff = np.abs(np.array(summary[name][key]) - np.array(ref[key]))
            out[f"{name}_{key}_max_abs_diff"] = round(float(diff.max()), 5)
    return out


def main() -> None:
    cfg = parse()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or f"runs/split/bench-{cfg.model}")
    report_cfg = LensReportConfig(
        train_seeds=cfg.train_seeds,
        heldout_seeds=cfg.heldout_seeds,
        humaneval=(cfg.humaneval_train, cfg.humaneval_heldout),
        max_positions=cfg.positions,
        training=LensTraining(steps=cfg.steps, batch=cfg.batch, lr=cfg.lr),
    )
    command = ".venv/bin/python benchmarks/bench_split_lenses.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    t = time.perf_counter()
    backend = lpca_models.load(cfg.model)
    report = run_lens_report(backend, report_cfg, out, command=command.strip())
    report["timings"]["total_s"] = round(time.perf_counter() - t, 1)
    if cfg.mlx:
        report["mlx"] = mlx_check(cfg, report, out / "lens")
        with (out / "report.md").open("a") as f:
            f.write(f"\nThe same held-out figures on MLX (torch-trained lens): {report['mlx']}\n")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    n = report["n_layers"]
    lo, tu = report["layers"]["logit/heldout"], report["layers"]["tuned/heldout"]
    print(
        f"held-out mean KL over layers 0..{n - 1}: logit {np.mean(lo['kl_mean'][:n]):.3f}, "
        f"tuned {np.mean(tu['kl_mean'][:n]):.3f}"
    )
    print("split map (tuned):", report["split_map"]["tuned"], "boundaries:", report["boundaries"])
    print("oracle balance (held-out, tuned):", report["oracle"]["heldout_balance"])
    print("timings:", report["timings"])
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
