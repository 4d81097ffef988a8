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

from lpca_envs._records import fast_init
from lpca_envs.env import SplitInfoEnv, Violation
from lpca_envs.errors import TaskError
from lpca_envs.messages import Message
from lpca_envs.task import Task, Utterance

ScriptedKind = Literal["silent", "oracle", "skyline"]
SCRIPTED_KINDS: tuple[str, ...] = ("silent", "oracle", "skyline")


class ScriptedAgent:
    """One scripted agent. Call `reset` with the episode's task, then `act` each step."""

    def __init__(self, name: str, kind: ScriptedKind, family: Any, rng: random.Random | None = None) -> None:
        if kind not in SCRIPTED_KINDS:
            raise TaskError(f"scripted agent kind must be one of {list(SCRIPTED_KINDS)}, got {kind!r}")
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
        inbox = obs["inbox"]
        if inbox:
            received = self.received
            for m in inbox:
                received.append(m.as_text())
        r = obs["round"] + 1  # the round this action will be taken in
        kind = self.kind
        action: dict[str, Any] | None = None
        if kind == "oracle":
            u = self._lines.get(r) if self._lines else None
            if u is not None:
                action = {"message": Message.text(self.name, u.recipients, u.text)}
        if self._answers:
            if kind == "skyline":
                answer = self.family.skyline_answer(task)
            elif kind == "silent" or r > task.oracle_rounds:
                answer = self.family.solve(task, self.name, self.received, self.rng) or None
            else:
                return action
            if action is None:
                return {"answer": answer}
            action["answer"] = answer
        return action


@fast_init
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
    """Run one episode of `env` with all agents scripted as `kind`.

    The agents are `ScriptedAgent`s, one per possible agent, unrolled here: the same
    actions from the same calls (``solve``/``skyline_answer``, the guesser `rng`) in the
    same order, without an object and a method call per agent and step.
    """
    obs, _ = env.reset(seed=seed)
    task = env.task
    assert task is not None
    # The guesser's stream must not be the task generator's: the same seed would replay the secrets.
    rng = rng if rng is not None else random.Random(f"lpca-scripted-guess:{seed}")
    if kind not in SCRIPTED_KINDS:
        raise TaskError(f"scripted agent kind must be one of {list(SCRIPTED_KINDS)}, got {kind!r}")
    family, oracle, answerers = env.family, task.oracle, task.answerers
    # Per agent, as ScriptedAgent.reset: its name, its oracle lines by round, whether it
    # answers, and the texts it has received.
    agents = []
    for a in env.possible_agents:
        lines: dict[int, Utterance] = {}
        for u in oracle:
            if u.sender == a:
                lines[u.round] = u
        agents.append((a, lines, a in answerers, []))
    speaks, skyline, silent = kind == "oracle", kind == "skyline", kind == "silent"
    last_line = task.oracle_rounds
    text = Message.text
    step = env.step
    while env.agents:
        actions: dict[str, dict[str, Any] | None] = {}
        for name, lines, answers, received in agents:  # ScriptedAgent.act, agent by agent
            o = obs[name]
            inbox = o["inbox"]
            if inbox:
                for m in inbox:
                    received.append(m.as_text())
            r = o["round"] + 1  # the round this action will be taken in
            action: dict[str, Any] | None = None
            if speaks and lines:
                u = lines.get(r)
                if u is not None:
                    action = {"message": text(name, u.recipients, u.text)}
            if answers:
                if skyline:
                    answer = family.skyline_answer(task)
                elif silent or r > last_line:
                    answer = family.solve(task, name, received, rng) or None
                else:
                    actions[name] = action
                    continue
                if action is None:
                    action = {"answer": answer}
                else:
                    action["answer"] = answer
            actions[name] = action
        obs = step(actions)[0]
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


def evaluate_scripted(env: SplitInfoEnv, kind: ScriptedKind, episodes: int, seed: int = 0) -> ScriptedSummary:
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
