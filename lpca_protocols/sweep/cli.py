"""`lpca sweep CONFIG` (registered on the main `lpca` app; `lpca leaderboard` is in `leaderboard.cli`)."""

from __future__ import annotations

import typer

from lpca_protocols import output

console = output.console()  # a pipe or CI log gets tables whole


def sweep(
    config: str = typer.Argument(..., help="Sweep config file (.toml, or .yaml with PyYAML)."),
    out: str = typer.Option(
        None, "--out", help="Sweep directory (default: the config's `out`, else sweeps/NAME)."
    ),
    executor: str = typer.Option("local", help="local (worker processes) or ray."),
    workers: int = typer.Option(1, min=1, help="Worker processes (local) or actors per model (ray)."),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray instance)."),
    threads: int = typer.Option(None, min=1, help="Torch threads per worker (default: cores / workers)."),
    gpus_per_worker: float = typer.Option(0.0, min=0.0, help="Ray: GPUs each actor reserves."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the grid; run nothing."),
) -> None:
    """Run a grid of (env, level, channel, options, budget, model, seeds); rerun it to resume."""
    from lpca_envs.errors import LPCAError
    from lpca_protocols.sweep import expand, load_config, run_sweep
    from lpca_protocols.sweep.config import WorkerDiedError

    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"expected local or ray, got {executor!r}", param_hint="--executor")
    if address is not None and executor != "ray":
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    try:
        if dry_run:
            cells = expand(load_config(config))
            for c in cells:
                console.print(
                    f"{c.key}  {c.run.env_id} L{c.run.level}  {c.label}  {c.run.channel_options or ''}  "
                    f"budget={c.run.budget_bits_per_message}  {c.run.model}  seeds {c.run.seed}+{c.episodes}",
                    highlight=False,
                )
            console.print(f"{len(cells)} cells, {sum(c.episodes for c in cells)} episodes")
            return
        result = run_sweep(
            config,
            out,
            executor=executor,
            workers=workers,
            threads=threads,
            address=address,
            gpus_per_worker=gpus_per_worker,
            console=console,
        )
    except WorkerDiedError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    except (LPCAError, KeyError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    console.print(
        f"{len(result.finished)} cells run, {len(result.skipped)} already done, {len(result.failed)} failed "
        f"in {result.seconds:.1f}s; sweep directory: {result.root}",
        highlight=False,
    )
    if result.failed:
        console.print("[red]failed cells[/red] (fix, then rerun the same command to resume):")
        for key, err in result.failed.items():
            console.print(f"  {key}: {err}", highlight=False)
        raise typer.Exit(1)
    console.print(f"next: lpca leaderboard {result.root}", highlight=False)
