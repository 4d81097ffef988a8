"""Precomputed mutant tables: which seeded bugs each family may serve, and what their tests showed.

Sampling a code task must be cheap, deterministic and identical on every machine,
so the sandbox runs that decide which mutants exist and what B sees happen once,
here, and ship as ``data/<family>.json.gz``. For every problem (a reference
function and its hidden tests) and level, a mutant is kept only if it compiles,
fails at least one hidden test in the sandbox and times out on none; two-bug
mutants (level 2) also need each bug to fail a test on its own. A variant stores
its edits (offsets into the reference), the sandbox's per-test outcome, and the
number of candidate fixes a code-only reader faces (for ``info_bits``).

Rebuild after changing the corpus, the mutation operators or the harness:

    python -m lpca_envs.code build-tables repair      # ~1 min with docker
    python -m lpca_envs.code build-tables humaneval   # ~10 min
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lpca_envs.code.mutate import (
    Edit,
    apply_edits,
    compiles,
    guard_positions,
    structural_edits,
    token_edits,
)
from lpca_envs.code.verify import Failure, TestReport, TestSuite, run_suite
from lpca_envs.errors import TaskError

DATA = Path(__file__).with_name("data")
TABLE_VERSION = 1
LEVELS = (0, 1, 2)
#: Timeouts while building: tight, since correct references finish in milliseconds.
BUILD_CALL_TIMEOUT = 0.5
BUILD_BUDGET = 4.0


@dataclass(frozen=True, slots=True)
class Variant:
    """One seeded buggy version of a problem's reference."""

    level: int
    edits: tuple[Edit, ...]
    passed: int
    total: int
    failures: tuple[tuple[int, str, str], ...]  # (test number, kind, message)
    candidates: int  # candidate fixes a code-only reader faces (info_bits = log2)


@dataclass(frozen=True, slots=True)
class Problem:
    """A reference function, its hidden tests, and the table's variants of it."""

    key: str
    entry: str
    reference: str
    suite: TestSuite
    spec: str
    tier: int
    variants: tuple[Variant, ...]

    def buggy(self, v: Variant) -> str:
        return apply_edits(self.reference, v.edits)

    def report(self, v: Variant) -> TestReport:
        """B's view of the variant: the sandbox's test report, as stored."""
        sources = test_sources(self.suite.tests)
        fails = tuple(Failure(i, sources.get(i, "?"), kind, msg) for i, kind, msg in v.failures)
        return TestReport("ok", v.total, v.passed, fails)


def test_sources(tests: str) -> dict[int, str]:
    """Test number (as the harness counts: top-level statements containing an assert) -> source."""
    import ast

    tree = ast.parse(tests)
    lines = tests.splitlines()
    out, n = {}, 0
    for stmt in tree.body:
        if any(isinstance(x, ast.Assert) for x in ast.walk(stmt)):
            n += 1
            out[n] = "\n".join(lines[stmt.lineno - 1 : stmt.end_lineno]).strip()  # type: ignore[attr-defined]
    return out


test_sources.__test__ = False  # type: ignore[attr-defined]


def source_hash(reference: str, suite: TestSuite) -> str:
    """Identity of what a table entry was built from (not the verification timeouts)."""
    text = "\x00".join((reference, suite.entry, suite.tests, suite.setup))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def candidate_count(buggy: str, level: int) -> int:
    """How many fixes of the level's kinds a reader of `buggy` alone must choose among.

    Level 0: the compilable one-token edits. Level 1: the compilable structural edits
    plus every statement position where a dropped guard could go back. Level 2: pairs
    of edits from both sets.
    """
    tok = sum(compiles(apply_edits(buggy, [e])) for e in token_edits(buggy))
    struct = sum(compiles(apply_edits(buggy, [e])) for e in structural_edits(buggy))
    if level == 0:
        return max(tok, 2)
    if level == 1:
        return max(struct + guard_positions(buggy), 2)
    n = tok + struct + guard_positions(buggy)
    return max(n * (n - 1) // 2, 2)


def info_bits(v: Variant) -> float:
    return math.log2(v.candidates)


# -- loading --------------------------------------------------------------------------------
def _path(name: str) -> Path:
    return DATA / f"{name}.json.gz"


@cache
def load_raw(name: str) -> dict:
    path = _path(name)
    if not path.exists():
        raise TaskError(
            f"the {name} table {path} is missing; build it: python -m lpca_envs.code build-tables {name}"
        )
    with gzip.open(path, "rt") as f:
        return json.load(f)


def decode_problem(
    key: str, raw: dict, entry: str, reference: str, suite: TestSuite, spec: str, tier: int
) -> Problem:
    variants = tuple(
        Variant(
            level=v[0],
            edits=tuple(Edit(*e) for e in v[1]),
            passed=v[2],
            total=v[3],
            failures=tuple((f[0], f[1], f[2]) for f in v[4]),
            candidates=v[5],
        )
        for v in raw["variants"]
    )
    return Problem(key, entry, reference, suite, spec, tier, variants)


# -- building -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Source:
    """What the builder needs to know about one problem."""

    key: str
    entry: str
    reference: str
    suite: TestSuite
    levels: tuple[int, ...]  # levels this problem serves


def _build_suite(suite: TestSuite) -> TestSuite:
    return TestSuite(suite.entry, suite.tests, suite.setup, BUILD_CALL_TIMEOUT, BUILD_BUDGET, suite.memory_mb)


def _clean_fail(r: TestReport) -> bool:
    """Failed at least one test, and only by wrong results or exceptions (no timeouts/crashes)."""
    return (
        r.status == "ok"
        and r.passed < r.total
        and all(f.kind in ("fail", "error") for f in r.failures)
        and not r.output.strip()
    )


def build_problem(src: Source, sandbox, per_level: int, max_failures: int = 6) -> dict:
    """Run every candidate mutant of one problem in the sandbox; return the table entry."""
    suite = _build_suite(src.suite)
    ref = src.reference
    singles: dict[str, list[Edit]] = {
        "token": [e for e in token_edits(ref) if compiles(apply_edits(ref, [e]))],
        "struct": [e for e in structural_edits(ref) if compiles(apply_edits(ref, [e]))],
    }
    every = singles["token"] + singles["struct"]
    runs = run_suite(suite, [apply_edits(ref, [e]) for e in every], sandbox, trusted=True) if every else []
    reports = dict(zip(every, runs))
    good = {e for e, r in reports.items() if _clean_fail(r)}
    rng = random.Random(f"lpca-tables/{src.key}")
    chosen: list[tuple[int, tuple[Edit, ...], TestReport]] = []
    for level, pool in ((0, singles["token"]), (1, singles["struct"])):
        if level in src.levels:
            ok = [e for e in pool if e in good]
            rng.shuffle(ok)
            chosen += [(level, (e,), reports[e]) for e in ok[:per_level]]
    if 2 in src.levels:
        lines = _line_of(ref)
        pairs = [
            (a, b)
            for a, b in itertools.combinations(sorted(good), 2)
            if lines(a.start) != lines(b.start) and a.end <= b.start
        ]
        rng.shuffle(pairs)
        pairs = pairs[: per_level * 3]
        if pairs:
            pair_reports = run_suite(suite, [apply_edits(ref, list(p)) for p in pairs], sandbox, trusted=True)
            ok2 = [(p, r) for p, r in zip(pairs, pair_reports) if _clean_fail(r)]
            chosen += [(2, p, r) for p, r in ok2[:per_level]]
    variants = []
    for level, edits, r in chosen:
        buggy = apply_edits(ref, list(edits))
        fails = [[f.index, f.kind, f.message] for f in r.failures[:max_failures]]
        variants.append([level, [e.as_list() for e in edits], r.passed, r.total, fails,
                         candidate_count(buggy, level)])  # fmt: skip
    return {"hash": source_hash(ref, src.suite), "variants": variants}


def _line_of(source: str) -> Callable[[int], int]:
    def line(offset: int) -> int:
        return source.count("\n", 0, offset)

    return line


def build_table(name: str, sources: Sequence[Source], sandbox, per_level: int, log=print) -> dict:
    start = time.monotonic()
    problems = {}
    for n, src in enumerate(sources, 1):
        ref_report = run_suite(_build_suite(src.suite), [src.reference], sandbox, trusted=True)[0]
        if not ref_report.success:
            why = ref_report.describe(src.entry)
            raise TaskError(f"{name}/{src.key}: the reference fails its own tests: {why}")
        problems[src.key] = build_problem(src, sandbox, per_level)
        counts = [sum(v[0] == lv for v in problems[src.key]["variants"]) for lv in LEVELS]
        log(f"[{n}/{len(sources)}] {src.key}: variants per level {counts} ({time.monotonic() - start:.0f}s)")
    return {"version": TABLE_VERSION, "family": name, "problems": problems}


def write_table(name: str, table: dict) -> Path:
    path = _path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime=0: the same table gives the same bytes
        f.write(data)
    load_raw.cache_clear()
    return path
