"""ConstraintSatisfaction family: silent floor, oracle ceiling, verifier tolerance,
info_bits against a brute-force count, determinism, and the guarantee that neither
half of the constraints alone determines the solution."""

import itertools
import math
import operator
import random
import re
import string

import pytest

from lpca_envs import SplitInfoEnv, play_episode
from lpca_envs.families.csp import _SPECS, ConstraintSatisfaction

FAM = ConstraintSatisfaction()
PRINTABLE = set(string.printable)


# -- an evaluator written independently of the family's parser: it reads the
#    readable lines of the views and builds plain Python predicates over a dict.
_CMP = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_PAIR = re.compile(r"^([a-z]) ([+-]) ([a-z]) = (\d+)$")
_REL = re.compile(r"^([a-z]) (<|!=) ([a-z])$")
_CONST = re.compile(r"^([a-z]) (<|>|!=) (\d+)$")
_PAR = re.compile(r"^([a-z]) is (even|odd)$")


def _predicate(line):
    if m := _PAIR.match(line):
        a, op, b, k = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if op == "+":
            return lambda v: v[a] + v[b] == k
        return lambda v: v[a] - v[b] == k
    if m := _REL.match(line):
        a, cmp, b = m.group(1), _CMP[m.group(2)], m.group(3)
        return lambda v: cmp(v[a], v[b])
    if m := _CONST.match(line):
        a, cmp, k = m.group(1), _CMP[m.group(2)], int(m.group(3))
        return lambda v: cmp(v[a], k)
    if m := _PAR.match(line):
        a, r = m.group(1), 0 if m.group(2) == "even" else 1
        return lambda v: v[a] % 2 == r
    raise AssertionError(f"unreadable constraint line {line!r}")


def _lines(view):
    return [ln.strip() for ln in view.splitlines() if ln.startswith("  ")]


def _solutions(task, views):
    spec = _SPECS[task.level]
    preds = [_predicate(ln) for view in views for ln in _lines(view)]
    out = []
    for values in itertools.product(range(spec.hi + 1), repeat=len(spec.names)):
        v = dict(zip(spec.names, values))
        if all(p(v) for p in preds):
            out.append(v)
    return out


@pytest.mark.parametrize("level", FAM.levels)
def test_silent_stays_near_chance(level):
    # Silent B guesses uniformly among the |S_B| assignments its half allows, so its
    # success rate is E[1/|S_B|] <= 1/min_b (level 0: .25, 1: .17, 2: .125; about .15,
    # .07, .04 in practice). Allow 4 binomial standard deviations either way.
    env = SplitInfoEnv(FAM, level)
    rng = random.Random(1)
    wins, expected = 0, 0.0
    for s in range(500):
        res = play_episode(env, "silent", seed=s, rng=rng)
        wins += res.success
        expected += 1 / env.task.info_detail["candidates_B"] / 500
    assert expected <= 1 / _SPECS[level].min_b
    sigma = math.sqrt(expected * (1 - expected) / 500)
    assert abs(wins / 500 - expected) <= 4 * sigma, (wins, expected)


@pytest.mark.parametrize("level", FAM.levels)
def test_oracle_and_skyline_always_succeed(level):
    env = SplitInfoEnv(FAM, level)
    for s in range(500):
        res = play_episode(env, "oracle", seed=s)
        assert res.success and not res.violations, s
        assert res.rounds == 2 and res.bits == 8 * len(env.task.oracle[0].text)
    for s in range(100):
        assert play_episode(env, "skyline", seed=s).success


def test_verifier_accepts_format_variants_and_rejects_wrong():
    task = FAM.sample(random.Random(3), 0)
    x, y, z = (task.state.solution[i] for i in range(3))
    for ok in (
        task.reference,
        f"x={x}, y={y}, z={z}",
        f"x = {x}; y = {y}; z = {z}",
        f"X={x} Y={y} Z={z}",
        f"z={z}, x={x}, y={y}.",
        f"The answer is x: {x}, y: {y}, z: {z}\n",
        f"x is {x}, y is {y} and z is {z}",
    ):
        assert task.check(ok).success, ok
    wrong_x = (x + 1) % 4
    for bad in (
        f"x={wrong_x}, y={y}, z={z}",
        f"x={x}, y={y}",  # missing z
        f"x={x}, x={wrong_x}, y={y}, z={z}",  # ambiguous
        "",
        "no idea",
        f"{x} {y} {z}",  # no names: not an assignment
    ):
        v = task.check(bad)
        assert not v.success and v.score == 0.0 and v.detail, bad


@pytest.mark.parametrize("level,n", [(0, 300), (1, 40)])
def test_info_bits_and_uniqueness_match_brute_force(level, n):
    # Count assignments with itertools.product and predicates read from the views'
    # text: B's half gives |S_B| = 2**info_bits, A's half |S_A|, both exactly the
    # reference.
    rng = random.Random(7)
    for _ in range(n):
        t = FAM.sample(rng, level)
        s_b = _solutions(t, [t.views["B"]])
        s_a = _solutions(t, [t.views["A"]])
        both = _solutions(t, [t.views["A"], t.views["B"]])
        assert len(s_b) == round(2**t.info_bits) == t.info_detail["candidates_B"]
        assert math.isclose(t.info_bits, math.log2(len(s_b)))
        assert len(s_a) == t.info_detail["candidates_A"]
        assert len(both) == 1
        assert t.reference == ", ".join(f"{k}={v}" for k, v in both[0].items())
        assert FAM.skyline_answer(t) == t.reference
        assert t.info_detail["assignments"] == (_SPECS[level].hi + 1) ** len(t.state.names)


@pytest.mark.parametrize("level", FAM.levels)
def test_neither_half_alone_determines_the_solution(level):
    spec = _SPECS[level]
    rng = random.Random(11)
    for _ in range(1000):
        t = FAM.sample(rng, level)
        d = t.info_detail
        assert d["candidates_B"] >= spec.min_b >= 4 and d["candidates_A"] >= spec.min_a >= 4
        assert d["constraints_A"] >= 1 and d["constraints_B"] >= 1
        assert set(t.views["A"]) <= PRINTABLE and set(t.views["B"]) <= PRINTABLE
        # B's view never holds A's lines (the partner's data must cross)
        assert not set(_lines(t.views["A"])) & set(_lines(t.views["B"]))


def test_generator_is_deterministic_per_seed():
    for level in FAM.levels:
        a = [FAM.sample(random.Random(s), level) for s in range(20)]
        b = [FAM.sample(random.Random(s), level) for s in range(20)]
        assert [t.task_id for t in a] == [t.task_id for t in b]
        assert [t.oracle for t in a] == [t.oracle for t in b]
        assert len({t.task_id for t in a}) >= 15


def test_solver_reads_readable_text_and_ignores_garbage():
    rng = random.Random(5)
    for _ in range(50):
        t = FAM.sample(rng, 1)
        # A's whole view (spaced, prose around it) carries the same constraints
        assert FAM.solve(t, "B", [t.views["A"]], rng) == t.reference
        spaced = " and ".join(_lines(t.views["A"]))
        assert FAM.solve(t, "B", [f"My constraints: {spaced}."], rng) == t.reference
        # garbage is never evaluated; B falls back on a candidate of its own half
        guess = FAM.solve(t, "B", ["__import__('os').system('true'); x<y<z; 2x=1"], rng)
        s_b = _solutions(t, [t.views["B"]])
        assert guess in {", ".join(f"{k}={v}" for k, v in sol.items()) for sol in s_b}
