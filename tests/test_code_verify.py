"""Verifying code answers: extraction, fail-fast prechecks, and hostile answers through the harness."""

import pickle

import pytest

from lpca_envs.code import verify
from lpca_envs.code.sandbox import SandboxUnavailable, resolve_kind, shared_sandbox
from lpca_envs.code.verify import TestSuite, check_code, extract_code, run_suite

SUITE = TestSuite(
    "add_up",
    "assert add_up([1, 2, 3]) == 6\nassert add_up([]) == 0\n"
    "for n in range(4):\n    assert add_up([n]) == n\n",
    call_timeout=1.0,
    budget=4.0,
)
GOOD = "def add_up(xs):\n    return sum(xs)\n"


@pytest.fixture(scope="module")
def sandbox():
    try:
        kind = resolve_kind()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    return shared_sandbox(kind)


def verdict(answer, sandbox):
    return check_code(SUITE, answer, sandbox)


# -- on the host, no sandbox ----------------------------------------------------------------
@pytest.mark.parametrize(
    "answer",
    [
        GOOD,
        "```python\ndef add_up(xs):\n    return sum(xs)\n```",
        "Here is the fix:\n\n```py\ndef add_up(xs):\n    return sum(xs)\n```\nIt sums.",
        "Sure! The corrected function:\ndef add_up(xs):\n    return sum(xs)\n",
        "    def add_up(xs):\n        return sum(xs)\n",
    ],
)
def test_extract_code_is_tolerant_of_format(answer):
    code, why = extract_code(answer, "add_up")
    assert code is not None and "return sum(xs)" in code, why


@pytest.mark.parametrize(
    "answer,why",
    [
        ("", "empty answer"),
        ("  \n", "empty answer"),
        ("kq3 ;; !!", "not valid Python"),
        ("def add_up(xs) return 1", "not valid Python"),
        ("def other(xs):\n    return 1\n", "does not define a function named 'add_up'"),
        ("class C:\n    def add_up(self): pass\n", "does not define"),
        ("def add_up(xs):\n    break\n", "not valid Python"),  # a compile-time error, not a parse error
    ],
)
def test_malformed_answers_fail_fast_without_a_sandbox(answer, why, monkeypatch):
    def no_sandbox(*a, **k):
        raise AssertionError("a sandbox was started for an answer that cannot work")

    monkeypatch.setattr(verify, "shared_sandbox", no_sandbox)
    v, report = check_code(SUITE, answer)
    assert not v.success and why in v.detail
    assert report.status in ("syntax_error", "no_function") and report.total == 0


def test_suites_and_verdicts_are_plain_data():
    assert pickle.loads(pickle.dumps(SUITE)) == SUITE
    assert SUITE.key() == TestSuite(SUITE.entry, SUITE.tests, call_timeout=1.0, budget=4.0).key()


# -- in the sandbox -------------------------------------------------------------------------
def test_correct_and_wrong_answers(sandbox):
    v, rep = verdict(GOOD, sandbox)
    assert v.success and v.score == 1.0 and rep.total == 3 and rep.passed == 3  # the loop is one test
    v, rep = verdict("def add_up(xs):\n    return sum(xs) + 1\n", sandbox)
    assert not v.success and rep.passed == 0
    assert "FAIL test 1: assert add_up([1, 2, 3]) == 6" in v.detail and "got 7, expected 6" in v.detail


def test_exceptions_are_reported_with_the_line(sandbox):
    v, _rep = verdict("def add_up(xs):\n    total = 0\n    return xs[0] + total\n", sandbox)
    assert not v.success
    assert "your function raised IndexError: list index out of range (line 3 of your code)" in v.detail


@pytest.mark.parametrize(
    "answer,expect",
    [
        # an object equal to everything is sent back as an opaque value, equal to nothing
        ("class E:\n    def __eq__(self, o):\n        return True\ndef add_up(xs):\n    return E()\n",
         "got <E"),
        # patching the checker's world from inside the candidate changes nothing outside it
        ("import builtins\nbuiltins.AssertionError = Exception\ndef add_up(xs):\n    return -1\n", "FAIL"),
        ("def add_up(xs):\n    while True:\n        pass\n", "did not return within 1s"),
        ("def add_up(xs):\n    return [0] * 10 ** 10\n", "MemoryError"),
        ("def add_up(xs):\n    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
         "output limit exceeded"),
        ("def add_up(xs):\n    import os\n    os._exit(0)\n", "died"),
        ("import os\nos.kill(os.getppid(), 9)\ndef add_up(xs):\n    return sum(xs)\n", "harness died"),
        ("raise SystemExit(0)\ndef add_up(xs):\n    return sum(xs)\n", "load_error: SystemExit"),
        ("import time\ntime.sleep(100)\ndef add_up(xs):\n    return sum(xs)\n", "timeout"),
    ],
)
def test_hostile_answers_fail_with_a_clear_verdict(answer, expect, sandbox):
    v, _rep = verdict(answer, sandbox)
    assert not v.success, v
    assert expect in v.detail, v.detail


def test_the_candidate_cannot_reach_the_checkers_output_or_job(sandbox):
    probe = TestSuite(
        "probe",
        "assert probe(0) == 'denied'\nassert probe(1) == 'gone'\n",
    )
    answer = (
        "import os\n"
        "def probe(k):\n"
        "    if k == 0:\n"
        "        try:\n"
        "            fd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
        "            os.write(fd, b'forged line\\n')\n"
        "            return 'opened'\n"
        "        except OSError:\n"
        "            return 'denied'\n"
        "    return 'gone' if not os.path.exists('job.json') else open('job.json').read()\n"
    )
    v, rep = check_code(probe, answer, sandbox)
    assert v.success, v.detail
    assert rep.sandbox is not None and "forged" not in rep.sandbox.stdout


def test_printed_output_is_reported(sandbox):
    v, rep = verdict("def add_up(xs):\n    print('debug', xs)\n    return 0\n", sandbox)
    assert not v.success and "debug [1, 2, 3]" in rep.output


def test_batch_runs_keep_candidates_apart(sandbox):
    reps = run_suite(SUITE, [GOOD, "def add_up(xs):\n    return 0\n", GOOD], sandbox)
    assert [r.success for r in reps] == [True, False, True]


def test_same_code_same_report_and_cache(sandbox):
    a = verify.test_code(SUITE, "def add_up(xs):\n    return len(xs)\n", sandbox, use_cache=False)
    b = verify.test_code(SUITE, "def add_up(xs):\n    return len(xs)\n", sandbox, use_cache=False)
    assert a == b and a.cacheable


def test_the_candidate_cannot_find_the_tests_in_memory(sandbox):
    """The worker is a fresh interpreter: the expected values exist nowhere it can look."""
    spy = TestSuite("guess", "assert guess(1) == 'sentinel-93817'\n")
    answer = (
        "import gc, sys\n"
        "def guess(x):\n"
        "    for o in gc.get_objects():\n"
        "        if isinstance(o, (str, dict, list)) and 'sentinel-93817' in repr(o)[:100000]:\n"
        "            return 'sentinel-93817'\n"
        "    for m in list(sys.modules.values()):\n"
        "        if 'sentinel-93817' in repr(vars(m))[:100000]:\n"
        "            return 'sentinel-93817'\n"
        "    return 'not found'\n"
    )
    v, _rep = check_code(spy, answer, sandbox)
    assert not v.success and "got 'not found'" in v.detail, v.detail
