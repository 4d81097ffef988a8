"""`lpca train ...`: a typer sub-app (mounted by the main CLI as ``app.add_typer(train_app, name="train")``).

lpca train codec codec.toml                 # train (or resume) a learned codec; prints the gate
lpca train gate runs/codec/codec --episodes 200
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lpca_envs.errors import LPCAError

train_app = typer.Typer(
    help="Train learned latent codecs and test them against their controls.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@train_app.command("codec")
def codec(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="TOML training config."),
    gate: bool = typer.Option(False, "--gate", help="Run the gate on held-out seeds after training."),
    gate_episodes: int = typer.Option(200, min=2, help="Episodes per gate row."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train (or resume) a codec through the frozen receiver; writes OUT/codec (the checkpoint)."""
    from lpca_protocols.training.config import load_config
    from lpca_protocols.training.trainer import train_codec

    try:
        cfg = load_config(config)
        result = train_codec(cfg, progress=progress)
    except LPCAError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    last = result.history[-1] if result.history else {}
    exact, shuffled = last.get("exact", float("nan")), last.get("exact_shuffle", float("nan"))
    console.print(
        f"trained {result.step} steps in {result.wall_s:.1f} s (resumed from step {result.resumed_from}); "
        f"held-out exact {exact:.1%}, shuffled {shuffled:.1%}"
    )
    console.print(f"checkpoint: {result.checkpoint}")
    if gate:
        _print_gate(result.checkpoint, cfg.env, cfg.level, gate_episodes, cfg.codec.serializer)


@train_app.command("gate")
def gate_cmd(
    checkpoint: Path = typer.Argument(..., exists=True, file_okay=False, help="Codec checkpoint directory."),
    env: str = typer.Option("lpca/SecretRelay-v0", help="Environment id."),
    level: int = typer.Option(0, help="Difficulty level."),
    episodes: int = typer.Option(200, min=2, help="Episodes per row (the gate needs >= 200)."),
    codec: str = typer.Option("fp16", help="Serializer of a continuous packet."),
) -> None:
    """Normal vs shuffle/null/random controls and P0 on held-out seeds; exit 1 if the gate fails."""
    _print_gate(checkpoint, env, level, episodes, codec)


def _print_gate(checkpoint: Path | None, env: str, level: int, episodes: int, codec: str) -> None:
    from lpca_protocols.training.gate import run_gate

    try:
        report = run_gate(checkpoint, env_id=env, level=level, episodes=episodes, codec=codec)  # type: ignore[arg-type]
    except LPCAError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    console.print(report.table())
    if not report.passed:
        raise typer.Exit(1)
