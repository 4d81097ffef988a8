"""Leaderboard sweeps: a grid of (env, level, channel, options, budget, model, seeds) runs.

    from lpca_protocols.sweep import load_config, run_sweep
    result = run_sweep("benchmarks/leaderboard/leaderboard.toml", workers=2)

`config` validates the file, `grid` expands it into cells keyed by config hash,
`store` lays out the sweep directory and knows what is done, `executors` run cells
on local processes or Ray actors, `driver` ties them together with a progress view.
"""

from lpca_protocols.sweep.config import (
    UNLIMITED,
    ChannelSpec,
    EnvSpec,
    SweepConfig,
    SweepConfigError,
    SweepError,
    WorkerDiedError,
    load_config,
    parse_config,
)
from lpca_protocols.sweep.driver import SweepResult, run_sweep
from lpca_protocols.sweep.grid import Cell, expand
from lpca_protocols.sweep.store import SweepStore, sweep_cells

__all__ = [
    "UNLIMITED",
    "Cell",
    "ChannelSpec",
    "EnvSpec",
    "SweepConfig",
    "SweepConfigError",
    "SweepError",
    "SweepResult",
    "SweepStore",
    "WorkerDiedError",
    "expand",
    "load_config",
    "parse_config",
    "run_sweep",
    "sweep_cells",
]
