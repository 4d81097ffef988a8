"""Constraint satisfaction split in two halves.

A few integer variables with small domains and a set of simple constraints
("x + y = 5", "x < z", "y != 2", "x is even", "z - y = 1") with exactly one
solution. A holds half of the constraints, B the other half; B must answer the
full assignment (``x=1, y=3, z=0``). The generator draws the solution uniformly,
then adds random constraints true of it, alternating A and B, each one strictly
shrinking the joint candidate set, until the solution is unique (lines of a half
implied by its other lines are then dropped). It guarantees: all constraints
together have exactly one solution; each half alone leaves at least ``min``
candidates (4, 6, 8 by level), so neither half determines the answer and B's
silent guess succeeds with chance 1/|S_B|.

info_bits = log2 |S_B|, where S_B is the set of assignments satisfying B's half:
B's remaining uncertainty about the answer under a uniform prior over the
assignments consistent with its own view, i.e. what must cross for B to be
certain. (The generator's exact posterior over S_B is not exactly uniform, since
which lines get drawn depends on the solution; the uniform prior is the documented
convention, and it is what the silent floor 1/|S_B| measures.)
``info_detail`` also reports |S_A|, the number of lines per half and of assignments.

| level | variables | domain | assignments | min |S_A|, |S_B| | mean info_bits | silent chance |
|-------|-----------|--------|-------------|-------------------|----------------|---------------|
| 0     | 3         | 0..3   | 64          | 4                 | ~3.0           | ~.15          |
| 1     | 4         | 0..4   | 625         | 6                 | ~4.3           | ~.07          |
| 2     | 5         | 0..5   | 7776        | 8                 | ~5.5           | ~.04          |

Difficulty grows with variables and domain: more lines per half (about 2.7, 3.8,
4.7) for a model to read, combine and search, and a longer message.

The oracle is one-way: A sends its constraints compactly ("x+y=5; x<z; y odd").

Speed: per level the table of all domain**n assignments is built once with numpy
and every constraint (generated or parsed from a message) is evaluated on it once
and cached as a Python-int bitset (bit i = assignment i in itertools.product
order). Combining constraints is then one ``&`` and counting one ``bit_count()``,
which at these sizes (64..7776 bits) avoids numpy's per-call overhead.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpca_envs._records import fast_init
from lpca_envs.answers import AssignmentVerifier
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance


@dataclass(frozen=True, slots=True)
class _Spec:
    names: tuple[str, ...]
    hi: int  # values are 0..hi
    min_b: int
    min_a: int


_SPECS = {
    0: _Spec(("x", "y", "z"), 3, 4, 4),
    1: _Spec(("w", "x", "y", "z"), 4, 6, 6),
    2: _Spec(("v", "w", "x", "y", "z"), 5, 8, 8),
}

# -- the tiny constraint parser (never eval) ------------------------------------------
_TOKEN = re.compile(r"(\d+)|([a-z])|(!=|<=|>=|==|=|<|>|\+|-)")
_PARITY = re.compile(r"^([a-z])(?:is)?(even|odd)$|^([a-z])%2==?([01])$")
_SPLIT = re.compile(r"[;,\n]|\band\b")
_CACHE_LIMIT = 20000
_ANSWERERS = ("B",)
_MISSES = range(60)  # the generator restarts after this many draws in a row that add nothing


def _linear(key: str, names: tuple[str, ...]) -> tuple[list[int], str] | None:
    """Parse ``sum op sum`` (no whitespace; terms are integers or one-letter variables
    joined by + and -) into (coefficients of lhs - rhs, constant last; op)."""
    index = {n: i for i, n in enumerate(names)}
    coef = [0] * (len(names) + 1)
    op, side, sign, expect_term = "", 1, 1, True
    for m in _TOKEN.finditer(key):
        num, var, sym = m.groups()
        if expect_term and sym in ("+", "-"):
            sign = -sign if sym == "-" else sign
        elif expect_term and sym is None:
            if var is not None and var not in index:
                return None
            if var is not None:
                coef[index[var]] += side * sign
            else:
                coef[-1] += side * sign * int(num)
            expect_term, sign = False, 1
        elif not expect_term and sym in ("+", "-"):
            sign, expect_term = (-1 if sym == "-" else 1), True
        elif not expect_term and sym is not None and not op:
            op, side, expect_term = ("=" if sym == "==" else sym), -1, True
        else:
            return None
    if not op or expect_term or sum(len(m.group()) for m in _TOKEN.finditer(key)) != len(key):
        return None
    return coef, op


class _Table:
    """All assignments of one level, and the constraint masks evaluated on them."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        n, d = len(spec.names), spec.hi + 1
        grid = np.array(list(itertools.product(range(d), repeat=n)), dtype=np.int64)
        self.grid = grid
        self.size = len(grid)
        self.nbytes = (self.size + 7) // 8
        self.rows = [tuple(r) for r in grid.tolist()]
        self.full = (1 << self.size) - 1
        self.cache: dict[str, int | None] = {}
        self.library = _library(spec)
        self.readable = [_readable(c) for c in self.library]
        self.fmt = ", ".join(f"{n}={{}}" for n in spec.names)
        self.references = [self.fmt.format(*r) for r in self.rows]  # per row: the answer text
        self.solutions = [dict(zip(spec.names, r, strict=True)) for r in self.rows]  # (copied)
        names = ", ".join(spec.names)
        what = f"the variables {names} (each an integer in 0..{spec.hi})"
        form = ", ".join(f"{n}=<value>" for n in spec.names)
        self.texts = (
            f"A puzzle over {what} has exactly one solution.\nYou hold half of its constraints:\n  ",
            "\nYour partner holds the other half and must find the solution; it cannot see "
            "your constraints, and neither half alone determines the solution.",
            f"Find the values of {what} that satisfy all of these constraints and your "
            "partner's.\nYour constraints:\n  ",
            "\nYour partner holds more constraints you cannot see; together there is exactly "
            f"one solution. Answer in the form: {form}",
        )
        bools = np.stack([self._eval(_key(c)) for c in self.library])  # (C, N)
        self.lib_masks = [self._to_int(b) for b in bools]
        self.sat_matrix = np.ascontiguousarray(bools.T)  # (N, C): constraints true at row i
        self.sat: dict[int, tuple[int, ...]] = {}
        self.sat_masks: dict[int, tuple[int, ...]] = {}  # per row: the masks of its `sat`
        for c, m in zip(self.library, self.lib_masks, strict=True):
            self.cache[c] = self.cache[_key(c)] = m

    def _to_int(self, b: np.ndarray) -> int:
        return int.from_bytes(np.packbits(b, bitorder="little").tobytes(), "little")

    def _eval(self, key: str) -> np.ndarray | None:
        names = self.spec.names
        m = _PARITY.match(key)
        if m:
            var, parity = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            if var not in names:
                return None
            return (self.grid[:, names.index(var)] % 2) == (1 if parity in ("odd", "1") else 0)
        parsed = _linear(key, names)
        if parsed is None:
            return None
        coef, op = parsed
        val = self.grid @ np.array(coef[:-1], dtype=np.int64) + coef[-1]
        if op == "=":
            return val == 0
        if op == "!=":
            return val != 0
        if op == "<":
            return val < 0
        if op == ">":
            return val > 0
        if op == "<=":
            return val <= 0
        return val >= 0

    def mask(self, piece: str) -> int | None:
        """Bitset of the assignments satisfying one constraint text; None if unparseable."""
        if piece in self.cache:  # the compact form the oracle sends: no normalizing
            return self.cache[piece]
        key = _key(piece)
        if key in self.cache:
            return self.cache[key]
        b = self._eval(key)
        m = None if b is None else self._to_int(b)
        if len(self.cache) < _CACHE_LIMIT:
            self.cache[key] = m
        return m

    def satisfied_by(self, row: int) -> tuple[int, ...]:
        got = self.sat.get(row)
        if got is None:
            got = self.sat[row] = tuple(np.flatnonzero(self.sat_matrix[row]).tolist())
            masks = self.lib_masks
            self.sat_masks[row] = tuple([masks[c] for c in got])
        return got

    def pick(self, mask: int, rng: random.Random) -> int:
        """A uniformly random row among the set bits of `mask`."""
        if mask & (mask - 1) == 0:
            return mask.bit_length() - 1
        bits = np.unpackbits(
            np.frombuffer(mask.to_bytes(self.nbytes, "little"), dtype=np.uint8), bitorder="little"
        )
        rows = np.flatnonzero(bits)
        return int(rows[int(rng.random() * len(rows))])


def _lines(
    picked: list[int], sat: tuple[int, ...], lib: list[str], readable: list[str]
) -> tuple[tuple[str, ...], str]:
    """The compact constraints of `picked` (indices into `sat`) and their view lines."""
    compact = []
    lines = []
    for i in picked:
        c = sat[i]
        compact.append(lib[c])
        lines.append(readable[c])
    return tuple(compact), "\n  ".join(lines)


def _key(piece: str) -> str:
    return "".join(piece.lower().split())


def _library(spec: _Spec) -> list[str]:
    """Every constraint the generator may use, in compact form. Constraints that pin
    a value outright (x+y=0, x<1, ...) are left out: they make dull puzzles."""
    names, hi = spec.names, spec.hi
    out: list[str] = []
    for a, b in itertools.combinations(names, 2):
        out += [f"{a}+{b}={k}" for k in range(1, 2 * hi)]
        out.append(f"{a}!={b}")
    for a, b in itertools.permutations(names, 2):
        out += [f"{a}-{b}={k}" for k in range(1, hi)]
        out.append(f"{a}<{b}")
    for a in names:
        out += [f"{a}<{k}" for k in range(2, hi + 1)]
        out += [f"{a}>{k}" for k in range(0, hi - 1)]
        out += [f"{a}!={k}" for k in range(0, hi + 1)]
        out += [f"{a} even", f"{a} odd"]
    return out


_TABLES: dict[int, _Table] = {}


def _table(level: int) -> _Table:
    t = _TABLES.get(level)
    if t is None:
        t = _TABLES[level] = _Table(_SPECS[level])
    return t


_SPACED = re.compile(r"(!=|<=|>=|=|<|>|\+|-)")


def _readable(c: str) -> str:
    if c.endswith(("even", "odd")):
        return c.replace(" ", " is ")
    return _SPACED.sub(r" \1 ", c)


@fast_init
@dataclass(frozen=True, slots=True)
class ConstraintSatisfactionState:
    names: tuple[str, ...]
    hi: int
    a_constraints: tuple[str, ...]  # compact form, A's private data
    b_constraints: tuple[str, ...]  # compact form, B's private data
    solution: tuple[int, ...]


class ConstraintSatisfaction(TaskFamily):
    name = "ConstraintSatisfaction"
    description = (
        "A and B each hold half the constraints over a few small integer variables; "
        "B answers the unique assignment."
    )
    info_bits_doc = "log2|S_B|: assignments consistent with B's half (uniform prior over them)"
    levels = (0, 1, 2)

    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=1)

    def sample(self, rng: random.Random, level: int) -> Task:
        spec = _SPECS[self.check_level(level)]
        table = _table(level)
        lib, full, size = table.library, table.full, table.size
        min_a, min_b = spec.min_a, spec.min_b
        rand = rng.random
        sat_cache, row_masks, satisfied_by = table.sat, table.sat_masks, table.satisfied_by
        while True:
            row = int(rand() * size)
            sat = sat_cache.get(row) or satisfied_by(row)
            row_m = row_masks[row]
            n_sat = len(sat)
            a_list: list[int] = []
            b_list: list[int] = []
            a_mask = b_mask = joint = full
            turn_b = rand() < 0.5
            # Each added constraint must shrink the joint set (no redundant lines) and
            # leave its own half with enough candidates; give up after a run of 60 misses.
            # (a_list/b_list hold indices into `sat`, the row's satisfied constraints.)
            while joint & (joint - 1):
                for _ in _MISSES:
                    i = int(rand() * n_sat)
                    m = row_m[i]
                    new_joint = joint & m
                    if new_joint != joint:
                        if turn_b:
                            new_half = b_mask & m
                            if new_half.bit_count() >= min_b:
                                b_list.append(i)
                                b_mask, joint, turn_b = new_half, new_joint, False
                                break
                        else:
                            new_half = a_mask & m
                            if new_half.bit_count() >= min_a:
                                a_list.append(i)
                                a_mask, joint, turn_b = new_half, new_joint, True
                                break
                else:  # a run of misses: start over
                    break
            if joint & (joint - 1) == 0 and a_list and b_list:
                break
        # A later, stronger line can imply an earlier one of the same half (x<4 then
        # x<3): drop such lines; the half's candidate set, hence every guarantee, is kept.
        for h, hm in ((a_list, a_mask), (b_list, b_mask)):
            if len(h) > 1:
                for i in tuple(h):
                    rest = full
                    for o in h:
                        if o != i:
                            rest &= row_m[o]
                    if rest == hm:
                        h.remove(i)
        readable = table.readable
        a_cons, a_lines = _lines(a_list, sat, lib, readable)
        b_cons, b_lines = _lines(b_list, sat, lib, readable)
        n_b, n_a = b_mask.bit_count(), a_mask.bit_count()
        names = spec.names
        head_a, tail_a, head_b, tail_b = table.texts
        views = {"A": head_a + a_lines + tail_a, "B": head_b + b_lines + tail_b}
        values = table.rows[row]
        return Task(
            self.name,
            level,
            views,
            _ANSWERERS,
            math.log2(n_b),
            AssignmentVerifier(table.solutions[row].copy(), names),
            (Utterance(1, "A", _ANSWERERS, "; ".join(a_cons)),),
            table.references[row],
            {
                "candidates_B": n_b,
                "candidates_A": n_a,
                "assignments": size,
                "constraints_A": len(a_cons),
                "constraints_B": len(b_cons),
            },
            ConstraintSatisfactionState(names, spec.hi, a_cons, b_cons, values),
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        st: ConstraintSatisfactionState = task.state
        table = _table(task.level)
        own = table.full
        for c in st.b_constraints:  # library lines: always parse
            own &= table.cache[c] or 0
        joint = own
        for text in received:
            for piece in _SPLIT.split(text):
                piece = piece.rsplit(":", 1)[-1].strip().rstrip(".")
                if piece:
                    m = table.mask(piece)
                    if m is not None:
                        joint &= m
        if joint == 0:  # contradictory message: fall back on B's own candidates
            joint = own
        return table.references[table.pick(joint, rng)]

    def skyline_answer(self, task: Task) -> str:
        st: ConstraintSatisfactionState = task.state
        table = _table(task.level)
        joint = table.full
        for c in st.a_constraints + st.b_constraints:
            joint &= table.cache[c] or 0
        assert joint and joint & (joint - 1) == 0, "generator broke uniqueness"
        return table.references[joint.bit_length() - 1]
