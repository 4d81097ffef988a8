"""CodeRepair: the corpus, the shipped mutant table against fresh sandbox runs, the split, the agents."""

import math
import pickle
import random

import pytest

from lpca_envs import PRINTABLE, SplitInfoEnv, play_episode
from lpca_envs.code import CodeRepair, TestSuite, verify
from lpca_envs.code.mutate import apply_diff, apply_edits, structural_edits, token_edits
from lpca_envs.code.repair_corpus import CORPUS
from lpca_envs.code.sandbox import SandboxUnavailable, resolve_kind, shared_sandbox
from lpca_envs.code.tables import _build_suite, candidate_count
from lpca_envs.code.verify import run_suite

FAM = CodeRepair()


@pytest.fixture(scope="module")
def sandbox():
    try:
        kind = resolve_kind()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    return shared_sandbox(kind)


def test_corpus_has_at_least_40_functions_in_three_tiers():
    assert len(CORPUS) >= 40
    assert {r.tier for r in CORPUS} == {0, 1, 2}
    assert all(sum(r.tier == t for r in CORPUS) >= 12 for t in (0, 1, 2))
    for r in CORPUS:
        assert r.code.startswith(f"def {r.name}(") and r.tests.count("assert") >= 5, r.name


def test_every_level_has_many_problems_and_variants():
    for level in FAM.levels:
        pool = FAM._index()[level]
        assert len(pool) >= 90 and len({key for key, _ in pool}) >= 14, level


def test_level_0_is_a_one_token_fix():
    for p in FAM.problems().values():
        for v in p.variants:
            if v.level == 0:
                (e,) = v.edits
                assert e.kind in ("operator", "name", "constant")
                assert " " not in e.text and len(p.buggy(v).split()) == len(p.reference.split()), e


def test_references_pass_and_every_variant_fails_as_the_table_says(sandbox):
    """One sandbox run per function: its reference and every shipped mutant of it."""
    for p in FAM.problems().values():
        suite = _build_suite(p.suite)  # the tight timeouts the table was built with
        reports = run_suite(suite, [p.reference] + [p.buggy(v) for v in p.variants], sandbox, trusted=True)
        assert reports[0].success, (p.key, reports[0].describe(p.entry))
        for v, r in zip(p.variants, reports[1:]):
            assert r.status == "ok" and r.passed < r.total, (p.key, v)  # fails at least one test
            assert (r.passed, r.total) == (v.passed, v.total), (p.key, v)
            stored = [(i, kind, msg) for i, kind, msg in v.failures]
            assert [(f.index, f.kind, f.message) for f in r.failures][: len(stored)] == stored, (p.key, v)


@pytest.mark.parametrize("level", FAM.levels)
def test_oracle_reaches_100_percent(level, sandbox):
    """70 seeded episodes per level (210 in all) with the oracle transcript, verified in the sandbox."""
    env = SplitInfoEnv(FAM, level)
    for seed in range(70):
        r = play_episode(env, "oracle", seed=seed)
        assert r.success and not r.violations, (seed, env.render())
        assert r.rounds == 3 and r.bits > r.info_bits


@pytest.mark.parametrize("level,bound", [(0, 0.4), (1, 0.4), (2, 0.15)])
def test_silent_a_is_near_chance(level, bound, sandbox):
    env = SplitInfoEnv(FAM, level)
    rng = random.Random(7)
    wins = sum(play_episode(env, "silent", seed=s, rng=rng).success for s in range(30))
    assert wins / 30 <= bound


def test_views_split_the_information():
    rng = random.Random(0)
    for level in FAM.levels:
        for _ in range(30):
            t = FAM.sample(rng, level)
            a, b = t.views["A"], t.views["B"]
            buggy = t.state.buggy
            assert buggy in a
            assert "Ran " not in a and "FAIL test" not in a  # A has no test results
            assert "FAIL test" in b or "ERROR test" in b  # B sees failures...
            body = [ln.strip() for ln in buggy.splitlines()[1:] if len(ln.strip()) > 12]
            assert not any(ln in b for ln in body), "B's view leaks a line of A's code"  # ...not the code
            for v in (a, b):
                assert set(v) <= PRINTABLE and len(v) <= 8192


def test_info_bits_is_log2_of_the_candidate_fixes():
    rng = random.Random(1)
    for level in FAM.levels:
        for _ in range(10):
            t = FAM.sample(rng, level)
            k = candidate_count(t.state.buggy, level)
            assert t.info_detail["candidate_fixes"] == k and math.isclose(t.info_bits, math.log2(k))
            assert t.info_bits >= 1


def test_the_true_fix_is_among_the_candidates_of_levels_0_and_1():
    """The silent guesser can succeed: undoing the bug is one of its candidate edits."""
    rng = random.Random(2)
    for level in (0, 1):
        for _ in range(25):
            t = FAM.sample(rng, level)
            p = FAM.problems()[t.state.problem]
            (bug,) = p.variants[t.state.variant].edits
            if bug.kind == "dropped_guard":
                continue  # undone by an insertion, which the count covers as positions
            edits = token_edits(t.state.buggy) if level == 0 else structural_edits(t.state.buggy)
            outs = {_undo_bound(apply_edits(t.state.buggy, [e])) for e in edits}
            assert t.reference in outs or _same_function(t.reference, outs), bug


def _undo_bound(code):
    return code.replace(" + 1 - 1", "").replace(" - 1 + 1", "")


def _same_function(reference, candidates):
    import ast

    want = ast.dump(ast.parse(reference))
    for c in candidates:
        try:
            if ast.dump(ast.parse(c)) == want:
                return True
        except SyntaxError:
            pass
    return False


def test_oracle_diff_applies_and_solve_learns_only_from_messages():
    rng = random.Random(3)
    t = FAM.sample(rng, 2)
    diff_text = t.oracle[1].text
    assert apply_diff(t.state.buggy, diff_text) == t.reference
    assert FAM.solve(t, "A", [t.oracle[1].text], rng) == t.reference
    guess = FAM.solve(t, "A", ["please fix it", "@@ -1 +1 @@\n-nothing\n+here\n"], random.Random(0))
    compile(guess, "<guess>", "exec")  # no usable message: a guess of the level's kinds
    assert FAM.skyline_answer(t) == t.reference


def test_sampling_is_deterministic_and_tasks_pickle():
    a = [FAM.sample(random.Random(s), lv) for s in range(20) for lv in FAM.levels]
    b = [FAM.sample(random.Random(s), lv) for s in range(20) for lv in FAM.levels]
    assert a == b and len({t.task_id for t in a}) > 50
    t = pickle.loads(pickle.dumps(a[0]))
    assert t == a[0] and isinstance(t.verifier.suite, TestSuite)


def test_malformed_answers_fail_without_a_sandbox(monkeypatch):
    def no_sandbox(*a, **k):
        raise AssertionError("sandbox started")

    monkeypatch.setattr(verify, "shared_sandbox", no_sandbox)
    t = FAM.sample(random.Random(4), 0)
    for answer in ("", "x" * 1000, "def nope(): pass", "fix line 3"):
        assert not t.check(answer).success
    assert FAM.episodes_for_generic_tests == 20
