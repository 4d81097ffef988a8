"""Answer parsing and verifiers shared by the task families.

Tolerant where a person would be (whitespace, case, trailing punctuation, a
leading "The answer is"), strict about content: an answer naming two different
candidates is ambiguous and fails, it is never resolved in the answerer's favour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lpca_envs._records import fast_init
from lpca_envs.task import Verdict

_INT_SIMPLE = re.compile(r"[-−]?\d+")
_MARKED_INT = re.compile(
    r"(?:answer|result|value|solution)\s*(?:is|=|:)?\s*(?:\*\*)?\s*([-−]?\d+)|=\s*([-−]?\d+)\s*[.!]?\s*$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z][a-z_-]*")


def parse_int(answer: str) -> tuple[int | None, str]:
    """Extract one integer from free text. Returns (value, "") or (None, why)."""
    text = answer.strip().replace(",", "") if len(answer) < 20 else answer.strip()
    core = text.rstrip(".!?;:) ").lstrip("( ").replace("−", "-")
    if core.lstrip("-+").isdigit():
        return int(core), ""
    found = [int(m.replace("−", "-")) for m in _INT_SIMPLE.findall(text)]
    if not found:
        return None, f"expected an integer, found none in {_clip(answer)!r}"
    if len(set(found)) == 1:
        return found[0], ""
    marked = [m for m in _MARKED_INT.finditer(text)]
    if marked:
        values = {int((m.group(1) or m.group(2)).replace("−", "-")) for m in marked}
        if len(values) == 1:
            return values.pop(), ""
    return None, f"ambiguous: several integers {sorted(set(found))} in {_clip(answer)!r}"


def parse_choice(answer: str, choices: frozenset[str]) -> tuple[str | None, str]:
    """Find exactly one of `choices` (lowercase words) in free text."""
    if answer in choices and answer.isascii() and answer.isalpha() and answer.islower():
        return answer, ""  # the answer is one [a-z]+ word: _WORD finds exactly it
    words = set(_WORD.findall(answer.lower()))
    hits = words & choices
    if len(hits) == 1:
        return hits.pop(), ""
    if not hits:
        return None, f"expected one of the candidate words, found none in {_clip(answer)!r}"
    return None, f"ambiguous: several candidates {sorted(hits)} in {_clip(answer)!r}"


_ASSIGN = re.compile(r"\b([A-Za-z]\w*)\s*(?:=|:|is)\s*([-−]?\d+)")


def parse_assignment(answer: str, variables: tuple[str, ...]) -> tuple[dict[str, int] | None, str]:
    """Parse ``x=1, y=2`` style assignments (any separators, case-insensitive names)."""
    wanted = _WANTED.get(variables) if type(variables) is tuple else None
    if wanted is None:
        wanted = {v.lower(): v for v in variables}
        if type(variables) is tuple:
            if len(_WANTED) >= 1024:
                _WANTED.clear()
            _WANTED[variables] = wanted
    out: dict[str, int] = {}
    for name, value in _ASSIGN.findall(answer):
        key = wanted.get(name.lower())
        if key is None:
            continue
        v = int(value.replace("−", "-"))
        if key in out and out[key] != v:
            return None, f"ambiguous: {key} assigned both {out[key]} and {v}"
        out[key] = v
    for name in variables:
        if name not in out:
            missing = [v for v in variables if v not in out]
            return None, f"expected a value for every variable {list(variables)}; missing {missing}"
    return out, ""


# parse_assignment's lowercase name -> variable map, per variables tuple (read-only once built)
_WANTED: dict[tuple[str, ...], dict[str, str]] = {}


def _clip(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


@fast_init
@dataclass(frozen=True, slots=True)
class IntVerifier:
    """The answer is one integer."""

    expected: int

    def check(self, answer: str) -> Verdict:
        value, why = parse_int(answer)
        if value is None:
            return Verdict(False, 0.0, why)
        if value == self.expected:
            return Verdict(True, 1.0, f"correct: {value}")
        return Verdict(False, 0.0, f"wrong: got {value}")


@fast_init
@dataclass(frozen=True, slots=True)
class ChoiceVerifier:
    """The answer is one word out of a known candidate set."""

    expected: str
    choices: frozenset[str]

    def check(self, answer: str) -> Verdict:
        value, why = parse_choice(answer, self.choices)
        if value is None:
            return Verdict(False, 0.0, why)
        if value == self.expected:
            return Verdict(True, 1.0, f"correct: {value}")
        return Verdict(False, 0.0, f"wrong: got {value}")


@fast_init
@dataclass(frozen=True, slots=True)
class AssignmentVerifier:
    """The answer assigns an integer to every variable; it must equal the solution."""

    solution: Mapping[str, int]
    variables: tuple[str, ...]

    def check(self, answer: str) -> Verdict:
        got, why = parse_assignment(answer, self.variables)
        if got is None:
            return Verdict(False, 0.0, why)
        solution = self.solution
        for v in self.variables:
            if got[v] != solution[v]:
                wrong = [v for v in self.variables if got[v] != solution[v]]
                return Verdict(False, 0.0, f"wrong value for {wrong}")
        return _CORRECT_ASSIGNMENT


_CORRECT_ASSIGNMENT = Verdict(True, 1.0, "correct assignment")
