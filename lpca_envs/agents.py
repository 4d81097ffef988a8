"""Scripted agents that need no model: `silent` (the floor), `oracle` (the ceiling), `skyline`.

- ``silent``: sends nothing; answerers answer at once from their own view (chance level).
- ``oracle``: every agent says its lines of the task's oracle transcript in their
  round, as UTF-8 text; answerers answer after the last line has been *delivered*,
  parsing what actually arrived in their inbox.
- ``skyline``: no messages; the answerers see every view (the task's full state).

Scripted agents read their own private data from ``task.state`` (they are
programs, not readers of prose) but learn the others' data only from messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from lpca_envs.env import SplitInfoEnv, Violation
from lpca_envs.errors import TaskError
from lpca_envs.messages import Message
from lpca_envs.task import Task

ScriptedKind = Literal["silent", "oracle", "skyline"]
SCRIPTED_KINDS: tuple[str, ...] = ("silent", "oracle", "skyline")


class ScriptedAgent:
    """One scripted agent. Call `reset` with the episode's task, then `act` each step."""

    def __init__(
        self, name: str, kind: ScriptedKind, family: Any, rng: random.Random | None = None
    ) -> None:
        if kind not in SCRIPTED_KINDS:
            raise TaskError(
                f"scripted agent kind must be one of {list(SCRIPTED_KINDS)}, got {kind!r}"
            )
        self.name, self.kind, self.family = name, kind, family
        self.rng = rng if rng is not None else random.Random(0)
        self.task: Task | None = None
        self.received: list[str] = []

    def reset(self, task: Task) -> None:
        self.task = task
        self.received = []
        self._lines = {u.round: u for u in task.oracle if u.sender == self.name}
        self._answers = self.name in task.answerers

    def act(self, obs: dict[str, Any]) -> dict[str, Any] | None:
        task = self.task
        if task is None:
            raise TaskError("ScriptedAgent.act() called before reset(task)")
        for m in obs["inbox"]:
            self.received.append(m.as_text())
        r = obs["round"] + 1  # the round this action will be taken in
        action: dict[str, Any] = {}
        if self.kind == "oracle":
            u = self._lines.get(r)
            if u is not None:
                action["message"] = Message.text(self.name, u.recipients, u.text)
        if self._answers:
            if self.kind == "skyline":
                action["answer"] = self.family.skyline_answer(task)
            elif self.kind == "silent" or r > task.oracle_rounds:
                action["answer"] = (
                    self.family.solve(task, self.name, self.received, self.rng) or None
                )
        return action or None


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    """What one scripted episode produced."""

    task_id: str
    success: bool
    score: float
    bits: int
    info_bits: float
    rounds: int
    violations: tuple[Violation, ...]


def play_episode(
    env: SplitInfoEnv, kind: ScriptedKind, seed: int | None = None, rng: random.Random | None = None
) -> EpisodeResult:
    """Run one episode of `env` with all agents scripted as `kind`."""
    obs, _ = env.reset(seed=seed)
    task = env.task
    assert task is not None
    # The guesser's stream must not be the task generator's: the same seed would replay the secrets.
    rng = rng if rng is not None else random.Random(f"lpca-scripted-guess:{seed}")
    agents = [ScriptedAgent(a, kind, env.family, rng) for a in env.possible_agents]
    for ag in agents:
        ag.reset(task)
    while env.agents:
        actions = {ag.name: ag.act(obs[ag.name]) for ag in agents}
        obs, *_ = env.step(actions)
    v = env.verdict
    return EpisodeResult(
        task.task_id,
        v is not None and v.success,
        v.score if v is not None else 0.0,
        env.episode_bits,
        task.info_bits,
        env.round,
        tuple(env.violations),
    )


@dataclass(frozen=True, slots=True)
class ScriptedSummary:
    """Aggregate of `evaluate_scripted`: one (env, level, kind) cell."""

    kind: str
    episodes: int
    success_rate: float
    mean_bits: float
    mean_info_bits: float
    violations: int


def evaluate_scripted(
    env: SplitInfoEnv, kind: ScriptedKind, episodes: int, seed: int = 0
) -> ScriptedSummary:
    """Play `episodes` scripted episodes with seeds ``seed .. seed+episodes-1``."""
    if not isinstance(episodes, int) or episodes < 1:
        raise TaskError(f"episodes must be an int >= 1, got {episodes!r}")
    rng = random.Random(seed)
    wins = bits = viol = 0
    info = 0.0
    for s in range(seed, seed + episodes):
        r = play_episode(env, kind, seed=s, rng=rng)
        wins += r.success
        bits += r.bits
        info += r.info_bits
        viol += len(r.violations)
    return ScriptedSummary(kind, episodes, wins / episodes, bits / episodes, info / episodes, viol)
