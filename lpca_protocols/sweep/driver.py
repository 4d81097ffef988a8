"""`run_sweep`: config -> grid -> the cells not yet finished -> an executor, with a live progress view."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lpca_protocols.sweep.config import SweepConfig, SweepError, load_config
from lpca_protocols.sweep.executors import EXECUTORS, run_local, run_ray
from lpca_protocols.sweep.grid import Cell, expand
from lpca_protocols.sweep.store import SweepStore


@dataclass
class SweepResult:
    """What a sweep did: its directory, its grid, and which cells ran, were skipped or failed."""

    root: Path
    cells: list[Cell]
    skipped: list[Cell] = field(default_factory=list)
    """Cells already complete on disk when the sweep started."""
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Cell key -> summary, for the cells this sweep ran (or finished)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Cell key -> error, for the cells that raised."""
    seconds: float = 0.0


def run_sweep(
    config: SweepConfig | str | Path,
    out: str | Path | None = None,
    *,
    executor: str = "local",
    workers: int = 1,
    threads: int | None = None,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    console: Console | None = None,
    live: bool | None = None,
) -> SweepResult:
    """Run every unfinished cell of `config` into `out` (default: the config's ``out``, else
    ``sweeps/<name>``) and return what happened. Rerunning resumes: finished cells are
    skipped, partial ones finish their missing episodes.

    `threads` is the torch threads per worker (default: the machine's cores / workers
    locally, 1 per Ray actor); `live` forces the live progress view on or off.
    """
    source = None
    base = Path.cwd()
    if not isinstance(config, SweepConfig):
        path = Path(config)
        cfg = load_config(path)
        source, base = path.read_text(), path.parent
    else:
        cfg = config
    if executor not in EXECUTORS:
        raise SweepError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers must be an int >= 1, got {workers!r}")
    root = Path(out) if out is not None else base / cfg.out if cfg.out else Path("sweeps") / cfg.name
    cells = expand(cfg)
    store = SweepStore(root)
    store.prepare(cfg, cells, source)
    result = SweepResult(root, cells)
    todo = []
    for c in cells:
        (result.skipped if store.complete(c) else todo).append(c)
    console = console or Console()
    if threads is None and executor == "local":
        threads = max(1, (os.cpu_count() or 1) // workers)
    console.print(
        f"sweep {cfg.name!r}: {len(cells)} cells ({len(result.skipped)} already done), "
        f"{sum(c.episodes for c in cells)} episodes -> {root}",
        highlight=False,
    )
    view = _View(store, cells, todo, console, live)
    t0 = time.perf_counter()

    def on_done(cell: Cell, summary: dict[str, Any] | None, error: str | None) -> None:
        view.finish(cell, summary, error)
        if error is None and summary is not None:
            result.finished[cell.key] = summary
        else:
            result.failed[cell.key] = error or "unknown error"

    tasks = [(c, store.cell_dir(c)) for c in todo]
    with view:
        if tasks and executor == "local":
            run_local(tasks, workers, threads, on_done, view.tick)
        elif tasks:
            run_ray(tasks, workers, threads or 1, on_done, view.tick, address, gpus_per_worker)
    result.seconds = time.perf_counter() - t0
    return result


class _View:
    """Rich progress: all episodes (with ETA), cells, and one bar per cell in flight."""

    def __init__(
        self, store: SweepStore, cells: list[Cell], todo: list[Cell], console: Console, live: bool | None
    ) -> None:
        self.store, self.todo, self.console = store, todo, console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not (console.is_terminal if live is None else live),
        )
        self.base = {c.key: store.done(c) for c in todo}
        total_eps = sum(c.episodes for c in cells)
        self.done_before = total_eps - sum(c.episodes - min(self.base[c.key], c.episodes) for c in todo)
        self.eps = self.progress.add_task("episodes", total=total_eps, completed=self.done_before)
        self.cells = self.progress.add_task("cells", total=len(cells), completed=len(cells) - len(todo))
        self.active: dict[str, TaskID] = {}
        self.finished: set[str] = set()

    def __enter__(self) -> _View:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.tick()
        self.progress.__exit__(*exc)

    def tick(self) -> None:
        total = self.done_before
        for c in self.todo:
            n = min(self.store.done(c), c.episodes)
            total += n - min(self.base[c.key], c.episodes)
            if c.key in self.finished:
                continue
            if n > self.base[c.key] and c.key not in self.active:
                self.active[c.key] = self.progress.add_task(f"  {c.dir_name}", total=c.episodes)
            if c.key in self.active:
                self.progress.update(self.active[c.key], completed=n)
        self.progress.update(self.eps, completed=total)

    def finish(self, cell: Cell, summary: dict[str, Any] | None, error: str | None) -> None:
        self.finished.add(cell.key)
        task = self.active.pop(cell.key, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.cells)
        if error is not None:
            self.console.print(f"[red]failed[/red] {cell.dir_name}: {error}", highlight=False)
        elif summary is not None:
            self.console.print(
                f"done {cell.dir_name}: {summary['success_rate']:.0%} "
                f"({summary['successes']}/{summary['episodes']}), {summary['mean_bits']:.0f} bits/episode",
                highlight=False,
            )
        self.tick()
