"""Grid expansion: a `SweepConfig` -> the list of `Cell`s, each one run of the runner.

A cell is a `RunConfig` (env, level, channel, options, budget, model, seed block,
episodes...) plus its leaderboard label; it is keyed by `RunConfig.key()`, the hash
of its resolved config, so the same cell in two sweeps is the same directory.
Every cell is checked against the registries (envs, levels, channels and their
options, models) before anything runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lpca_envs
from lpca_envs.errors import LPCAError
from lpca_protocols.runner import RunConfig, validate
from lpca_protocols.sweep.config import SweepConfig, SweepConfigError, budget_bits

SCRIPTED_MODEL = "scripted"


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    run: RunConfig
    label: str
    """Protocol name on the leaderboard (the channel's label, or ``scripted <kind>``)."""
    scripted: str | None = None
    """For model-free scripted teams: silent, oracle or skyline."""

    @property
    def key(self) -> str:
        return self.run.key()

    @property
    def episodes(self) -> int:
        return self.run.episodes

    @property
    def group(self) -> tuple[str, str]:
        """What a worker must have loaded to run this cell: (model, backend)."""
        return (self.run.model, self.run.backend)

    @property
    def dir_name(self) -> str:
        env = self.run.env_id.removeprefix("lpca/").replace("/", "_")
        return f"{env}-L{self.run.level}-{self.run.channel}-{self.key}"

    def describe(self) -> dict[str, Any]:
        """What the leaderboard needs to know about this cell (written as ``cell.json``)."""
        family = lpca_envs.get_family(self.run.env_id).name
        return {"key": self.key, "label": self.label, "scripted": self.scripted, "family": family} | asdict(
            self.run
        )


def expand(cfg: SweepConfig) -> list[Cell]:
    """Every cell of the grid, scripted ones first, then grouped by (model, backend)."""
    _check_envs(cfg)
    _check_channel_cells(cfg)
    _check_models(cfg)
    common = dict(episodes=cfg.episodes, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)
    cells: list[Cell] = []
    for env in cfg.envs:
        for level in env.levels:
            for kind in cfg.scripted:
                for seed in cfg.seeds:
                    rc = RunConfig(
                        env.id,
                        f"scripted-{kind}",
                        SCRIPTED_MODEL,
                        level=level,
                        seed=seed,
                        backend="none",
                        **common,
                    )
                    cells.append(Cell(rc, f"scripted {kind}", scripted=kind))
    for model in cfg.models:
        for env in cfg.envs:
            for level in env.levels:
                for i, ch in enumerate(cfg.channels):
                    if not ch.runs_on(env.id, level):
                        continue
                    for opts in ch.option_sets():
                        for b in ch.budgets or cfg.budgets:
                            for seed in cfg.seeds:
                                rc = RunConfig(
                                    env.id,
                                    ch.name,
                                    model,
                                    level=level,
                                    seed=seed,
                                    channel_options=opts,
                                    budget_bits_per_message=budget_bits(b),
                                    budget_bits_per_episode=ch.budget_bits_per_episode,
                                    rounds=ch.rounds,
                                    backend=cfg.backend,
                                    **common,
                                )
                                _check_cell(rc, f"channels[{i}] ({ch.name}, options {opts}, budget {b})")
                                cells.append(Cell(rc, ch.label or ch.name))
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.key in seen:
            raise SweepConfigError(
                f"the grid has the same cell twice ({c.run.env_id} level {c.run.level}, {c.label}, "
                f"options {c.run.channel_options}, budget {c.run.budget_bits_per_message}); "
                "remove the repeated channel, budget or level"
            )
        seen[c.key] = c
    return cells


def _check_envs(cfg: SweepConfig) -> None:
    known = lpca_envs.list_envs()
    for i, env in enumerate(cfg.envs):
        if env.id not in known:
            raise SweepConfigError(f"envs[{i}].id: unknown env id {env.id!r}; known ids: {', '.join(known)}")
        levels = list(lpca_envs.get_family(env.id).levels)
        bad = [lv for lv in env.levels if lv not in levels]
        if bad:
            raise SweepConfigError(f"envs[{i}].levels: {env.id} has levels {levels}, got {bad}")
        if len(set(env.levels)) != len(env.levels):
            raise SweepConfigError(f"envs[{i}].levels repeat a level: {env.levels}")


def _check_channel_cells(cfg: SweepConfig) -> None:
    swept = {(e.id, lv) for e in cfg.envs for lv in e.levels}
    for i, ch in enumerate(cfg.channels):
        for c in ch.cells or []:
            env, _, level = c.partition("@")
            hit = [k for k in swept if k[0] == env and (not level or k[1] == int(level))]
            if not hit:
                have = ", ".join(sorted(f"{e}@{lv}" for e, lv in swept))
                raise SweepConfigError(
                    f"channels[{i}].cells: {c!r} is not a task cell of this sweep's envs (they are: {have})"
                )


def _check_models(cfg: SweepConfig) -> None:
    """A model is a zoo id, a local Hugging Face directory or a .gguf file: whatever `get_spec` accepts."""
    from lpca_models import zoo  # light: no framework import
    from lpca_models.errors import ModelError

    for i, m in enumerate(cfg.models):
        # a per-agent spec ("A=id,B=id") names a model per agent; its agent names are checked per env
        ids = [part.partition("=")[2].strip() for part in m.split(",")] if "=" in m else [m]
        for model in ids:
            try:
                zoo.get_spec(model)
            except ModelError as e:
                raise SweepConfigError(f"models[{i}]: {e}") from None
    if len(set(cfg.models)) != len(cfg.models):
        raise SweepConfigError(f"models repeat a model: {cfg.models}")


def _check_cell(rc: RunConfig, where: str) -> None:
    try:
        validate(rc)
    except (LPCAError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise SweepConfigError(f"{where}: {msg}") from None
