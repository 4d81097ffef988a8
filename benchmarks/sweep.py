"""Run a leaderboard sweep: the same command as `lpca sweep`.

    python benchmarks/sweep.py CONFIG [--out DIR] [--executor local|ray] [--workers N] [--address ADDR]

See benchmarks/leaderboard/leaderboard.toml for a config
and README "Sweeps and leaderboards". Then: `lpca leaderboard SWEEP_DIR`.
"""

from __future__ import annotations

import typer

from lpca_protocols.sweep.cli import sweep

if __name__ == "__main__":
    typer.run(sweep)
