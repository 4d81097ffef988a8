"""`lpca split ...`: a typer sub-app (mounted by the main CLI as ``app.add_typer(split_app, name="split")``).

lpca split lenses --model smollm2-135m                      # train a tuned lens, write the report
lpca split lenses --model smollm2-135m --lens runs/split/smollm2-135m/lens --backend mlx
lpca split heads --model smollm2-135m --lens runs/split/smollm2-135m/lens   # route + vitality heads
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from lpca_envs.errors import LPCAError

split_app = typer.Typer(
    help="Split inference: per-layer sufficiency (logit and tuned lens), oracle labels, route heads.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@split_app.command("lenses")
def lenses(
    model: str = typer.Option(..., "--model", "-m", help="Model id (see `lpca models`)."),
    backend: str = typer.Option("torch", help="torch or mlx (mlx needs --lens: training runs on torch)."),
    out: Path = typer.Option(None, "--out", help="Report directory (default runs/split/MODEL)."),
    lens: Path = typer.Option(None, "--lens", help="Use this tuned-lens checkpoint instead of training one."),
    envs: str = typer.Option("", help="Comma-separated env ids whose views make prompts (default: all)."),
    train_seeds: int = typer.Option(4, min=0, help="Env seeds per env on the train side."),
    heldout_seeds: int = typer.Option(2, min=0, help="Env seeds per env on the held-out side."),
    humaneval_train: int = typer.Option(8, min=0, help="HumanEval prompts on the train side."),
    humaneval_heldout: int = typer.Option(4, min=0, help="HumanEval prompts on the held-out side."),
    positions: int = typer.Option(16, min=1, help="Positions kept per prompt."),
    steps: int = typer.Option(100, min=1, help="Tuned-lens training steps."),
    batch: int = typer.Option(64, min=1, help="Positions per training step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Training seed."),
    kl_max: float = typer.Option(4.0, help="Oracle: largest KL(final || lens) of a sufficient layer."),
    margin_delta: float = typer.Option(0.15, help="Oracle: largest |lens margin - final margin|."),
    threads: int = typer.Option(None, min=1, help="Torch threads (default: torch's choice)."),
) -> None:
    """Per-layer sufficiency report: report.md, report.json, report.png and lens/ in OUT."""
    import lpca_models
    from lpca_models.split import LensReportConfig, LensTraining, OracleThresholds, load_lens, run_lens_report

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        b = lpca_models.load(model, backend=backend)
        tuned = load_lens(lens, b.info) if lens is not None else None
        cfg = LensReportConfig(
            env_ids=tuple(e.strip() for e in envs.split(",") if e.strip()) or None,
            train_seeds=train_seeds,
            heldout_seeds=heldout_seeds,
            humaneval=(humaneval_train, humaneval_heldout),
            max_positions=positions,
            training=LensTraining(steps=steps, batch=batch, lr=lr, seed=seed),
            oracle=OracleThresholds(kl_max=kl_max, margin_delta=margin_delta),
        )
        where = out if out is not None else Path("runs/split") / model.replace("/", "_")
        command = "lpca " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        doc = run_lens_report(b, cfg, where, lens=tuned, command=command, log=console.print)
    except LPCAError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    bd, bal = doc["boundaries"], doc["oracle"]["heldout_balance"]
    console.print(
        f"candidate boundaries: shallow {bd['shallow']}, late {bd['late']}; held-out oracle labels: "
        + ", ".join(f"{k} {v:.1%}" for k, v in bal.items())
    )


@split_app.command("heads")
def heads(
    model: str = typer.Option(..., "--model", "-m", help="Model id (see `lpca models`)."),
    out: Path = typer.Option(None, "--out", help="Report directory (default runs/split/MODEL-heads)."),
    lens: Path = typer.Option(None, "--lens", help="Use this tuned-lens checkpoint instead of training one."),
    envs: str = typer.Option("", help="Comma-separated env ids whose views make prompts (default: all)."),
    train_seeds: int = typer.Option(3, min=0, help="Env seeds per env on the train side."),
    heldout_seeds: int = typer.Option(1, min=0, help="Env seeds per env on the held-out side."),
    humaneval_train: int = typer.Option(6, min=0, help="HumanEval prompts on the train side."),
    humaneval_heldout: int = typer.Option(2, min=0, help="HumanEval prompts on the held-out side."),
    positions: int = typer.Option(8, min=1, help="Positions kept per prompt."),
    lens_steps: int = typer.Option(40, min=1, help="Tuned-lens training steps (without --lens)."),
    boundaries: str = typer.Option("", help="SHALLOW,LATE (default: from the train side's tuned-lens map)."),
    layers: str = typer.Option("", help="Comma-separated layers the heads read (default: 3 up to shallow)."),
    hidden: int = typer.Option(64, min=0, help="Head MLP width (0: linear)."),
    steps: int = typer.Option(300, min=1, help="Head training steps."),
    weight_decay: float = typer.Option(0.05, min=0.0, help="Head AdamW weight decay."),
    calibration: float = typer.Option(
        0.25, help="Fraction of train prompts (by seed) that fit the temperature."
    ),
    kl_max: float = typer.Option(4.0, help="Oracle: largest KL(final || lens) of a sufficient layer."),
    margin_delta: float = typer.Option(0.15, help="Oracle: largest |lens margin - final margin|."),
    seed: int = typer.Option(0, help="Head training and calibration-split seed."),
    threads: int = typer.Option(None, min=1, help="Torch threads (default: torch's choice)."),
) -> None:
    """Route and vitality heads on the oracle labels: heads.md, heads.json, route/ and vitality/ in OUT."""
    import lpca_models
    from lpca_models.split import (
        HeadsReportConfig,
        HeadTraining,
        LensTraining,
        OracleThresholds,
        load_lens,
        run_heads_report,
    )

    if threads:
        import torch

        torch.set_num_threads(threads)

    def ints(text: str) -> tuple[int, ...] | None:
        try:
            return tuple(int(x) for x in text.split(",") if x.strip()) or None
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None

    bounds = ints(boundaries)
    if bounds is not None and len(bounds) != 2:
        raise typer.BadParameter(f"--boundaries takes SHALLOW,LATE; got {boundaries!r}")
    try:
        b = lpca_models.load(model, backend="torch")
        tuned = load_lens(lens, b.info) if lens is not None else None
        cfg = HeadsReportConfig(
            env_ids=tuple(e.strip() for e in envs.split(",") if e.strip()) or None,
            train_seeds=train_seeds,
            heldout_seeds=heldout_seeds,
            humaneval=(humaneval_train, humaneval_heldout),
            max_positions=positions,
            lens_training=LensTraining(steps=lens_steps),
            oracle=OracleThresholds(kl_max=kl_max, margin_delta=margin_delta),
            boundaries=bounds,  # type: ignore[arg-type]
            layers=ints(layers),
            head=HeadTraining(hidden=hidden, steps=steps, weight_decay=weight_decay, seed=seed),
            calibration=calibration,
            seed=seed,
        )
        where = out if out is not None else Path("runs/split") / (model.replace("/", "_") + "-heads")
        command = "lpca " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        doc = run_heads_report(b, cfg, where, lens=tuned, command=command, log=console.print)
    except LPCAError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    for task, r in doc["tasks"].items():
        h, bl = r["head"], r["baselines"]
        console.print(
            f"{task}: head macro-F1 {h['macro_f1']:.3f} (majority {bl['majority']['macro_f1']:.3f}, "
            f"entropy {bl['entropy']['macro_f1']:.3f}, fixed {bl['fixed_split']['macro_f1']:.3f})"
        )
