"""Plugin discovery: built-ins via the hook, a pip-installed third-party package, restrictions, breakage."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lpca_protocols import Channel, ChannelError, UnknownChannelError, hookimpl, plugins

ROOT = Path(__file__).parents[1]
BUILTIN = {"none", "text", "text-budget", "summary", "retrieval", "structured"}


def test_builtins_register_through_the_hook():
    assert set(plugins.channels()) >= BUILTIN
    impls = {i.plugin_name for i in plugins.plugin_manager().hook.register_channels.get_hookimpls()}
    assert "lpca-builtin" in impls


def test_lookup_error_lists_known_names():
    with pytest.raises(UnknownChannelError, match=r"known channels: .*text-budget"):
        plugins.get_channel("telepathy")


def test_register_and_unregister_a_plugin_object():
    class Echo(Channel):
        name = "echo-test"

    class Plugin:
        @hookimpl
        def register_channels(self, register):
            register(Echo)

    p = Plugin()
    plugins.register_plugin(p, name="echo-plugin")
    try:
        assert plugins.get_channel("echo-test") is Echo
    finally:
        plugins.unregister_plugin(p)
    assert "echo-test" not in plugins.channels()


@pytest.mark.parametrize(
    "cls_name,err",
    [("Bad Name", "needs a name"), ("text", "registered twice")],
)
def test_bad_registrations_are_named(cls_name, err):
    class Bad(Channel):
        name = cls_name

    found = {"text": plugins.get_channel("text")}

    class Plugin:
        @hookimpl
        def register_channels(self, register):
            register(Bad)

    pm = plugins.plugin_manager()
    pm.register(Plugin(), name="bad-test")
    try:
        with pytest.warns(plugins.PluginWarning, match=err):
            reg = plugins._collect(pm)
        assert reg["text"] is found["text"]
    finally:
        pm.unregister(name="bad-test")


def run_py(code, env_extra=None, path=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    if path:
        env["PYTHONPATH"] = str(path) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def installed_example():
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, str(ROOT / "examples" / "third_party_channel")], check=True, capture_output=True)
    yield
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", "lpca-first-line"], capture_output=True
    )


LIST = "import lpca_protocols; print(sorted(lpca_protocols.channels()))"


def test_installed_package_is_discovered_and_runs(installed_example, tmp_path):
    out = run_py(LIST)
    assert out.returncode == 0 and "first-line" in out.stdout, out.stderr
    code = f"""
        from lpca_protocols.runner import run
        r = run("lpca/SecretRelay-v0", "first-line", "tiny-random-llama", episodes=3,
                out_dir={str(tmp_path)!r})
        print(r.summary["mean_bits"], r.run_dir)
    """
    out = run_py(code)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[0]) > 0  # the plugin's messages crossed and were counted
    cli = subprocess.run(
        [sys.executable, "-m", "lpca_protocols.cli", "channels"], capture_output=True, text=True
    )
    assert "first-line" in cli.stdout and "lpca_first_line" in cli.stdout


def test_env_var_restricts_external_plugins(installed_example):
    assert "first-line" not in run_py(LIST, {"LPCA_PLUGINS": "none"}).stdout
    assert "first-line" in run_py(LIST, {"LPCA_PLUGINS": "first-line"}).stdout
    assert "first-line" not in run_py(LIST, {"LPCA_PLUGINS": "something-else"}).stdout


def test_broken_plugin_warns_and_the_cli_still_works(tmp_path):
    pkg = tmp_path / "src"
    (pkg / "lpca_broken").mkdir(parents=True)
    (pkg / "lpca_broken" / "__init__.py").write_text("raise RuntimeError('boom at import')\n")
    (pkg / "setup.cfg").write_text(
        "[metadata]\nname = lpca-broken\nversion = 0.1\n[options]\npackages = lpca_broken\n"
        "[options.entry_points]\nlpca =\n    broken = lpca_broken\n"
    )
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(pkg),
        ],
        check=True,
        capture_output=True,
    )
    out = run_py(LIST, path=target)
    assert out.returncode == 0 and "text-budget" in out.stdout
    assert "'broken'" in out.stderr and "boom at import" in out.stderr
    import os

    env = {**os.environ, "PYTHONPATH": str(target)}
    cli = subprocess.run(
        [sys.executable, "-m", "lpca_protocols.cli", "channels"], capture_output=True, text=True, env=env
    )
    assert cli.returncode == 0 and "text-budget" in cli.stdout and "broken" in cli.stderr


def test_channel_options_are_validated():
    with pytest.raises(ChannelError, match="known options: ask, forward_view"):
        plugins.make_channel("text", verbose=True)
    with pytest.raises(ChannelError, match="cap_bytes"):
        plugins.make_channel("text-budget", cap_bytes=-1)
