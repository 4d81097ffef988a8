"""`Task`, `Verdict`, `TaskFamily`: one problem instance, its verdict, its generator."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b as _blake2b
from typing import Any, Protocol

from lpca_envs._records import fast_init
from lpca_envs.errors import TaskError
from lpca_envs.messages import Budget


@fast_init
@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's decision on one answer. ``detail`` says why, for people."""

    success: bool
    score: float
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"success": self.success, "score": self.score, "detail": self.detail}


class Verifier(Protocol):
    """Anything with ``check(answer: str) -> Verdict``; kept on the task."""

    def check(self, answer: str) -> Verdict: ...


@fast_init
@dataclass(frozen=True, slots=True)
class Utterance:
    """One line of an oracle transcript: what a perfect agent says in `round` (1-based)."""

    round: int
    sender: str
    recipients: tuple[str, ...]
    text: str


@fast_init
@dataclass(frozen=True, slots=True)
class Task:
    """One problem instance.

    ``views`` is each agent's private text. ``answerers`` must answer; the episode
    ends when all of them have. ``info_bits`` is the exact entropy, under the
    family's generator, of what must cross for the task to be solvable (each
    family documents its count; ``info_detail`` names the parts and alternatives,
    e.g. the one-way cost of a task that is cheaper two-way). ``oracle`` is what a
    perfect sender would say; ``reference`` a correct answer. ``state`` holds the
    generator's structured data for scripted agents; it is never shown to agents.
    """

    family: str
    level: int
    views: Mapping[str, str]
    answerers: tuple[str, ...]
    info_bits: float
    verifier: Verifier
    oracle: tuple[Utterance, ...]
    reference: str
    info_detail: Mapping[str, float] = field(default_factory=dict)
    state: Any = None
    task_id: str = ""
    oracle_rounds: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        oracle = self.oracle
        n = len(oracle) if type(oracle) is tuple else -1
        if n == 1:
            rounds = oracle[0].round  # what max() returns for one or two items
        elif n == 2:
            rounds, second = oracle[0].round, oracle[1].round
            if second > rounds:
                rounds = second
        else:
            rounds = max([u.round for u in oracle], default=0)
        object.__setattr__(self, "oracle_rounds", rounds)
        if not self.task_id:
            object.__setattr__(self, "task_id", _task_id(self.family, self.level, self.views))

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(self.views)

    def check(self, answer: str) -> Verdict:
        """Score `answer` with the task's verifier (tolerant of format, strict on content)."""
        return self.verifier.check(answer)


def _task_id(family: str, level: int, views: Mapping[str, str]) -> str:
    """``family/level/<blake2b-64 of family, level and "\\x00agent\\x01view" per agent, sorted>``."""
    lv = str(level)
    # One update with the concatenation (the same digest as one update per part); the
    # common two-agent dict of str is formatted in one go.
    if type(views) is dict and len(views) == 2 and type(family) is str:
        (a, va), (b, vb) = views.items()
        if type(a) is str and type(b) is str and type(va) is str and type(vb) is str:
            if b < a:
                a, va, b, vb = b, vb, a, va
            text = f"{family}{lv}\x00{a}\x01{va}\x00{b}\x01{vb}"
            return f"{family}/{level}/{_blake2b(text.encode(), digest_size=8).hexdigest()}"
    h = _blake2b(digest_size=8)
    h.update(family.encode())
    h.update(lv.encode())
    for agent in sorted(views):
        h.update(b"\x00" + agent.encode() + b"\x01" + views[agent].encode())
    return f"{family}/{level}/{h.hexdigest()}"


class TaskFamily(ABC):
    """A seeded generator of tasks with difficulty levels.

    Subclasses set ``name`` (CamelCase, used in env ids), ``levels`` and
    ``agents``, and implement `sample` (deterministic given the rng) and
    `solve` (the scripted policy used by the silent/oracle/skyline agents).
    """

    name: str = ""
    description: str = ""
    levels: tuple[int, ...] = (0, 1, 2)
    agents: tuple[str, ...] = ("A", "B")
    #: one line, for the README and `lpca envs`: how info_bits is counted
    info_bits_doc: str = ""
    #: tokens an answer may need at least (a model runner's answer cap never goes below it):
    #: one word or number by default; a whole function for the code families
    answer_tokens: int = 24

    def check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int) or level not in self.levels:
            raise TaskError(f"{self.name}: level must be one of {list(self.levels)}, got {level!r}")
        return level

    def default_budget(self, level: int) -> Budget:
        """Budget the registered env uses unless told otherwise: enough rounds for the oracle."""
        return Budget(max_rounds=1)

    @abstractmethod
    def sample(self, rng: random.Random, level: int) -> Task:
        """Draw one task. Must depend only on `rng`'s state and `level`."""

    @abstractmethod
    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        """Scripted answer of `agent` from its own private data and the texts it received.

        With nothing useful received it must guess as well as its own view allows
        (this is the `silent` floor); it must not read the other agents' private data
        out of ``task.state``.
        """

    def skyline_answer(self, task: Task) -> str:
        """Answer of an agent that sees every view (the skyline). Default: the reference."""
        return task.reference
