"""What the `lpca` commands print: tables that are never cut, JSON for scripts, progress that
degrades to log lines.

On a terminal rich does what it always does: the terminal's width, live progress bars.
Anywhere else (a pipe, a file, a CI log, typer's ``CliRunner``) there is no width to fit, so
a table gets the width it needs (no header or cell cut to "succ…", no line broken) and a
progress bar becomes one plain line on stderr every few seconds. Every command prints
through `console` and `print_table` and reports progress through `progress`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.table import Table

#: The width of a console that is not a terminal: wider than any table LPCA prints, so a
#: table is as wide as its content (its natural width) and a long line (a path) stays whole.
LOG_WIDTH = 1000
#: Seconds between two progress lines when stderr is not a terminal.
LOG_EVERY_S = 10.0

#: update(completed, total=None, description=None): move a progress display on.
Update = Callable[..., None]


class _Console(Console):
    """A rich `Console` that is `LOG_WIDTH` wide wherever it does not write to a terminal.

    Decided at each print, not at construction: the command modules create their consoles
    at import, before a test runner or a shell redirect has replaced stdout.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # rich also takes a width from $COLUMNS at construction; only an explicit width= counts
        # here, or a module imported while a test or shell had COLUMNS=80 would stay 80 wide
        self._explicit_width = kwargs.get("width") is not None
        super().__init__(*args, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if not self._explicit_width and not self.is_terminal:  # an explicit width= still wins
            return ConsoleDimensions(LOG_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that never cuts a table where there is no terminal."""
    return _Console(stderr=stderr)


def print_table(out: Console, table: Table) -> None:
    """Print `table` whole: a cell too wide for a narrow terminal folds onto the next line
    instead of ending in "…"; elsewhere `out` is wide enough that nothing folds."""
    for column in table.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    out.print(table)


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout, nothing else: for ``--json`` (progress goes to stderr)."""
    print(json.dumps(data, indent=2, default=str), flush=True)


@contextmanager
def progress(description: str, total: int | None = None, every_s: float = LOG_EVERY_S) -> Iterator[Update]:
    """Yield ``update(completed, total=None, description=None)`` for a long step.

    On a terminal: a transient rich progress bar on stderr. Elsewhere: a line
    ``description: completed/total (elapsed)`` on stderr at most every `every_s` seconds,
    whenever the description changes, and when the step completes.
    """
    err = console(stderr=True)
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)

            def update_bar(completed: int, total: int | None = None, description: str | None = None) -> None:
                changes: dict[str, Any] = {"completed": completed}
                if total is not None:
                    changes["total"] = total
                if description is not None:
                    changes["description"] = description
                bar.update(task, **changes)

            yield update_bar
        return

    t0 = time.monotonic()
    state = {"total": total, "description": description, "printed": -every_s, "done": None}

    def update_log(completed: int, total: int | None = None, description: str | None = None) -> None:
        now = time.monotonic() - t0
        changed = description is not None and description != state["description"]
        if total is not None:
            state["total"] = total
        if description is not None:
            state["description"] = description
        finished = state["total"] is not None and completed >= state["total"]
        if changed or finished or now - state["printed"] >= every_s:
            if (completed, state["description"]) == state["done"]:
                return  # the same line twice (a step reported complete again)
            of = f"/{state['total']}" if state["total"] is not None else ""
            err.print(f"{state['description']}: {completed}{of} ({now:.0f}s)", highlight=False, markup=False)
            state["printed"], state["done"] = now, (completed, state["description"])

    yield update_log
