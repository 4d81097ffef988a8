"""The `lpca` command: listing environments, the scripted demo, helpful errors."""

import subprocess
import sys

from typer.testing import CliRunner

import lpca_envs
from lpca_protocols.cli import app

runner = CliRunner()


def test_envs_lists_every_id():
    res = runner.invoke(app, ["envs"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for env_id in lpca_envs.list_envs():
        assert env_id in res.output


def test_demo_prints_floor_and_ceiling():
    res = runner.invoke(
        app, ["demo", "--scripted", "--episodes", "20", "--env", "lpca/Arithmetic-v0"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "lpca/Arithmetic-v0" in ln]
    assert len(lines) == 9  # 3 levels x silent/oracle/skyline
    oracle = [ln for ln in lines if "oracle" in ln]
    assert all("100.0%" in ln for ln in oracle)


def test_demo_rejects_bad_options():
    res = runner.invoke(app, ["demo", "--scripted", "--env", "lpca/Nope-v0"])
    assert res.exit_code == 2 and "unknown env id" in res.output
    res = runner.invoke(app, ["demo", "--episodes", "0"])
    assert res.exit_code == 2


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "lpca_protocols.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_runs_its_learned_codec_only_on_the_model_it_was_trained_on():
    from lpca_protocols.demo import CELL_PROTOCOLS, CODEC_CHECKPOINT, run_demo

    assert (CODEC_CHECKPOINT / "codec.json").is_file()  # the committed 0.5B codebook
    assert {r[1] for r in CELL_PROTOCOLS[("lpca/SecretRelay-v0", 0)]} == {"latent-codebook"}
    skipped: list[str] = []
    rows = run_demo(
        model="tiny-random-llama",
        episodes=2,
        cells=(("lpca/SecretRelay-v0", 0),),
        protocols=(),
        on_skip=skipped.append,
    )
    assert [r.protocol for r in rows] == ["scripted silent", "scripted oracle"]
    assert len(skipped) == 2 and all("trained on qwen2.5-coder-0.5b" in s for s in skipped)
    missing = {
        ("lpca/SecretRelay-v0", 0): (("codec", "latent-codebook", {"checkpoint": "/nonexistent/c"}, None),)
    }
    skipped.clear()
    run_demo(
        model="tiny-random-llama",
        episodes=2,
        cells=(("lpca/SecretRelay-v0", 0),),
        protocols=(),
        cell_protocols=missing,
        on_skip=skipped.append,
    )
    assert len(skipped) == 1 and "codec: skipped" in skipped[0]
