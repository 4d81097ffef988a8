"""Route and vitality heads of a real model, against majority, fixed-split and entropy routing.

The prompt set is the one of bench_split_lenses.py (every task family's views, train seeds 0..,
held-out seeds 10_000.., plus HumanEval); when that benchmark's lens exists
(runs/split/bench-MODEL/lens, trained on this train side) it is reused, else a lens is trained.
The states are captured once; then, for each oracle regime (KL max, margin delta), the route
head (four oracle labels) and the vitality head (alive = exit layer <= late boundary) are
trained on the train side minus a calibration quarter (whole prompts), temperature-scaled on
that quarter and measured on the held-out prompts (`lpca_models.split.heads_report`). With
``--mlx`` the first regime's route head is loaded on the MLX backend and run on MLX's own
states at the same held-out positions: the largest probability difference from torch is reported.

    .venv/bin/python benchmarks/bench_split_heads.py                               # smollm2-135m
    .venv/bin/python benchmarks/bench_split_heads.py --model qwen2.5-coder-0.5b --mlx

Writes OUT/REGIME/heads.md, heads.json, route/ and vitality/ (OUT: runs/split/bench-MODEL-heads).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import lpca_models
from lpca_models.split import (
    LABELS,
    Captured,
    HeadsReportConfig,
    HeadTraining,
    LensTraining,
    OracleThresholds,
    load_head,
    load_lens,
    prepare_heads_data,
    run_heads_report,
)


@dataclass(frozen=True)
class Config:
    model: str = "smollm2-135m"
    """Zoo id of the model under study."""
    out: str = ""
    """Report directory ("" = runs/split/bench-MODEL-heads)."""
    lens: str = ""
    """Tuned-lens checkpoint ("" = runs/split/bench-MODEL/lens when present, else train one)."""
    threads: int = 1
    """Torch threads (the numbers in RESULTS.md use 1)."""
    train_seeds: int = 3
    """Env seeds per task family on the train side (as bench_split_lenses.py)."""
    heldout_seeds: int = 1
    """Env seeds per task family on the held-out side."""
    humaneval_train: int = 6
    """HumanEval prompts on the train side."""
    humaneval_heldout: int = 2
    """HumanEval prompts on the held-out side."""
    positions: int = 8
    """Positions per prompt."""
    boundaries: str = ""
    """SHALLOW,LATE ("" = chosen from the train side's tuned-lens top-1, as `HeadsReportConfig`)."""
    regimes: str = "4.0:0.15,1.0:0.15"
    """Oracle regimes KL_MAX:MARGIN_DELTA, comma-separated (the first is the published one)."""
    hidden: int = 64
    """Head MLP width (0: linear)."""
    steps: int = 300
    """Head training steps."""
    weight_decay: float = 0.05
    """Head AdamW weight decay."""
    mlx: bool = False
    """Also run the first regime's route head on the MLX backend's own held-out states."""


def parse() -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in Config.__dataclass_fields__.items():
        flag = "--" + name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return Config(**vars(p.parse_args()))


def mlx_check(cfg: Config, head_dir: Path, held: Captured, torch_probs: np.ndarray) -> dict:
    """The route head on MLX's own forward passes over the held-out prompts, at the very positions
    the torch side read."""
    mb = lpca_models.load(cfg.model, backend="mlx")
    head = load_head(head_dir, mb.info, labels=LABELS)
    t = time.perf_counter()
    probs = np.zeros_like(torch_probs)
    for i in np.unique(held.prompt):
        rows = np.flatnonzero(held.prompt == i)
        ids = mb.prompt_ids(held.prompts[i].text)
        fwd = mb.forward(
            ids, capture=list(head.layers), positions=held.position[rows].tolist(), logits="none"
        )
        probs[rows] = head.probs({layer: fwd.hidden[layer] for layer in head.layers})
    return {
        "positions": len(held),
        "max_abs_prob_diff": round(float(np.abs(probs - torch_probs).max()), 6),
        "argmax_agreement": float((probs.argmax(1) == torch_probs.argmax(1)).mean()),
        "wall_s": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    cfg = parse()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or f"runs/split/bench-{cfg.model}-heads")
    command = ".venv/bin/python benchmarks/bench_split_heads.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    t0 = time.perf_counter()
    backend = lpca_models.load(cfg.model)
    lens_dir = Path(cfg.lens or f"runs/split/bench-{cfg.model}/lens")
    lens = load_lens(lens_dir, backend.info) if lens_dir.is_dir() else None
    print(f"lens: {lens_dir if lens is not None else 'training one (40 steps)'}")
    base = HeadsReportConfig(
        train_seeds=cfg.train_seeds,
        heldout_seeds=cfg.heldout_seeds,
        humaneval=(cfg.humaneval_train, cfg.humaneval_heldout),
        max_positions=cfg.positions,
        lens_training=LensTraining(steps=40),
        head=HeadTraining(hidden=cfg.hidden, steps=cfg.steps, weight_decay=cfg.weight_decay),
        boundaries=tuple(int(x) for x in cfg.boundaries.split(",")) if cfg.boundaries else None,  # type: ignore[arg-type]
    )
    data = prepare_heads_data(backend, base, out, lens)
    summary = {}
    for regime in cfg.regimes.split(","):
        kl, delta = (float(x) for x in regime.split(":"))
        rcfg = replace(base, oracle=OracleThresholds(kl, delta))
        where = out / f"kl{kl:g}-d{delta:g}"
        doc = run_heads_report(backend, rcfg, where, command=command.strip(), data=data)
        summary[regime] = doc
        print((where / "heads.md").read_text())
    if cfg.mlx:
        first = next(iter(summary.values()))
        head_dir = Path(first["tasks"]["route"]["path"])
        torch_probs = load_head(head_dir, backend.info).probs(data.held.hidden)
        first["mlx"] = mlx_check(cfg, head_dir, data.held, torch_probs)
        print("mlx:", first["mlx"])
    total = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(
        json.dumps({"command": command.strip(), "total_s": total, "regimes": summary}, indent=2, default=str)
    )
    for regime, doc in summary.items():
        for task, r in doc["tasks"].items():
            h, bl = r["head"], r["baselines"]
            print(
                f"{regime} {task}: head acc {h['accuracy']:.3f} F1 {h['macro_f1']:.3f} ECE {h['ece']:.3f}"
                f"->{h['ece_calibrated']:.3f} | majority F1 {bl['majority']['macro_f1']:.3f} | entropy F1 "
                f"{bl['entropy']['macro_f1']:.3f} | fixed F1 {bl['fixed_split']['macro_f1']:.3f}"
            )
    print(f"total {total} s; layers {data.layers}; boundaries {data.boundaries}; timings {data.timings}")


if __name__ == "__main__":
    main()
