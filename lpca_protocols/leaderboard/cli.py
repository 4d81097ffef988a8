"""`lpca leaderboard SWEEP_DIR` (registered on the main `lpca` app)."""

from __future__ import annotations

import typer

from lpca_protocols import output

console = output.console()  # a pipe or CI log gets the 16 columns whole


def leaderboard(
    sweep_dir: str = typer.Argument(..., help="A sweep directory (the --out of `lpca sweep`)."),
    out: str = typer.Option(None, "--out", help="Where to write (default: SWEEP_DIR/leaderboard)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the PNG plots."),
) -> None:
    """Tables per task family (success with 95% CI, bits, tokens, latency, controls) and plots."""
    from rich.table import Table

    from lpca_envs.errors import LPCAError
    from lpca_protocols.leaderboard import build_leaderboard
    from lpca_protocols.leaderboard.render import cells, has_controls, header

    try:
        board = build_leaderboard(sweep_dir, out, plots=plots)
    except LPCAError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    for fam, rows in board.families.items():
        controls = has_controls(rows)
        table = Table(title=fam)
        for h in header(controls):
            table.add_column(h, justify="left" if h in ("protocol", "options", "model") else "right")
        for r in rows:
            table.add_row(*cells(r, controls), style="dim" if r["scripted"] else None)
        output.print_table(console, table)
    console.print(f"wrote {', '.join(p.name for p in board.files)} to {board.out}", highlight=False)
