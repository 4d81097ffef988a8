"""`lpca leaderboard SWEEP_DIR`: a sweep's cells -> tables per task family, plots, Markdown and HTML.

    from lpca_protocols.leaderboard import build_leaderboard
    board = build_leaderboard("sweeps/smoke")      # writes sweeps/smoke/leaderboard/
    board.families["SecretRelay"][0]["success"]

`table` aggregates the episode logs with polars, `plots` draws them with
matplotlib, `render` writes Markdown and a self-contained HTML page.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpca_protocols.episode_log import write_atomic
from lpca_protocols.leaderboard.plots import family_plots, pareto
from lpca_protocols.leaderboard.render import html_page, markdown
from lpca_protocols.leaderboard.table import CONTROLS, episodes_frame, leaderboard_frame, rows_frame
from lpca_protocols.stats import GATE_ALPHA, GATE_MIN_EPISODES, two_proportion_p
from lpca_protocols.sweep.store import sweep_cells

__all__ = [
    "CONTROLS",
    "Leaderboard",
    "build_leaderboard",
    "episodes_frame",
    "leaderboard_frame",
    "pareto",
    "rows_frame",
]


@dataclass
class Leaderboard:
    """What `build_leaderboard` wrote, and its rows per task family (dicts of numbers)."""

    out: Path
    families: dict[str, list[dict[str, Any]]]
    files: list[Path] = field(default_factory=list)


def build_leaderboard(root: str | Path, out: str | Path | None = None, *, plots: bool = True) -> Leaderboard:
    """Aggregate the sweep in `root` and write ``leaderboard.md``, ``leaderboard.html``,
    ``leaderboard.json`` and the PNG plots to `out` (default ``ROOT/leaderboard``)."""
    root = Path(root)
    cells = sweep_cells(root)  # raises a clear error on a directory that is not a sweep
    frame = leaderboard_frame(root)
    out = Path(out) if out is not None else root / "leaderboard"
    out.mkdir(parents=True, exist_ok=True)
    families: dict[str, list[dict[str, Any]]] = {}
    for row in frame.to_dicts():
        families.setdefault(row["family"], []).append(row)
    for rows in families.values():
        add_gate(rows)
    figures = {fam: family_plots(fam, rows, out) for fam, rows in families.items()} if plots else {}
    name = root.name
    manifest = root / "sweep.json"
    if manifest.exists():
        name = json.loads(manifest.read_text()).get("name", name)
    n = sum(r["n"] for rows in families.values() for r in rows)
    commit = _commit(cells[0][0])
    notes = [
        f"Sweep {name!r}: {len(cells)} cells, {n} episodes (controls included in the cells). "
        f"Built {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC from {root} at commit {commit}.",
        "budget: bits per message; success: mean over n episodes with its 95% Wilson interval; "
        "bits/ep: mean bits that crossed per episode; x info: that over the task's info_bits (the floor); "
        "tokens: generated tokens per episode; s/ep: wall time per episode (batched phases divided by the "
        "batch size). Control columns (null, shuffle, random): the same protocol with that control. "
        f"gate: pass when success beats every control and P0 on the same episodes (one-sided "
        f"two-proportion test, p < {GATE_ALPHA}); * marks fewer than the {GATE_MIN_EPISODES} episodes "
        "the codec gate requires (indicative).",
        f"Regenerate: lpca leaderboard {root}",
    ]
    title = f"LPCA leaderboard: {name}"
    files = [out / "leaderboard.md", out / "leaderboard.html", out / "leaderboard.json"]
    write_atomic(files[0], markdown(title, families, notes, figures))
    write_atomic(files[1], html_page(title, families, notes, figures))
    write_atomic(files[2], json.dumps(families, indent=2))
    files += [p for ps in figures.values() for p in ps]
    return Leaderboard(out, families, files)


def add_gate(rows: list[dict[str, Any]]) -> None:
    """Set ``gate`` ("pass", "fail", "pass*", "fail*" or None) and ``gate_p`` on rows with controls.

    A row passes when its success beats each of its controls and the P0 row (channel ``none``)
    of the same level and model, each with p < `GATE_ALPHA`; the star marks n < 200.
    """
    p0 = {(r["level"], r["model"]): r for r in rows if r["channel"] == "none" and not r["options"]}
    for r in rows:
        r["gate"], r["gate_p"] = None, None
        refs = [
            (round(r[f"{c}_success"] * r[f"{c}_n"]), r[f"{c}_n"])
            for c in CONTROLS
            if r.get(f"{c}_success") is not None
        ]
        if not refs:
            continue
        floor = p0.get((r["level"], r["model"]))
        if floor is not None:
            refs.append((floor["successes"], floor["n"]))
        worst = max(two_proportion_p(r["successes"], r["n"], k, n) for k, n in refs)
        ok = worst < GATE_ALPHA and floor is not None and len(refs) == len(CONTROLS) + 1
        star = "" if r["n"] >= GATE_MIN_EPISODES else "*"
        r["gate"], r["gate_p"] = ("pass" if ok else "fail") + star, worst


def _commit(cell_dir: Path) -> str:
    try:
        return json.loads((cell_dir / "meta.json").read_text()).get("git_commit", "unknown")[:12]
    except (OSError, json.JSONDecodeError):
        return "unknown"
