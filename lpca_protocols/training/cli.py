"""`lpca train ...`: a typer sub-app (mounted by the main CLI as ``app.add_typer(train_app, name="train")``).

lpca train codec codec.toml                 # train (or resume) a learned codec; prints the gate
lpca train codec codec.toml --gate --name relay-k8   # ... and publish it under a name
lpca train bridge bridge.toml --gate        # a cross-model bridge (config names a receiver)
lpca train gate relay-k8 --episodes 200     # a checkpoint directory or a published name
lpca train list                             # the published codecs
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lpca_envs.errors import LPCAError
from lpca_protocols import output

train_app = typer.Typer(
    help="Train learned latent codecs and test them against their controls.",
    no_args_is_help=True,
    add_completion=False,
)
console = output.console()  # a pipe or CI log gets tables whole


@train_app.command("codec")
def codec(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="TOML training config."),
    gate: bool = typer.Option(False, "--gate", help="Run the gate on held-out seeds after training."),
    gate_episodes: int = typer.Option(200, min=2, help="Episodes per gate row."),
    name: str = typer.Option(None, "--name", help="Publish the final codec under this name (see `list`)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train (or resume) a codec through the frozen receiver; writes OUT/codec (the checkpoint)."""
    _train_cmd(config, gate, gate_episodes, name, progress, bridge=False)


@train_app.command("bridge")
def bridge(
    config: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="TOML training config with a receiver."
    ),
    gate: bool = typer.Option(False, "--gate", help="Run the gate on held-out seeds after training."),
    gate_episodes: int = typer.Option(200, min=2, help="Episodes per gate row."),
    name: str = typer.Option(None, "--name", help="Publish the final bridge under this name (see `list`)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train (or resume) a cross-model bridge: `model` (sender) -> `receiver`; writes OUT/codec."""
    _train_cmd(config, gate, gate_episodes, name, progress, bridge=True)


def _train_cmd(
    config: Path, gate: bool, gate_episodes: int, name: str | None, progress: bool, bridge: bool
) -> None:
    from lpca_protocols.packet_codec import check_name, publish
    from lpca_protocols.training.config import TrainConfigError, is_bridge, load_config
    from lpca_protocols.training.trainer import train_codec

    try:
        if name is not None:
            check_name(name)
        cfg = load_config(config)
        if bridge != is_bridge(cfg):
            raise TrainConfigError(
                f"{config}: a bridge config names a receiver model other than its model (the sender); "
                + ("set receiver = MODEL-ID" if bridge else "use `lpca train bridge` for this one")
            )
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
    if "collapse_kl" in last:
        nan = float("nan")
        first, first_sh = last.get("first_token", nan), last.get("first_token_shuffle", nan)
        console.print(
            f"collapse KL (real vs shuffled packet) {last['collapse_kl']:.3f}; first answer token "
            f"{first:.1%} (shuffled {first_sh:.1%}); "
            f"decoded norm {last.get('norm_ratio', float('nan')):.2f}x the embeddings', "
            f"nearest-embedding cosine {last.get('nearest_cos', float('nan')):.2f}"
        )
    if "codebook" in last:
        u = last["codebook"]
        slots = " ".join(f"{s['perplexity']:.1f}" for s in last.get("codebook_slots", []))
        console.print(
            f"codebook: {u['used']}/{u['size']} used, {u['dead']} dead, perplexity {u['perplexity']:.2f} "
            f"(per position: {slots})"
        )
    console.print(f"checkpoint: {result.checkpoint}")
    passed = True
    if gate:
        passed = _print_gate(str(result.checkpoint), cfg.env, cfg.level, gate_episodes, cfg.codec.serializer)
    if name is not None:
        try:
            console.print(f"published as {name!r}: {publish(result.checkpoint, name)}")
        except LPCAError as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
    if not passed:
        raise typer.Exit(1)


@train_app.command("gate")
def gate_cmd(
    checkpoint: str = typer.Argument(..., help="Codec checkpoint directory or published name."),
    env: str = typer.Option("lpca/SecretRelay-v0", help="Environment id."),
    level: int = typer.Option(0, help="Difficulty level."),
    episodes: int = typer.Option(200, min=2, help="Episodes per row (the gate needs >= 200)."),
    codec: str = typer.Option("fp16", help="Serializer of a continuous packet."),
    record: bool = typer.Option(True, "--record/--no-record", help="Write the outcome into codec.json."),
) -> None:
    """Normal vs shuffle/null/random controls and P0 on held-out seeds; exit 1 if the gate fails."""
    if not _print_gate(checkpoint, env, level, episodes, codec, record):
        raise typer.Exit(1)


@train_app.command("list")
def list_cmd() -> None:
    """The published codecs: name, kind, sizes, bits per message, base model, gate outcome."""
    from lpca_protocols.packet_codec import codecs_dir, list_codecs

    entries = list_codecs()
    table = Table(title=f"codecs in {codecs_dir()}")
    for col in ("name", "kind", "quantizer", "k", "m", "K", "bits/msg", "inject", "model(s)", "gate"):
        table.add_column(col, no_wrap=col in ("name", "model(s)", "gate"))
    for e in entries:
        gate = "-"
        if e.gate:
            verdict = "passed" if e.gate["passed"] else "FAILED"
            gate = f"{verdict} {e.gate['rate']:.0%} ({e.gate['episodes']} ep)"
        table.add_row(
            e.name,
            e.kind,
            e.quantizer,
            str(e.k),
            str(e.m),
            str(e.codebook_size) if e.kind == "codebook" else "-",
            "?" if e.bits is None else str(e.bits),
            "prefix" if e.inject_layer is None else f"layer {e.inject_layer}",
            e.base_model,
            gate,
        )
    output.print_table(console, table)


def _print_gate(
    checkpoint: str, env: str, level: int, episodes: int, codec: str, record: bool = True
) -> bool:
    from lpca_protocols.packet_codec import record_gate, resolve
    from lpca_protocols.training.gate import run_gate

    try:
        path = resolve(checkpoint)
        report = run_gate(path, env_id=env, level=level, episodes=episodes, codec=codec)
        if record:
            record_gate(path, report)
    except LPCAError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    console.print(report.table())
    return report.passed
