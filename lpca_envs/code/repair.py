"""CodeRepair: fix a seeded bug in a reference function; A has the code, B the test report.

A sees the function's spec and the buggy code; B sees the report of running the
hidden tests on that code in the sandbox (failing calls, both sides of each
failed assert, exceptions), not the code. A answers with the fixed function;
success = every hidden test passes in the sandbox.

Corpus: `repair_corpus.CORPUS`, 48 functions written for LPCA in three tiers.
Bugs come from `mutate.py`; `tables.py` keeps the mutants that fail a test.

| level | functions | bug                                                         |
|-------|-----------|-------------------------------------------------------------|
| 0     | tier 0    | one token (operator, comparison, constant +-1, and/or...)   |
| 1     | tiers 0-1 | one structural bug (swapped arguments/operands, negated      |
|       |           | condition, range bound +-1, dropped guard clause)           |
| 2     | tiers 1-2 | two bugs on different lines (any kinds)                     |

info_bits: log2 of the number of candidate fixes of the level's kinds in the buggy
code (level 2: pairs of them), see `tables.candidate_count`. It is what B's report
must single out for a reader who only has the code; a reader who uses the spec may
need less, so it is an upper bound for that reader (and for the dropped guard the
count is of positions, the guard's text being read from the failing test).
"""

from __future__ import annotations

from functools import cache

from lpca_envs.code.family import SplitCodeFamily
from lpca_envs.code.repair_corpus import CORPUS
from lpca_envs.code.tables import Problem, Source, decode_problem, load_raw, source_hash
from lpca_envs.code.verify import TestSuite

_LEVELS_BY_TIER = {0: (0, 1), 1: (1, 2), 2: (2,)}


def _suite(name: str, tests: str) -> TestSuite:
    # The references run in microseconds: a call that takes a second is a loop that will not end.
    return TestSuite(name, tests, call_timeout=1.0, budget=4.0)


def repair_sources() -> list[Source]:
    return [Source(r.name, r.name, r.code, _suite(r.name, r.tests), _LEVELS_BY_TIER[r.tier]) for r in CORPUS]


@cache
def _problems() -> dict[str, Problem]:
    raw = load_raw("repair")["problems"]
    out = {}
    for r in CORPUS:
        suite = _suite(r.name, r.tests)
        entry = raw.get(r.name)
        if entry is None or entry["hash"] != source_hash(r.code, suite):
            raise RuntimeError(
                f"the repair table is stale for {r.name!r}; rebuild it: "
                "python -m lpca_envs.code build-tables repair"
            )
        out[r.name] = decode_problem(r.name, entry, r.name, r.code, suite, r.spec, r.tier)
    return out


class CodeRepair(SplitCodeFamily):
    name = "CodeRepair"
    description = (
        "A has a function's spec and buggy code, B the sandboxed test report; A answers the fixed function."
    )

    def problems(self) -> dict[str, Problem]:
        return _problems()

    def view_a(self, p: Problem, buggy: str) -> str:
        return (
            f"You are A. Specification: {p.spec}\n\n"
            f"Your current implementation fails some hidden tests, which you cannot run:\n"
            f"```python\n{buggy}```\n"
            "Your partner B sees the test results but not your code. Answer with the corrected "
            f"complete function `{p.entry}` in Python."
        )

    def view_b(self, p: Problem, report: str) -> str:
        return (
            f"You are B. Your partner A is fixing a Python function `{p.entry}` that you cannot see. "
            "Running the hidden tests on A's current code showed:\n"
            f"{report}\n"
            "Help A find and fix the bug; A submits the answer."
        )
