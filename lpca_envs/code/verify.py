"""Run hidden tests on candidate code in a sandbox; turn the outcome into reports and verdicts.

`check_code` is what the code families' verifiers call: it extracts the code from
an answer, rejects what cannot work without starting a sandbox (not Python,
no function of the right name: `compile` on the host, never `exec`), then runs
the suite in the sandbox with ``harness.py`` and caches clean outcomes (the same
code on the same tests gives the same result; timeouts and crashes are not
cached).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import secrets
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lpca_envs.code.sandbox import ExecResult, Limits, Sandbox, shared_sandbox
from lpca_envs.task import Verdict

#: Longest answer the verifier parses (the env caps answers far below this).
MAX_ANSWER_CHARS = 100_000
#: Container-level limits of every code-task run (one docker pool serves them all).
RUN_LIMITS = Limits(timeout=30.0, memory_mb=512, pids=64, cpus=1.0, output_bytes=256 * 1024)


@dataclass(frozen=True, slots=True)
class TestSuite:
    """The hidden tests of one function.

    ``setup`` is trusted code run before the candidate and before the tests
    (imports, helpers). ``tests`` are Python statements; each top-level statement
    containing an ``assert`` is one test; ``candidate`` and `entry` name the
    function under test. ``call_timeout`` bounds one test, ``budget`` a whole
    candidate, ``memory_mb`` the candidate's address space.
    """

    entry: str
    tests: str
    setup: str = ""
    call_timeout: float = 2.0
    budget: float = 8.0
    memory_mb: int = 256

    __test__ = False  # not a pytest test class

    def key(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        limits = repr((self.call_timeout, self.budget, self.memory_mb))
        for part in (self.entry, self.tests, self.setup, limits):
            h.update(part.encode() + b"\x00")
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed test: its 1-based number (0: a setup statement), source, kind, message."""

    index: int
    source: str
    kind: str  # fail | error | timeout | crash | skipped | load_error
    message: str


_LABEL = {"fail": "FAIL", "error": "ERROR", "timeout": "TIMEOUT", "crash": "CRASH", "skipped": "NOT RUN"}


@dataclass(frozen=True, slots=True)
class TestReport:
    """What running a suite on one candidate showed.

    ``status``: ``ok`` (the tests ran; see passed/total), ``syntax_error`` and
    ``no_function`` (rejected before any sandbox), ``load_error`` (defining the
    code raised), ``timeout``/``crash`` (while loading the code), ``sandbox_error``
    (the run produced no result: the code killed the harness, or the whole run
    exceeded its limits).
    """

    status: str
    total: int
    passed: int
    failures: tuple[Failure, ...] = ()
    message: str = ""
    output: str = ""
    sandbox: ExecResult | None = field(default=None, compare=False)

    __test__ = False

    @property
    def success(self) -> bool:
        return self.status == "ok" and self.total > 0 and self.passed == self.total and not self.failures

    @property
    def cacheable(self) -> bool:
        return self.status in ("ok", "syntax_error", "no_function", "load_error") and not any(
            f.kind in ("timeout", "crash", "skipped") for f in self.failures
        )

    def describe(self, entry: str, max_failures: int = 6, with_output: bool = True) -> str:
        """The report as a test runner would print it (B's view, verdict details)."""
        if self.status != "ok":
            return f"Running the hidden tests of `{entry}` failed before any test: {self.message}"
        failed = self.total - self.passed
        lines = [f"Ran {self.total} hidden tests of `{entry}`: {self.passed} passed, {failed} failed."]
        for f in self.failures[:max_failures]:
            where = f"test {f.index}" if f.index else "test setup"
            lines.append(f"{_LABEL.get(f.kind, f.kind.upper())} {where}: {_clip(f.source, 300)}")
            lines.append(f"  {_clip(f.message, 300)}")
        if len(self.failures) > max_failures:
            lines.append(f"... and {len(self.failures) - max_failures} more failures")
        if with_output and self.output.strip():
            lines.append("Output printed by the function:\n" + _clip(self.output, 400))
        return "\n".join(lines)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


@cache
def harness_source() -> str:
    return Path(__file__).with_name("harness.py").read_text()


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(answer: str, entry: str) -> tuple[str | None, str]:
    """The Python source in `answer` that defines `entry` at top level, or (None, why).

    Tolerant like a person: a fenced code block, or text from the first
    ``def``/``import`` line on. Only parses and compiles (nothing is executed).
    """
    if not answer.strip():
        return None, "empty answer: expected a Python function"
    if len(answer) > MAX_ANSWER_CHARS:
        return None, f"answer too long ({len(answer)} > {MAX_ANSWER_CHARS} characters)"
    blocks = _FENCE.findall(answer)
    options = [b for b in blocks if f"def {entry}" in b] + [answer]
    m = re.search(rf"^(?:from |import |@|def {re.escape(entry)}\b)", answer, re.M)
    if m:
        options.append(answer[m.start() :])
    why = ""
    for code in options:
        code = textwrap.dedent(code).strip("\n") + "\n"
        try:
            tree = ast.parse(code, "<answer>")
            compile(tree, "<answer>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
            if not why:
                line = getattr(e, "lineno", None)
                why = f"not valid Python: {type(e).__name__}: {getattr(e, 'msg', e)}" + (
                    f" (line {line})" if line else ""
                )
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == entry for n in tree.body):
            return code, ""
        if not why or why.startswith("not valid"):
            why = f"the answer does not define a function named {entry!r} at top level"
    return None, why or "empty answer"


def run_suite(
    suite: TestSuite, codes: Sequence[str], sandbox: Sandbox, trusted: bool = False
) -> list[TestReport]:
    """Run `suite` on every source in `codes` (already extracted) in one sandbox run.

    ``trusted`` (only for the project's own code, e.g. the seeded mutants when building
    or checking tables) lets the harness fork its worker instead of starting a fresh
    interpreter, which is faster but leaves the tests in the worker's memory.
    """
    nonce = secrets.token_hex(16)
    job = {
        "nonce": nonce,
        "setup": suite.setup,
        "entry": suite.entry,
        "tests": suite.tests,
        "candidates": list(codes),
        "call_timeout": suite.call_timeout,
        "budget": suite.budget,
        "memory_mb": suite.memory_mb,
        "seed": 0,
        "trusted": trusted,
    }
    limits = Limits(
        timeout=suite.budget * len(codes) + 5.0,
        memory_mb=RUN_LIMITS.memory_mb,
        pids=RUN_LIMITS.pids,
        cpus=RUN_LIMITS.cpus,
        output_bytes=RUN_LIMITS.output_bytes + 16_384 * len(codes),
    )
    r = sandbox.run(
        {"harness.py": harness_source(), "job.json": json.dumps(job)},
        ["python3", "-S", "harness.py"],
        limits,
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith(nonce + " ")), None)
    if line is None:
        if r.timed_out:
            why = f"the run exceeded its {limits.timeout:g}s wall-clock limit"
        elif r.oom:
            why = "the run ran out of memory"
        elif r.error:
            why = r.error
        else:  # no durations here: the same code must give the same verdict text
            code = r.exit_code
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            why = f"the test harness died ({how}); the code may have killed it"
        return [TestReport("sandbox_error", 0, 0, message=why, sandbox=r) for _ in codes]
    out = []
    for d in json.loads(line[len(nonce) + 1 :])["results"]:
        fails = tuple(Failure(f["i"], f["src"], f["kind"], f["msg"]) for f in d.get("failures", ()))
        message, output = d.get("message", ""), d.get("output", "")
        out.append(TestReport(d["status"], d["tests"], d["passed"], fails, message, output, r))
    return out


_CACHE: OrderedDict[str, TestReport] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4096


def test_code(
    suite: TestSuite, code: str, sandbox: Sandbox | None = None, use_cache: bool = True
) -> TestReport:
    """Run `suite` on already-extracted `code` (the shared sandbox by default), with the cache."""
    sandbox = sandbox or shared_sandbox()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{suite.key()}\x00{sandbox.name}\x00{code}".encode())
    key = h.hexdigest()
    if use_cache:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return hit
    report = run_suite(suite, [code], sandbox)[0]
    if use_cache and report.cacheable:
        with _CACHE_LOCK:
            _CACHE[key] = report
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return report


test_code.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def check_code(
    suite: TestSuite, answer: str, sandbox: Sandbox | None = None, kind: str | None = None
) -> tuple[Verdict, TestReport]:
    """Verdict on a free-text answer: extract, precheck on the host, then the sandboxed tests.

    The sandbox is `sandbox`, else the shared one of backend `kind` (default: see
    `open_sandbox`), resolved only once the answer passed the precheck.
    """
    code, why = extract_code(answer, suite.entry)
    if code is None:
        status = "no_function" if "does not define" in why else "syntax_error"
        report = TestReport(status, 0, 0, message=why)
        return Verdict(False, 0.0, why), report
    report = test_code(suite, code, sandbox or shared_sandbox(kind))
    if report.success:
        return Verdict(True, 1.0, f"passed all {report.total} hidden tests"), report
    if report.status != "ok":
        return Verdict(False, 0.0, f"{report.status}: {report.message}"), report
    return Verdict(False, 0.0, report.describe(suite.entry, max_failures=3)), report
