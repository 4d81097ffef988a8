"""Bring your own split-information problem: `CustomTask` and `custom_env`.

A user supplies ``views_fn(rng) -> views`` (or ``(views, secret)``) and
``check_fn(answer, secret) -> bool | Verdict``; the secret defaults to the views.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lpca_envs.env import SplitInfoEnv
from lpca_envs.errors import TaskError
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance, Verdict


class _CustomVerifier:
    __slots__ = ("check_fn", "secret")

    def __init__(self, check_fn: Callable[[str, Any], bool | Verdict], secret: Any) -> None:
        self.check_fn = check_fn
        self.secret = secret

    def check(self, answer: str) -> Verdict:
        out = self.check_fn(answer, self.secret)
        if isinstance(out, Verdict):
            return out
        if isinstance(out, bool):
            return Verdict(out, float(out), "correct" if out else "wrong")
        raise TaskError(f"check_fn must return a bool or a Verdict, got {type(out).__name__}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CustomVerifier) and (self.check_fn, self.secret) == (
            other.check_fn,
            other.secret,
        )


class CustomTask(TaskFamily):
    """A `TaskFamily` made of plain functions.

    Args:
        views_fn: ``views_fn(rng: random.Random) -> {agent: text}`` or ``-> (views, secret)``.
        check_fn: ``check_fn(answer, secret) -> bool | Verdict``.
        info_bits: a number, or ``info_bits(secret) -> float``.
        name: used in the env id when registered.
        answerers: the agents that must answer (default: the last agent).
        oracle_fn: optional ``oracle_fn(secret) -> text`` the first agent sends to the answerers.
        solve_fn: optional ``solve_fn(view, received_texts, rng) -> answer`` for scripted agents.
        reference_fn: optional ``reference_fn(secret) -> answer``.
    """

    def __init__(
        self,
        views_fn: Callable[[random.Random], Any],
        check_fn: Callable[[str, Any], bool | Verdict],
        info_bits: float | Callable[[Any], float],
        *,
        name: str = "Custom",
        answerers: Sequence[str] | None = None,
        oracle_fn: Callable[[Any], str] | None = None,
        solve_fn: Callable[[str, Sequence[str], random.Random], str] | None = None,
        reference_fn: Callable[[Any], str] | None = None,
        rounds: int = 1,
    ) -> None:
        if not callable(views_fn) or not callable(check_fn):
            raise TaskError("views_fn and check_fn must be callables")
        if not callable(info_bits) and not (
            isinstance(info_bits, int | float) and math.isfinite(info_bits) and info_bits >= 0
        ):
            raise TaskError(
                f"info_bits must be a finite number >= 0 or a callable, got {info_bits!r}"
            )
        self.name = name
        self.levels = (0,)
        self.views_fn, self.check_fn, self._info_bits = views_fn, check_fn, info_bits
        self.oracle_fn, self.solve_fn, self.reference_fn = oracle_fn, solve_fn, reference_fn
        self._answerers = tuple(answerers) if answerers else None
        self._rounds = rounds
        probe_views, _ = self._draw(random.Random(0))
        self.agents = tuple(probe_views)
        if self._answerers and not set(self._answerers) <= set(self.agents):
            raise TaskError(
                f"answerers {list(self._answerers)} must be among the agents {list(self.agents)}"
            )

    def _draw(self, rng: random.Random) -> tuple[Mapping[str, str], Any]:
        out = self.views_fn(rng)
        if isinstance(out, Mapping):
            views, secret = out, out
        elif isinstance(out, tuple) and len(out) == 2:
            views, secret = out
        else:
            views, secret = None, None
        if (
            not isinstance(views, Mapping)
            or len(views) < 2
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in views.items())
        ):
            raise TaskError(
                "views_fn must return {agent: text} for at least two agents, or (views, secret); "
                f"got {type(out).__name__}"
            )
        return dict(views), secret

    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=self._rounds)

    def sample(self, rng: random.Random, level: int) -> Task:
        self.check_level(level)
        views, secret = self._draw(rng)
        if tuple(views) != self.agents:
            raise TaskError(f"views_fn returned agents {list(views)}, expected {list(self.agents)}")
        answerers = self._answerers or (self.agents[-1],)
        info = self._info_bits(secret) if callable(self._info_bits) else float(self._info_bits)
        oracle: tuple[Utterance, ...] = ()
        if self.oracle_fn is not None:
            sender = next(a for a in self.agents if a not in answerers)
            oracle = (Utterance(1, sender, answerers, self.oracle_fn(secret)),)
        reference = self.reference_fn(secret) if self.reference_fn else ""
        return Task(
            self.name,
            0,
            views,
            answerers,
            float(info),
            _CustomVerifier(self.check_fn, secret),
            oracle,
            reference,
            state=secret,
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        if self.solve_fn is None:
            raise TaskError(
                f"custom task {self.name!r} has no solve_fn, so scripted agents cannot answer it"
            )
        return self.solve_fn(task.views[agent], received, rng)


def custom_env(
    views_fn: Callable[[random.Random], Any],
    check_fn: Callable[[str, Any], bool | Verdict],
    info_bits: float | Callable[[Any], float],
    *,
    budget: Budget | None = None,
    **kwargs: Any,
) -> SplitInfoEnv:
    """A ready `SplitInfoEnv` over a `CustomTask` built from the same arguments."""
    return SplitInfoEnv(CustomTask(views_fn, check_fn, info_bits, **kwargs), 0, budget)
