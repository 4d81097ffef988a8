"""Seeded bug injection: source-preserving edits of a reference function, and diffs to undo them.

An `Edit` replaces ``source[start:end]`` by ``text``; formatting elsewhere is kept.

- `token_edits`: every one-token change of a fixed table (``<``/``<=``, ``+``/``-``,
  ``and``/``or``, ``True``/``False``, ``min``/``max``, an integer literal +-1...). The
  table is symmetric, so the edits of a mutant include the one that undoes its bug.
- `structural_edits`: swapped arguments or operands, a negated condition, a
  ``range`` bound moved by one, a dropped guard clause (``if c: return x``).

A mutant is only kept by the families if it compiles and fails at least one hidden
test in the sandbox; that is decided when the tables are built (`tables.py`).
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass

_OP_SWAPS = {
    "+": ("-",), "-": ("+",), "*": ("//",), "//": ("*", "%"), "%": ("//",),
    "<": ("<=", ">"), "<=": ("<", ">="), ">": (">=", "<"), ">=": (">", "<="),
    "==": ("!=",), "!=": ("==",), "+=": ("-=",), "-=": ("+=",),
}  # fmt: skip
_NAME_SWAPS = {
    "and": ("or",), "or": ("and",), "True": ("False",), "False": ("True",),
    "min": ("max",), "max": ("min",), "any": ("all",), "all": ("any",),
    "break": ("continue",), "continue": ("break",), "lower": ("upper",), "upper": ("lower",),
    "startswith": ("endswith",), "endswith": ("startswith",),
}  # fmt: skip
_ATOMIC = (ast.Name, ast.Constant, ast.Call, ast.Subscript, ast.Attribute, ast.List, ast.Tuple, ast.Dict)
_NONCOMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)


@dataclass(frozen=True, slots=True, order=True)
class Edit:
    """Replace ``source[start:end]`` by ``text``. ``kind`` names the bug class."""

    start: int
    end: int
    text: str
    kind: str

    def as_list(self) -> list:
        return [self.start, self.end, self.text, self.kind]


def apply_edits(source: str, edits: Sequence[Edit]) -> str:
    """Apply non-overlapping edits (any order)."""
    out = source
    last = len(source) + 1
    for e in sorted(edits, reverse=True):
        if e.end > last:
            raise ValueError(f"overlapping edits at {e.start}..{e.end}")
        out = out[: e.start] + e.text + out[e.end :]
        last = e.start
    return out


def _line_starts(source: str) -> list[int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def token_edits(source: str) -> list[Edit]:
    """Every one-token mutation of `source` from the swap tables (compilable or not)."""
    starts = _line_starts(source)
    out = []
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    for t in toks:
        a = starts[t.start[0] - 1] + t.start[1]
        b = starts[t.end[0] - 1] + t.end[1]
        if t.type == tokenize.OP and t.string in _OP_SWAPS:
            alts = _OP_SWAPS[t.string]
            kind = "operator"
        elif t.type == tokenize.NAME and t.string in _NAME_SWAPS:
            alts = _NAME_SWAPS[t.string]
            kind = "name"
        elif t.type == tokenize.NUMBER and re.fullmatch(r"\d+", t.string):
            n = int(t.string)
            alts = (str(n + 1), str(n - 1)) if n > 0 else (str(n + 1),)
            kind = "constant"
        else:
            continue
        out.extend(Edit(a, b, alt, kind) for alt in alts)
    return out


def _seg(source: str, starts: list[int], node: ast.AST) -> tuple[int, int]:
    return (
        starts[node.lineno - 1] + node.col_offset,  # type: ignore[attr-defined]
        starts[node.end_lineno - 1] + node.end_col_offset,  # type: ignore[attr-defined]
    )


def _wrap(text: str, node: ast.AST) -> str:
    return text if isinstance(node, _ATOMIC) else f"({text})"


def structural_edits(source: str) -> list[Edit]:
    """Swapped arguments/operands, negated conditions, range bounds +-1, dropped guard clauses."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    starts = _line_starts(source)
    out: list[Edit] = []

    def swap(x: ast.AST, y: ast.AST, kind: str) -> None:
        (a0, a1), (b0, b1) = _seg(source, starts, x), _seg(source, starts, y)
        tx, ty = source[a0:a1], source[b0:b1]
        if tx == ty:
            return
        out.append(Edit(a0, b1, _wrap(ty, y) + source[a1:b0] + _wrap(tx, x), kind))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            args = node.args
            if len(args) >= 2 and not any(isinstance(a, ast.Starred) for a in args[:2]):
                swap(args[0], args[1], "swapped_args")
            if isinstance(node.func, ast.Name) and node.func.id == "range" and 1 <= len(args) <= 3:
                stop = args[0] if len(args) == 1 else args[1]
                if not isinstance(stop, ast.Constant):  # constants: already a token edit
                    a, b = _seg(source, starts, stop)
                    flat = isinstance(stop, ast.BinOp) and isinstance(stop.op, ast.Add | ast.Sub)
                    text = source[a:b] if flat else _wrap(source[a:b], stop)
                    for delta in (" + 1", " - 1"):
                        out.append(Edit(a, b, text + delta, "range_bound"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _NONCOMMUTATIVE):
            swap(node.left, node.right, "swapped_operands")
        elif isinstance(node, ast.Compare) and len(node.ops) == 1:
            swap(node.left, node.comparators[0], "swapped_operands")
        if isinstance(node, ast.If | ast.While | ast.IfExp):
            test = node.test
            a, b = _seg(source, starts, test)
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                oa, ob = _seg(source, starts, test.operand)
                out.append(Edit(a, b, _wrap(source[oa:ob], test.operand), "negated_condition"))
            else:
                out.append(Edit(a, b, f"not ({source[a:b]})", "negated_condition"))
        for block in _blocks(node):
            if len(block) < 2:
                continue
            for stmt in block:
                if _is_guard(stmt):  # delete its whole lines, if it has them to itself
                    a0, b0 = _seg(source, starts, stmt)
                    a, b = starts[stmt.lineno - 1], starts[stmt.end_lineno]  # type: ignore[attr-defined]
                    if not source[a:a0].strip() and not source[b0:b].strip():
                        out.append(Edit(a, b, "", "dropped_guard"))
    return out


def _blocks(node: ast.AST) -> list[list[ast.stmt]]:
    fields = (getattr(node, f, None) for f in ("body", "orelse", "finalbody"))
    return [b for b in fields if isinstance(b, list)]


def _is_guard(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.If)
        and not stmt.orelse
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], ast.Return | ast.Raise | ast.Continue | ast.Break)
    )


def guard_positions(source: str) -> int:
    """Number of statement positions where a dropped guard could be put back (counted for info_bits)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return 0
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.stmt)) + 1


def compiles(source: str) -> bool:
    try:
        compile(source, "<mutant>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


# -- diffs: the oracle's "fix as text", and how a scripted agent applies one ------------------
def unified_diff(before: str, after: str) -> str:
    """``before`` -> ``after`` as a unified diff without context lines (exact line numbers)."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), "current.py", "fixed.py", n=0
    )
    return "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines)


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply_diff(source: str, diff: str) -> str | None:
    """Apply a unified diff to `source`; None if it does not apply exactly."""
    lines = source.splitlines(keepends=True)
    hunks: list[tuple[int, int, list[str], list[str]]] = []
    cur: tuple[int, int, list[str], list[str]] | None = None
    for raw in diff.splitlines(keepends=True):
        m = _HUNK.match(raw)
        if m:
            start, count = int(m.group(1)), int(m.group(2) if m.group(2) is not None else 1)
            cur = (start, count, [], [])
            hunks.append(cur)
        elif cur is not None and raw.startswith("-") and not raw.startswith("---"):
            cur[2].append(raw[1:])
        elif cur is not None and raw.startswith("+") and not raw.startswith("+++"):
            cur[3].append(raw[1:])
    if not hunks:
        return None
    for start, count, old, new in sorted(hunks, reverse=True):
        if len(old) != count:
            return None
        i = start - 1 if count else start  # a pure insertion comes after line `start`
        if [ln.rstrip("\n") for ln in lines[i : i + count]] != [ln.rstrip("\n") for ln in old]:
            return None
        new = [ln if ln.endswith("\n") else ln + "\n" for ln in new]
        lines[i : i + count] = new
    return "".join(lines)
