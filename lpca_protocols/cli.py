"""The `lpca` command."""

from __future__ import annotations

import typer
from rich.table import Table

import lpca_envs
from lpca_envs import SCRIPTED_KINDS, evaluate_scripted, get_family, list_envs
from lpca_protocols import output

app = typer.Typer(
    help="LPCA: should language-model agents talk in text or through hidden states?",
    no_args_is_help=True,
    add_completion=False,
)
console = output.console()  # a pipe or CI log gets tables whole (lpca_protocols/output.py)


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
    output.print_table(console, table)


@app.command()
def demo(
    episodes: int = typer.Option(32, min=1, help="Episodes per (env, level, protocol) cell."),
    model: str = typer.Option(
        "qwen2.5-coder-0.5b", help="Zoo model id, or a local Hugging Face directory or .gguf file."
    ),
    backend: str = typer.Option("torch", help="torch or mlx."),
    scripted: bool = typer.Option(
        False, "--scripted", help="Only the scripted agents, on every environment."
    ),
    env: list[str] = typer.Option(None, "--env", help="With --scripted: restrict to these env ids."),
    seed: int = typer.Option(0, help="With --scripted: first episode seed."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the rows as JSON on stdout (each row's line goes to stderr)."
    ),
) -> None:
    """The main job: text and latent channels on a real model beside the references and controls."""
    if scripted:
        _scripted_demo(episodes, env, seed)
        return
    from dataclasses import asdict

    from lpca_protocols.demo import run_demo

    log = output.console(stderr=True) if as_json else console

    table = Table(title=f"LPCA demo: {model} ({backend}), {episodes} seeded episodes per row")
    # short headers and labels, wrapped rather than cut, so a log file or CI output stays readable
    for col in ("family", "L", "protocol", "success", "95% CI", "bits", "info", "tokens", "s/ep"):
        table.add_column(col, justify="left" if col in ("family", "protocol") else "right")
    last = [None]

    def add(row: object) -> None:
        if last[0] is not None and last[0] != (row.env_id, row.level):  # type: ignore[attr-defined]
            table.add_section()
        last[0] = (row.env_id, row.level)  # type: ignore[attr-defined]
        r = row  # type: ignore[assignment]
        table.add_row(
            r.env_id.removeprefix("lpca/").rsplit("-v", 1)[0],
            str(r.level),
            r.protocol,
            f"{r.success:.0%}",
            f"[{r.ci95[0]:.0%}, {r.ci95[1]:.0%}]",
            f"{r.mean_bits:.0f}",
            f"{r.info_bits:.1f}",
            f"{r.tokens:.0f}",
            f"{r.time_s:.2f}",
        )
        log.print(f"  {r.env_id} L{r.level} {r.protocol}: {r.success:.0%}", highlight=False)

    def skip(reason: str) -> None:
        log.print(f"  {reason}", highlight=False)

    rows = run_demo(model=model, episodes=episodes, backend=backend, on_row=add, on_skip=skip)
    if as_json:
        output.print_json([asdict(r) for r in rows])
        return
    output.print_table(console, table)


def _scripted_demo(episodes: int, env: list[str] | None, seed: int) -> None:
    ids = env or list_envs()
    known = set(list_envs())
    bad = [i for i in ids if i not in known]
    if bad:
        raise typer.BadParameter(f"unknown env id(s) {bad}; known ids: {sorted(known)}", param_hint="--env")
    table = Table(title=f"Scripted agents, {episodes} episodes per row (seeds {seed}..{seed + episodes - 1})")
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
    output.print_table(console, table)


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
    output.print_table(console, table)


@app.command()
def channels() -> None:
    """List the registered communication channels (built-in and plugins)."""
    from lpca_protocols import plugins

    table = Table(title="LPCA channels")
    table.add_column("name", no_wrap=True)
    for col in ("needs", "rounds", "options", "from", "what"):
        table.add_column(col)
    for name, cls in sorted(plugins.channels().items()):
        opts = ", ".join(f"{k}={f.default!r}" for k, f in cls.Options.model_fields.items())
        origin = "built-in" if cls.__module__.startswith("lpca_protocols.") else cls.__module__.split(".")[0]
        try:
            rounds = str(cls().rounds)
        except Exception:  # a channel whose defaults need options
            rounds = "?"
        table.add_row(name, cls.requires.value, rounds, opts or "-", origin, cls.description)
    output.print_table(console, table)


def _parse_options(pairs: list[str] | None) -> dict[str, object]:
    import json

    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--opt")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _use_sandbox(sandbox: str | None) -> None:
    """--sandbox: the code tasks' backend for this process ($LPCA_SANDBOX)."""
    if sandbox is None:
        return
    if sandbox not in ("docker", "bwrap", "process"):
        raise typer.BadParameter(
            f"expected docker, bwrap or process, got {sandbox!r}", param_hint="--sandbox"
        )
    import os

    os.environ["LPCA_SANDBOX"] = sandbox


@app.command()
def run(
    env: str = typer.Option(..., "--env", help="Environment id, e.g. lpca/SecretRelay-v0 (see `lpca envs`)."),
    channel: str = typer.Option(..., "--channel", help="Channel name (see `lpca channels`)."),
    model: str = typer.Option(
        "smollm2-135m",
        help="Zoo model id (see `lpca models`), or a local Hugging Face directory or .gguf file; "
        "or one per agent: A=smollm2-135m,B=qwen2.5-coder-0.5b (each model loaded once).",
    ),
    episodes: int = typer.Option(50, min=1, help="Episodes (seeds seed..seed+episodes-1)."),
    level: int = typer.Option(0, help="Task difficulty level."),
    seed: int = typer.Option(0, help="First episode seed."),
    budget_bits: int = typer.Option(None, "--budget-bits", min=0, help="Max bits per message."),
    episode_bits: int = typer.Option(None, "--episode-bits", min=0, help="Max bits per episode."),
    rounds: int = typer.Option(None, min=0, help="Message rounds (default: what the channel needs)."),
    opt: list[str] = typer.Option(None, "--opt", help="Channel option key=value (repeatable)."),
    backend: str = typer.Option("torch", help="torch or mlx."),
    batch_size: int = typer.Option(8, min=1, help="Episodes per batched model call."),
    out: str = typer.Option("runs", help="Directory that receives the run directory."),
    sandbox: str = typer.Option(
        None, help="Code tasks: docker, bwrap or process (default: docker, else bwrap)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout, not a table."),
) -> None:
    """Run episodes of one (env, channel, model, budget) and print success, bits, tokens and time."""
    _use_sandbox(sandbox)
    from lpca_envs.errors import LPCAError
    from lpca_protocols.runner import run as run_episodes

    options = _parse_options(opt)
    try:
        with output.progress(f"{env} / {channel}", total=episodes) as update:
            result = run_episodes(
                env,
                channel,
                model,
                out_dir=out,
                level=level,
                episodes=episodes,
                seed=seed,
                channel_options=options,
                budget_bits_per_message=budget_bits,
                budget_bits_per_episode=episode_bits,
                rounds=rounds,
                backend=backend,
                batch_size=batch_size,
                progress=update,
            )
    except (LPCAError, KeyError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    s = result.summary
    if as_json:
        output.print_json({**s, "run_dir": str(result.run_dir)})
        return
    table = Table(title=f"{env} level {level} / {s['channel']} / {model}")
    for col in ("success", "95% CI", "bits/episode", "x info_bits", "tokens", "time/episode", "violations"):
        table.add_column(col, justify="right")
    lo, hi = s["ci95"]
    ratio = s["mean_bits"] / s["mean_info_bits"] if s["mean_info_bits"] else float("nan")
    table.add_row(
        f"{s['success_rate']:.1%} ({s['successes']}/{s['episodes']})",
        f"[{lo:.1%}, {hi:.1%}]",
        f"{s['mean_bits']:.0f}",
        f"{ratio:.1f}x",
        f"{s['mean_tokens_generated']:.0f}",
        f"{s['mean_time_s']:.2f}s",
        str(s["violations"]),
    )
    output.print_table(console, table)
    console.print(f"run directory: {result.run_dir}")


@app.command()
def calibrate(
    model: str = typer.Option(
        ..., help="Zoo model id (see `lpca models`), or a local Hugging Face directory or .gguf file."
    ),
    env: list[str] = typer.Option(None, "--env", help="Only these env ids (repeatable; default: all)."),
    level: list[int] = typer.Option(None, "--level", help="Only these levels (repeatable; default: all)."),
    episodes: int = typer.Option(64, min=1, help="Episodes per cell (seeds seed..seed+episodes-1)."),
    seed: int = typer.Option(0, min=0, help="First episode seed."),
    backend: str = typer.Option("torch", help="torch or mlx."),
    batch_size: int = typer.Option(8, min=1, help="Episodes per batched model call."),
    max_new_tokens: int = typer.Option(24, min=1, help="Longest answer, in tokens."),
    json_path: str = typer.Option(
        None,
        "--json",
        help="Write every row (and per-episode outcomes) here, as each cell finishes; "
        "'-' prints them as JSON on stdout instead of the table.",
    ),
    markdown_path: str = typer.Option(
        None, "--markdown", help="Write the table as Markdown here (rewritten as each cell finishes)."
    ),
    sandbox: str = typer.Option(
        None, help="Code tasks: docker, bwrap or process (default: docker, else bwrap)."
    ),
) -> None:
    """The competence table: chance, P0, skyline, oracle-text, P1 per family x level, and which are fair."""
    import shlex

    from lpca_envs.errors import LPCAError
    from lpca_protocols import calibrate as cal

    _use_sandbox(sandbox)
    argv = ["lpca", "calibrate", "--model", model, *(a for e in env or [] for a in ("--env", e))]
    argv += [a for lv in level or [] for a in ("--level", str(lv))]
    argv += ["--episodes", str(episodes), "--seed", str(seed), "--backend", backend]
    argv += ["--batch-size", str(batch_size), "--max-new-tokens", str(max_new_tokens)]
    argv += ["--sandbox", sandbox] if sandbox else []
    command = shlex.join(argv)  # the resolved command (defaults spelled out), for the JSON and Markdown
    to_stdout = json_path == "-"
    json_file = None if to_stdout else json_path
    try:
        cells = cal.select_cells(env, level)
        with output.progress(f"loading {model}") as progress:
            done: list[cal.CalibrationRow] = []

            def on_row(row: cal.CalibrationRow) -> None:
                # Each finished cell is saved at once (the files hold the rows so far), so an
                # interrupted hour-long table keeps what it measured.
                done.append(row)
                if json_file:
                    cal.write_json(json_file, done, command)
                if markdown_path:
                    cal.write_markdown(markdown_path, done, command)

            rows = cal.calibrate(
                model,
                cells,
                episodes=episodes,
                seed=seed,
                backend=backend,
                progress=progress,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                on_row=on_row,
            )
    except (LPCAError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        console.print(f"[red]error:[/red] {msg}")
        raise typer.Exit(2) from None
    if to_stdout:
        output.print_json(cal.json_doc(rows, command))
        return
    fp = rows[0].fingerprint[:12] if rows else "?"
    title = f"Competence of {model} ({backend}, fingerprint {fp}), {episodes} episodes from seed {seed}"
    cal.print_table(console, rows, title)
    if json_file:
        console.print(f"JSON: {cal.write_json(json_file, rows, command)}")
    if markdown_path:
        console.print(f"Markdown: {cal.write_markdown(markdown_path, rows, command)}")


from lpca_models.split.cli import split_app  # noqa: E402  (light: imports torch lazily)
from lpca_protocols.leaderboard.cli import leaderboard  # noqa: E402  (light: no framework import)
from lpca_protocols.sweep.cli import sweep  # noqa: E402
from lpca_protocols.training.cli import train_app  # noqa: E402  (light: imports torch lazily)
from lpca_protocols.wire.serve_cli import serve  # noqa: E402  (light: imports models lazily)

app.command()(serve)
app.command()(sweep)
app.command()(leaderboard)
app.add_typer(train_app, name="train")
app.add_typer(split_app, name="split")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
