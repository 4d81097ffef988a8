"""`lpca calibrate`: the competence table. Is a task family fair for a model?

A family at a level tests communication, for a model, when the model can do the task
once it knows everything (the skyline), cannot do it alone (P0 near chance), and can
read what a perfect partner would say (oracle-text). Only then does P1, or any latent
channel, measure how well agents talk rather than how well the model computes.

Every column of a row runs on the same seeded episodes (seeds ``seed .. seed +
episodes - 1``; the runner and the scripted agents both reset the env with them):

- chance: the scripted ``silent`` team (answers from its own view; no model);
- P0 (``none``), skyline, oracle-text and P1 (``text``): the model, through the runner.

A row is fair when all of `CRITERIA` hold (boundaries inclusive). One model load
serves every cell. A family that cannot run here (a code family without a sandbox)
gets a skipped row with the reason.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lpca_envs
from lpca_envs.code import SplitCodeFamily
from lpca_envs.code.sandbox import SandboxUnavailable, resolve_kind
from lpca_envs.errors import LPCAError
from lpca_protocols.runner import _git_commit, _versions, run
from lpca_protocols.stats import wilson

#: Fairness thresholds (issue 15): skyline at least this...
SKYLINE_MIN = 0.85
#: ...P0 at most chance plus this...
P0_MARGIN = 0.10
#: ...and the model reading the oracle's text at least this.
ORACLE_TEXT_MIN = 0.80
#: Criterion names, as `CalibrationRow.failed` lists them.
CRITERIA = ("skyline", "P0", "oracle-text")
#: (column, channel) pairs the model runs, in table order.
MODEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("P0", "none"),
    ("skyline", "skyline"),
    ("oracle-text", "oracle-text"),
    ("P1", "text"),
)
_EPS = 1e-9  # rates are k/n floats: 0.7 + 0.1 must not fall below 0.8

Progress = Callable[[int, int, str], None]
"""progress(episodes done, episodes in all, what runs now)."""


class CalibrationError(LPCAError, ValueError):
    """Calibration was asked for cells, episodes or seeds that do not exist."""


@dataclass(frozen=True)
class Column:
    """One protocol's outcomes on a cell's episodes, aligned with `seeds`."""

    label: str
    """chance, P0, skyline, oracle-text or P1."""
    seeds: tuple[int, ...]
    task_ids: tuple[str, ...]
    outcomes: tuple[bool, ...]
    mean_bits: float
    s_per_episode: float

    @property
    def episodes(self) -> int:
        return len(self.outcomes)

    @property
    def successes(self) -> int:
        return sum(self.outcomes)

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.outcomes else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson(self.successes, self.episodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "successes": self.successes,
            "episodes": self.episodes,
            "success_rate": self.rate,
            "ci95": list(self.ci95),
            "mean_bits": self.mean_bits,
            "s_per_episode": self.s_per_episode,
            "seeds": list(self.seeds),
            "task_ids": list(self.task_ids),
            "outcomes": "".join("1" if o else "0" for o in self.outcomes),
        }


def judge(chance: float, p0: float, skyline: float, oracle_text: float) -> tuple[str, ...]:
    """The criteria (of `CRITERIA`) that these success rates fail; empty when the cell is fair."""
    failed = []
    if skyline < SKYLINE_MIN - _EPS:
        failed.append("skyline")
    if p0 > chance + P0_MARGIN + _EPS:
        failed.append("P0")
    if oracle_text < ORACLE_TEXT_MIN - _EPS:
        failed.append("oracle-text")
    return tuple(failed)


@dataclass(frozen=True)
class CalibrationRow:
    """One (model, env, level) cell of the competence table."""

    model: str
    fingerprint: str
    env_id: str
    family: str
    level: int
    seed: int
    episodes: int
    columns: dict[str, Column]
    """chance, P0, skyline, oracle-text, P1; empty when skipped."""
    info_bits: float | None = None
    """Mean info_bits of the episodes."""
    skipped: str | None = None
    """Why the cell could not run here (None when it ran)."""

    @property
    def failed(self) -> tuple[str, ...]:
        """The fairness criteria this cell fails (empty when fair or skipped)."""
        if self.skipped:
            return ()
        c = self.columns
        return judge(c["chance"].rate, c["P0"].rate, c["skyline"].rate, c["oracle-text"].rate)

    @property
    def fair(self) -> bool | None:
        """skyline >= 85%, P0 <= chance + 10 points and oracle-text >= 80%; None when skipped."""
        return None if self.skipped else not self.failed

    @property
    def p1_bits(self) -> float | None:
        return None if self.skipped else self.columns["P1"].mean_bits

    @property
    def oracle_text_bits(self) -> float | None:
        return None if self.skipped else self.columns["oracle-text"].mean_bits

    @property
    def s_per_episode(self) -> float | None:
        """Model seconds per episode, summed over the model's columns (what calibrating costs)."""
        if self.skipped:
            return None
        return sum(self.columns[label].s_per_episode for label, _ in MODEL_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "env_id": self.env_id,
            "family": self.family,
            "level": self.level,
            "seed": self.seed,
            "episodes": self.episodes,
            "skipped": self.skipped,
            "fair": self.fair,
            "failed": list(self.failed),
            "info_bits": self.info_bits,
            "p1_bits": self.p1_bits,
            "oracle_text_bits": self.oracle_text_bits,
            "s_per_episode": self.s_per_episode,
            "columns": {k: c.to_dict() for k, c in self.columns.items()},
        }


def select_cells(
    envs: Sequence[str] | None = None, levels: Sequence[int] | None = None
) -> list[tuple[str, int]]:
    """The (env id, level) cells: `envs` (default every registered id) x `levels` (default each family's).

    A named env without one of `levels` raises; with every env, those lacking a level are left out.
    """
    known = lpca_envs.list_envs()
    bad = [e for e in envs or [] if e not in known]
    if bad:
        raise CalibrationError(f"unknown env id(s) {bad}; known ids: {', '.join(known)}")
    cells = []
    for env_id in envs or known:
        have = lpca_envs.get_family(env_id).levels
        for lv in levels or []:
            if envs and lv not in have:
                raise CalibrationError(f"{env_id}: level must be one of {list(have)}, got {lv!r}")
        cells += [(env_id, lv) for lv in have if not levels or lv in levels]
    if not cells:
        raise CalibrationError(f"no registered env has level(s) {list(levels or [])}")
    return list(dict.fromkeys(cells))


def calibrate(
    model: str,
    cells: Sequence[tuple[str, int]] | None = None,
    episodes: int = 64,
    seed: int = 0,
    backend: str = "torch",
    agent: Any = None,
    progress: Progress | None = None,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 24,
    on_row: Callable[[CalibrationRow], None] | None = None,
) -> list[CalibrationRow]:
    """The competence table of `model` on `cells` (default: every env at every level).

    `agent` is a ready `LMAgent` (else `model` is loaded once with `backend`);
    `max_new_tokens` bounds answers, as in the runner. `on_row` is called with each row as
    soon as its cell is done (in cell order), so a long table can be saved as it grows.
    """
    cells = _check(cells, episodes, seed)
    if agent is None:
        import lpca_models
        from lpca_models.agents import LMAgent

        agent = LMAgent(lpca_models.load(model, backend=backend), max_new_tokens=max_new_tokens)
    fingerprint = agent.backend.info.fingerprint
    per_cell = episodes * (1 + len(MODEL_COLUMNS))
    total, done = len(cells) * per_cell, 0

    def tick(n: int, what: str) -> None:
        if progress is not None:
            progress(done + n, total, what)

    rows = []
    for env_id, level in cells:
        family = lpca_envs.get_family(env_id)
        head = dict(
            model=model, fingerprint=fingerprint, env_id=env_id, family=family.name, level=level, seed=seed
        )
        reason = _cannot_run(family)
        columns: dict[str, Column] = {}
        info_bits = None
        if reason is None:
            try:
                tick(0, f"{family.name} L{level} chance")
                columns["chance"], info_bits = _chance(env_id, level, episodes, seed)
                for i, (label, channel) in enumerate(MODEL_COLUMNS):
                    base = episodes * (1 + i)
                    what = f"{family.name} L{level} {label}"
                    tick(base, what)
                    r = run(
                        env_id,
                        channel,
                        model,
                        agent=agent,
                        out_dir=None,
                        level=level,
                        episodes=episodes,
                        seed=seed,
                        backend=backend,
                        batch_size=batch_size,
                        max_new_tokens=max_new_tokens,
                        progress=lambda d, _t, b=base, w=what: tick(b + d, w),
                    )
                    columns[label] = _column(label, r.records, r.summary["mean_time_s"])
            except SandboxUnavailable as e:
                reason, columns, info_bits = f"no code sandbox: {e}", {}, None
        if columns:
            _check_same_episodes(env_id, level, columns)
        rows.append(
            CalibrationRow(**head, episodes=episodes, columns=columns, info_bits=info_bits, skipped=reason)
        )
        if on_row is not None:
            on_row(rows[-1])
        done += per_cell
        tick(0, f"{family.name} L{level} done")
    return rows


def _check(cells: Sequence[tuple[str, int]] | None, episodes: int, seed: int) -> list[tuple[str, int]]:
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise CalibrationError(f"episodes must be an int >= 1, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CalibrationError(f"seed must be an int >= 0, got {seed!r}")
    if cells is None:
        return select_cells()
    out = []
    for cell in cells:
        if not (isinstance(cell, tuple) and len(cell) == 2):
            raise CalibrationError(f"a cell is an (env id, level) pair, got {cell!r}")
        out += select_cells([cell[0]], [cell[1]])
    if not out:
        raise CalibrationError("no cells to calibrate: expected at least one (env id, level) pair")
    return list(dict.fromkeys(out))


def _cannot_run(family: Any) -> str | None:
    """Why `family`'s episodes cannot be verified here, or None (code families need a sandbox)."""
    if not isinstance(family, SplitCodeFamily):
        return None
    try:
        resolve_kind(family.sandbox)
    except SandboxUnavailable as e:
        return f"no code sandbox: {e}"
    return None


def _chance(env_id: str, level: int, episodes: int, seed: int) -> tuple[Column, float]:
    """The scripted silent team on the runner's seeds (`evaluate_scripted`, episode by episode)."""
    env = lpca_envs.make(env_id, level=level)
    rng = random.Random(seed)  # as evaluate_scripted: one guess stream over the block
    t = time.perf_counter()
    results = [lpca_envs.play_episode(env, "silent", seed=s, rng=rng) for s in range(seed, seed + episodes)]
    dt = (time.perf_counter() - t) / episodes
    col = Column(
        "chance",
        tuple(range(seed, seed + episodes)),
        tuple(r.task_id for r in results),
        tuple(r.success for r in results),
        sum(r.bits for r in results) / episodes,
        dt,
    )
    return col, sum(r.info_bits for r in results) / episodes


def _column(label: str, records: list[dict[str, Any]], s_per_episode: float) -> Column:
    return Column(
        label,
        tuple(r["seed"] for r in records),
        tuple(r["task_id"] for r in records),
        tuple(bool(r["success"]) for r in records),
        sum(r["bits"] for r in records) / len(records),
        s_per_episode,
    )


def _check_same_episodes(env_id: str, level: int, columns: dict[str, Column]) -> None:
    ref = columns["chance"]
    for c in columns.values():
        if (c.seeds, c.task_ids) != (ref.seeds, ref.task_ids):
            raise CalibrationError(
                f"{env_id} level {level}: column {c.label} ran other episodes than chance "
                f"(seeds {c.seeds[:3]}..., tasks {c.task_ids[:3]}...); expected {ref.task_ids[:3]}..."
            )


# --------------------------------------------------------------------------- output


def fmt_rate(c: Column) -> str:
    """``88% [71-96]``: success rate and its 95% Wilson interval, in percent."""
    lo, hi = c.ci95
    return f"{c.rate:.0%} [{lo * 100:.0f}-{hi * 100:.0f}]"


def _fmt_bits(row: CalibrationRow) -> str:
    """P1 bits / oracle-text bits / info_bits, per episode."""
    return f"{row.p1_bits:.0f}/{row.oracle_text_bits:.0f}/{row.info_bits:.1f}"


def _fmt_fair(row: CalibrationRow, notes: dict[str, int]) -> str:
    if row.skipped:
        return f"skipped [{notes.setdefault(row.skipped, len(notes) + 1)}]"
    return "yes" if row.fair else "no: " + ", ".join(row.failed)


def skip_notes(rows: Sequence[CalibrationRow]) -> dict[str, int]:
    """Each distinct skip reason and its footnote number (many cells share one reason)."""
    notes: dict[str, int] = {}
    for row in rows:
        if row.skipped:
            notes.setdefault(row.skipped, len(notes) + 1)
    return notes


TABLE_HEAD = (
    "family",
    "L",
    "chance",
    "P0",
    "skyline",
    "oracle-text",
    "P1",
    "bits P1/oracle/info",
    "s/ep",
    "fair",
)


def table_cells(row: CalibrationRow, notes: dict[str, int]) -> list[str]:
    """One row of the competence table as text, in `TABLE_HEAD` order (`notes`: see `skip_notes`)."""
    if row.skipped:
        return [row.family, str(row.level), *["-"] * 7, _fmt_fair(row, notes)]
    c = row.columns
    rates = [fmt_rate(c[k]) for k in ("chance", "P0", "skyline", "oracle-text", "P1")]
    s_ep = f"{row.s_per_episode:.2f}"
    return [row.family, str(row.level), *rates, _fmt_bits(row), s_ep, _fmt_fair(row, notes)]


def _footer(rows: Sequence[CalibrationRow]) -> list[str]:
    lines = [f"Cells: success rate [95% Wilson interval]; {_criteria_text()}."]
    lines += [f"[{n}] {reason}" for reason, n in skip_notes(rows).items()]
    return lines


def rich_table(rows: Sequence[CalibrationRow], title: str) -> Any:
    """The competence table as a rich `Table` (see `print_table` for narrow consoles)."""
    from rich import box
    from rich.table import Table

    notes = skip_notes(rows)
    caption = "\n".join(_footer(rows))
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=caption, caption_justify="left")
    for name in TABLE_HEAD:
        table.add_column(name, justify="left" if name in ("family", "fair") else "right")
    for row in rows:
        table.add_row(*table_cells(row, notes))
    return table


def print_table(console: Any, rows: Sequence[CalibrationRow], title: str) -> None:
    """Print the table, or, where it does not fit `console`, one block per cell whose items wrap
    between one another, so a narrow terminal never cuts or splits a figure."""
    from rich.measure import Measurement

    table = rich_table(rows, title)
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    notes = skip_notes(rows)
    console.print(title, style="bold", highlight=False)
    for row in rows:
        cells = dict(zip(TABLE_HEAD, table_cells(row, notes), strict=True))
        console.print(f"{row.family} L{row.level}: fair {cells['fair']}", style="bold", highlight=False)
        if row.skipped:
            continue
        line = ""
        for item in (f"{k} {cells[k]}" for k in TABLE_HEAD[2:-1]):
            if line and 2 + len(line) + 2 + len(item) > console.width:
                console.print("  " + line, highlight=False, overflow="fold")
                line = ""
            line = f"{line}  {item}" if line else item
        console.print("  " + line, highlight=False, overflow="fold")
    for note in _footer(rows):
        console.print(note, highlight=False)


def markdown(rows: Sequence[CalibrationRow], command: str | None = None) -> str:
    """The competence table as Markdown, for benchmarks/RESULTS.md (model column included)."""
    head = ("model", "episodes", *TABLE_HEAD)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = skip_notes(rows)
    for row in rows:
        cells = [row.model, str(row.episodes), *table_cells(row, notes)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    foot = _footer(rows)
    if command:
        foot.append(f"Command: `{command}` (commit {_git_commit()[:12]}).")
    return "\n".join(lines) + "\n\n" + "\n\n".join(foot) + "\n"


def write_json(path: str | Path, rows: Sequence[CalibrationRow], command: str | None = None) -> Path:
    """Write `json_doc` to `path`."""
    return _write_atomic(path, json.dumps(json_doc(rows, command), indent=2) + "\n")


def json_doc(rows: Sequence[CalibrationRow], command: str | None = None) -> dict[str, Any]:
    """Every row with its per-episode outcomes, the command, model fingerprint(s) and git commit."""
    return {
        "command": command,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": _versions(),
        "models": {r.model: r.fingerprint for r in rows},
        "criteria": {"skyline_min": SKYLINE_MIN, "p0_margin": P0_MARGIN, "oracle_text_min": ORACLE_TEXT_MIN},
        "rows": [r.to_dict() for r in rows],
    }


def write_markdown(path: str | Path, rows: Sequence[CalibrationRow], command: str | None = None) -> Path:
    return _write_atomic(path, markdown(rows, command))


def _write_atomic(path: str | Path, text: str) -> Path:
    """Write through a temporary file and rename: a reader (or a kill) never sees half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _criteria_text() -> str:
    return (
        f"fair = skyline >= {SKYLINE_MIN:.0%}, P0 <= chance + {P0_MARGIN * 100:.0f} points, "
        f"oracle-text >= {ORACLE_TEXT_MIN:.0%}"
    )
