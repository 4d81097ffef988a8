"""Arithmetic with missing operands.

B holds an expression and the values of some of its variables; A holds the values
of the other variables but not the expression. The answer is the expression's
integer value.

info_bits: A's operand values are independent and uniform over R integers and A
does not know the expression, so what must cross is all of them:
``m * log2(R)`` for m operands held by A.

| level | A's operands | B's operands | values  | operators |
|-------|--------------|--------------|---------|-----------|
| 0     | 1            | 1            | 0..9    | + -       |
| 1     | 2            | 1            | 0..19   | + - *     |
| 2     | 3            | 2            | 0..99   | + - *     |
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lpca_envs import _rand
from lpca_envs._records import fast_init
from lpca_envs.answers import IntVerifier
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance

_NAMES = "abcdfghkmnpqrstuvwxyz"
_ASSIGN = re.compile(r"\b([a-z])\s*(?:=|:|is)\s*(-?\d+)")


@dataclass(frozen=True, slots=True)
class _Level:
    n_a: int
    n_b: int
    hi: int  # values are 0..hi
    ops: str
    info_bits: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "info_bits", self.n_a * math.log2(self.hi + 1))


_LEVELS = {0: _Level(1, 1, 9, "+-"), 1: _Level(2, 1, 19, "+-*"), 2: _Level(3, 2, 99, "+-*")}
_ANSWERERS = ("B",)
_TO_B = ("B",)

# An expression tree is a variable name (str) or (op, left, right).
Expr = str | tuple


def _render(e: Expr, top: bool = True) -> str:
    if isinstance(e, str):
        return e
    s = f"{_render(e[1], False)} {e[0]} {_render(e[2], False)}"
    return s if top else f"({s})"


def _eval(e: Expr, values: dict[str, int]) -> int:
    if isinstance(e, str):
        return values[e]
    a, b = _eval(e[1], values), _eval(e[2], values)
    op = e[0]
    return a + b if op == "+" else a - b if op == "-" else a * b


def _known(names: list[str], values: dict[str, int]) -> tuple[tuple[tuple[str, int], ...], str]:
    """((name, value), ...) of `names` and its text "a = 1, b = 2"."""
    pairs = []
    parts = []
    for n in names:
        v = values[n]
        pairs.append((n, v))
        parts.append(f"{n} = {v}")
    return tuple(pairs), ", ".join(parts)


@fast_init
@dataclass(frozen=True, slots=True)
class ArithmeticState:
    expr: Expr
    a_values: tuple[tuple[str, int], ...]
    b_values: tuple[tuple[str, int], ...]
    hi: int


class Arithmetic(TaskFamily):
    name = "Arithmetic"
    description = "B holds an expression, A holds some of its operand values; answer its integer value."
    info_bits_doc = "m*log2(R): A's m operand values, each uniform over R integers"
    levels = (0, 1, 2)

    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=1)

    def sample(self, rng: random.Random, level: int) -> Task:
        spec = _LEVELS[self.check_level(level)]
        below = rng._randbelow  # the draws of rng.sample/randint/shuffle/randrange/choice
        n_a = spec.n_a
        names = _rand.sample(below, _NAMES, n_a + spec.n_b)
        a_names, b_names = sorted(names[:n_a]), sorted(names[n_a:])
        span = spec.hi + 1
        values = {}
        for n in names:
            values[n] = below(span)
        leaves: list[Expr] = list(names)
        _rand.shuffle(below, leaves)
        ops = spec.ops
        while len(leaves) > 1:  # random binary tree: merge two neighbours
            i = below(len(leaves) - 1)
            leaves[i : i + 2] = [(ops[below(len(ops))], leaves[i], leaves[i + 1])]
        expr = leaves[0]
        a_vals, a_text = _known(a_names, values)
        b_vals, b_text = _known(b_names, values)
        # Values first, the question last: a small model answers what it read last.
        views = {
            "A": (
                f"You know: {a_text}.\n"
                "Your partner must compute an expression that uses these values; you cannot see it."
            ),
            "B": (
                f"You know: {b_text}. Your partner knows the value of {', '.join(a_names)}.\n"
                f"Question: compute {_render(expr)}. Answer with one integer."
            ),
        }
        answer = _eval(expr, values)
        return Task(
            self.name,
            level,
            views,
            _ANSWERERS,
            spec.info_bits,
            IntVerifier(answer),
            (Utterance(1, "A", _TO_B, a_text),),
            str(answer),
            {"operands_from_A": n_a, "values_per_operand": span},
            ArithmeticState(expr, a_vals, b_vals, spec.hi),
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        st: ArithmeticState = task.state
        values = dict(st.b_values)
        for text in received:
            for name, v in _ASSIGN.findall(text):
                values.setdefault(name, int(v))
        for name, _ in st.a_values:  # unknown operand: guess uniformly
            if name not in values:
                values[name] = rng.randint(0, st.hi)
        return str(_eval(st.expr, values))

    def skyline_answer(self, task: Task) -> str:
        st: ArithmeticState = task.state
        return str(_eval(st.expr, dict(st.a_values + st.b_values)))
