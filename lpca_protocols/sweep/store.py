"""The sweep directory: one run directory per cell, a manifest, and what is already done.

    SWEEP_DIR/
      sweep.json            the resolved config and the grid's cells (rewritten at each start)
      sweep.toml            the config file as given
      cells/<env>-L<level>-<channel>-<key>/
        cell.json           what the leaderboard needs: label, family, resolved run config
        config.json, meta.json, episodes.jsonl, summary.json   (the runner's run directory)
      leaderboard/          written by `lpca leaderboard SWEEP_DIR`

A cell's directory name ends in its config hash, so restarting a sweep (or running a
bigger one into the same directory) finds finished and partial cells again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lpca_protocols.episode_log import write_atomic
from lpca_protocols.sweep.config import SweepConfig, SweepError
from lpca_protocols.sweep.grid import Cell


class SweepStore:
    """Reads and writes one sweep directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise SweepError(f"sweep directory {str(self.root)!r} exists and is not a directory")
        self._counts: dict[Path, tuple[int, int]] = {}

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def cell_dir(self, cell: Cell) -> Path:
        return self.cells_dir / cell.dir_name

    def prepare(self, cfg: SweepConfig, cells: list[Cell], source: str | None = None) -> None:
        """Write the manifest and every cell's ``cell.json`` (before any cell runs)."""
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            "name": cfg.name,
            "config": cfg.model_dump(mode="json"),
            "cells": [{"key": c.key, "dir": c.dir_name, "label": c.label} for c in cells],
        }
        write_atomic(self.root / "sweep.json", json.dumps(manifest, indent=2))
        if source is not None:
            write_atomic(self.root / "sweep.toml", source)
        for c in cells:
            d = self.cell_dir(c)
            d.mkdir(exist_ok=True)
            if not (d / "cell.json").exists():
                write_atomic(d / "cell.json", json.dumps(c.describe(), indent=2, default=str))

    def done(self, cell: Cell) -> int:
        """Episodes of `cell` on disk (complete lines; cached while the file does not grow)."""
        path = self.cell_dir(cell) / "episodes.jsonl"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        cached = self._counts.get(path)
        if cached is not None and cached[0] == size:
            return cached[1]
        with open(path, "rb") as f:
            n = f.read().count(b"\n")
        self._counts[path] = (size, n)
        return n

    def complete(self, cell: Cell) -> bool:
        return self.done(cell) >= cell.episodes and (self.cell_dir(cell) / "summary.json").exists()


def sweep_cells(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run directory, cell.json) of the sweep's current grid, in grid order.

    The grid is the one in ``sweep.json``; a directory holding cells but no manifest
    (copied cell directories, say) yields every cell found.
    """
    root = Path(root)
    if not root.is_dir():
        raise SweepError(f"{str(root)!r} is not a sweep directory (expected the --out of `lpca sweep`)")
    manifest = root / "sweep.json"
    if manifest.exists():
        dirs = [root / "cells" / c["dir"] for c in json.loads(manifest.read_text())["cells"]]
    else:
        dirs = sorted(p.parent for p in (root / "cells").glob("*/cell.json"))
    out = []
    for d in dirs:
        if (d / "cell.json").exists():
            out.append((d, json.loads((d / "cell.json").read_text())))
    if not out:
        raise SweepError(
            f"{root} holds no sweep cells (no cells/*/cell.json); run `lpca sweep` into it first"
        )
    return out
