"""The `lpca` command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

import lpca_envs
from lpca_envs import SCRIPTED_KINDS, evaluate_scripted, get_family, list_envs

app = typer.Typer(
    help="LPCA: should language-model agents talk in text or through hidden states?",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
if console.width < 110:  # pipes and CI logs default to 80 columns; tables need ~100
    console = Console(width=110)


@app.command()
def envs() -> None:
    """List the registered split-information environments."""
    table = Table(title="LPCA environments")
    table.add_column("id", no_wrap=True)
    for col in ("levels", "agents", "what", "info_bits"):
        table.add_column(col)
    for env_id in list_envs():
        fam = get_family(env_id)
        table.add_row(
            env_id,
            ",".join(map(str, fam.levels)),
            ",".join(fam.agents),
            fam.description,
            fam.info_bits_doc,
        )
    console.print(table)


@app.command()
def demo(
    episodes: int = typer.Option(200, min=1, help="Episodes per (env, level, agents) cell."),
    env: list[str] = typer.Option(None, "--env", help="Restrict to these env ids (repeatable)."),
    seed: int = typer.Option(0, help="First episode seed."),
) -> None:
    """Run every environment with the scripted agents (silent, oracle, skyline)."""
    ids = env or list_envs()
    known = set(list_envs())
    bad = [i for i in ids if i not in known]
    if bad:
        raise typer.BadParameter(
            f"unknown env id(s) {bad}; known ids: {sorted(known)}", param_hint="--env"
        )
    table = Table(
        title=f"Scripted agents, {episodes} episodes per row (seeds {seed}..{seed + episodes - 1})"
    )
    for col, just in (
        ("env", "left"),
        ("level", "right"),
        ("agents", "left"),
        ("success", "right"),
        ("mean bits", "right"),
        ("info_bits", "right"),
        ("violations", "right"),
    ):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for env_id in ids:
        fam = get_family(env_id)
        for level in fam.levels:
            e = lpca_envs.make(env_id, level=level)
            for kind in SCRIPTED_KINDS:
                s = evaluate_scripted(e, kind, episodes, seed)  # type: ignore[arg-type]
                table.add_row(
                    env_id,
                    str(level),
                    kind,
                    f"{s.success_rate:.1%}",
                    f"{s.mean_bits:.1f}",
                    f"{s.mean_info_bits:.2f}",
                    str(s.violations),
                )
        table.add_section()
    console.print(table)


@app.command()
def models() -> None:
    """List the model zoo: shape, size on disk and whether each model is converted yet."""
    from lpca_models import zoo  # light: no torch import until a model is converted

    root = zoo.cache_root()
    table = Table(title="LPCA models", caption=f"cache: {root} (set {zoo.CACHE_ENV} to move it)")
    for col, just in (
        ("id", "left"),
        ("description", "left"),
        ("layers", "right"),
        ("hidden", "right"),
        ("vocab", "right"),
        ("size", "right"),
        ("cached", "left"),
        ("source", "left"),
    ):
        wraps = col in ("description", "source")
        table.add_column(
            col,
            justify=just,  # type: ignore[arg-type]
            no_wrap=not wraps,
            overflow="fold" if col == "source" else "ellipsis",  # a package name has no spaces
        )
    for spec in zoo.list_models():
        path = zoo.cached_path(spec.id, root)
        if path is not None:
            size = f"{sum(f.stat().st_size for f in path.iterdir()) / 2**20:.0f} MB"
        else:
            size = f"~{spec.approx_mb} MB"
        if spec.packages:
            n_more = len(spec.packages) - 1
            source = spec.packages[0] + (f" (+{n_more} parts)" if n_more else "")
        else:
            source = "seeded random"
        table.add_row(
            spec.id,
            spec.description,
            str(spec.n_layers),
            str(spec.hidden_size),
            str(spec.vocab_size),
            size,
            "yes" if path is not None else "no",
            source,
        )
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
