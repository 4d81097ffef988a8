"""`SplitCodeFamily`: what the two code families share (views, oracle, verifier, scripted policy).

A holds the requirements and the current, buggy code and answers with the fixed
function; B sees only what running the hidden tests on that code showed (the
sandbox's report from the family's table). Neither can succeed reliably alone.

Oracle (two message rounds, then A answers):

1. A -> B: the current code ("attempt");
2. B -> A: the fix, as a unified diff against that code ("failures -> fix": B
   can produce it because it knows which tests fail and now the code);
3. A answers the patched function ("fix").

Scripted policy: A applies the first diff it received that applies exactly to its
code; with none (the silent floor), it applies a uniformly random candidate edit
of the level's kinds to its own code. ``info_bits`` = log2 of the number of those
candidates (see `tables.candidate_count`).

Verification runs the hidden tests in a sandbox (docker, else bwrap; or what the
family was built with / ``$LPCA_SANDBOX``): answers that are not Python or lack
the function fail at once, without a sandbox.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from lpca_envs.code.mutate import (
    apply_diff,
    apply_edits,
    compiles,
    structural_edits,
    token_edits,
    unified_diff,
)
from lpca_envs.code.tables import Problem, info_bits
from lpca_envs.code.verify import TestSuite, check_code
from lpca_envs.errors import TaskError
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance, Verdict

_MAX_REPORT_CHARS = 3500


@dataclass(frozen=True, slots=True)
class CodeTaskState:
    """Generator data for scripted agents (never shown to agents)."""

    problem: str
    variant: int
    buggy: str  # A's own code
    level: int


@dataclass(frozen=True, slots=True)
class CodeVerifier:
    """Runs `suite` on the answer in a sandbox (backend `sandbox`, or the default). Picklable."""

    suite: TestSuite
    sandbox: str | None = field(default=None, compare=False)

    def check(self, answer: str) -> Verdict:
        return check_code(self.suite, answer, kind=self.sandbox)[0]


class SplitCodeFamily(TaskFamily):
    """Base of the code families. Subclasses provide `problems()` and the view texts."""

    agents = ("A", "B")
    levels = (0, 1, 2)
    answer_tokens = 384  # the answer is a complete function
    #: the generic env tests run this many episodes per check (each verification is a sandbox run)
    episodes_for_generic_tests: ClassVar[int] = 20
    info_bits_doc = (
        "log2(number of candidate fixes of the level's bug kinds that a reader of the buggy code "
        "alone must choose among); an estimate, an upper bound for a reader who uses the spec"
    )

    def __init__(self, sandbox: str | None = None) -> None:
        self.sandbox = sandbox
        self._by_level: dict[int, list[tuple[str, int]]] | None = None

    # -- subclass hooks ---------------------------------------------------------------------
    def problems(self) -> dict[str, Problem]:
        raise NotImplementedError

    def view_a(self, p: Problem, buggy: str) -> str:
        raise NotImplementedError

    def view_b(self, p: Problem, report: str) -> str:
        raise NotImplementedError

    # -- TaskFamily -------------------------------------------------------------------------
    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=2)

    def _index(self) -> dict[int, list[tuple[str, int]]]:
        if self._by_level is None:
            by: dict[int, list[tuple[str, int]]] = {lv: [] for lv in self.levels}
            for key, p in sorted(self.problems().items()):
                for i, v in enumerate(p.variants):
                    by[v.level].append((key, i))
            self._by_level = by
        return self._by_level

    def sample(self, rng: random.Random, level: int) -> Task:
        level = self.check_level(level)
        pool = self._index()[level]
        if not pool:
            raise TaskError(f"{self.name}: no variants at level {level} in its table")
        key, i = pool[rng.randrange(len(pool))]
        p = self.problems()[key]
        v = p.variants[i]
        buggy = p.buggy(v)
        report = p.report(v).describe(p.suite.entry, with_output=False)
        if len(report) > _MAX_REPORT_CHARS:
            report = report[: _MAX_REPORT_CHARS - 4] + "\n..."
        views = {"A": self.view_a(p, buggy), "B": self.view_b(p, report)}
        diff = unified_diff(buggy, p.reference)
        return Task(
            family=self.name,
            level=level,
            views=views,
            answerers=("A",),
            info_bits=info_bits(v),
            verifier=CodeVerifier(p.suite, self.sandbox),
            oracle=(
                Utterance(1, "A", ("B",), f"My current code:\n{buggy}"),
                Utterance(2, "B", ("A",), f"Apply this fix (unified diff against your code):\n{diff}"),
            ),
            reference=p.reference,
            info_detail={
                "candidate_fixes": v.candidates,
                "bugs": len(v.edits),
                "hidden_tests": v.total,
                "failed_tests": v.total - v.passed,
            },
            state=CodeTaskState(key, i, buggy, level),
            task_id=f"{self.name}/{level}/{key}/{i}",
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        st: CodeTaskState = task.state
        for text in received:
            fixed = apply_diff(st.buggy, text)
            if fixed is not None and compiles(fixed):
                return fixed
        return guess_fix(st.buggy, st.level, rng)

    def skyline_answer(self, task: Task) -> str:
        return task.reference


def guess_fix(buggy: str, level: int, rng: random.Random) -> str:
    """The silent floor: apply random candidate edit(s) of the level's kinds to `buggy`."""
    tok = [e for e in token_edits(buggy) if compiles(apply_edits(buggy, [e]))]
    struct = [e for e in structural_edits(buggy) if compiles(apply_edits(buggy, [e]))]
    pool = tok if level == 0 else struct if level == 1 else tok + struct
    if not pool:
        return buggy
    if level < 2 or len(pool) < 2:
        return apply_edits(buggy, [rng.choice(pool)])
    for _ in range(20):
        a, b = rng.sample(pool, 2)
        if a.end <= b.start or b.end <= a.start:
            fixed = apply_edits(buggy, [a, b])
            if compiles(fixed):
                return fixed
    return apply_edits(buggy, [rng.choice(pool)])
