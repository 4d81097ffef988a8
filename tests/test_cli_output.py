"""What the commands print where stdout is no terminal (CI logs, files, pipes): whole tables, JSON
for scripts, progress as log lines, and no library warnings."""

import json
import os
import random
import subprocess
import sys
import warnings

import pytest
from rich.table import Table
from typer.testing import CliRunner

from lpca_protocols import output
from lpca_protocols.cli import app
from lpca_protocols.runner import RunConfig
from lpca_protocols.sweep import Cell, SweepStore, parse_config

RELAY = "lpca/SecretRelay-v0"
TINY = "tiny-random-llama"
NARROW = {"COLUMNS": "60"}  # what a CI runner may set; a log is not a terminal, so it must not matter


def invoke(args: list[str]) -> tuple[object, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(app, args, env=NARROW)
    assert res.exit_code == 0, res.output
    return res, caught


def assert_whole(text: str, headers: tuple[str, ...]) -> None:
    assert "…" not in text, text
    for h in headers:
        assert h in text, (h, text)


RUN_HEADERS = ("success", "95% CI", "bits/episode", "x info_bits", "tokens", "time/episode", "violations")
CHANNEL_OPTS = {"text": ["max_new_tokens=8"], "kv-share": [], "cipher": ["steps=4"]}


@pytest.mark.parametrize("channel", list(CHANNEL_OPTS))
def test_run_prints_the_whole_table_and_no_warnings(channel, tmp_path):
    args = ["run", "--env", RELAY, "--channel", channel, "--model", TINY, "--episodes", "2"]
    args += [a for o in CHANNEL_OPTS[channel] for a in ("--opt", o)] + ["--out", str(tmp_path)]
    res, caught = invoke(args)
    assert_whole(res.stdout, RUN_HEADERS)
    assert "run directory: " + str(tmp_path) in res.stdout  # a long path is not broken across lines
    assert f"{RELAY} / {channel}: 2/2 (" in res.stderr  # progress, as a log line on stderr
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_run_json_is_the_summary(tmp_path):
    args = ["run", "--env", RELAY, "--channel", "text", "--model", TINY, "--episodes", "2"]
    res, _ = invoke([*args, "--opt", "max_new_tokens=8", "--out", str(tmp_path), "--json"])
    summary = json.loads(res.stdout)  # stdout holds the JSON and nothing else
    assert summary["episodes"] == 2 and summary["successes"] in (0, 1, 2)
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_bits"] > 0
    assert summary["run_dir"].startswith(str(tmp_path))


def test_calibrate_table_and_json():
    args = ["calibrate", "--model", TINY, "--env", RELAY, "--level", "0", "--episodes", "2"]
    args += ["--max-new-tokens", "4"]
    res, _ = invoke(args)
    assert_whole(res.stdout, ("family", "chance", "skyline", "oracle-text", "bits P1/oracle/info", "fair"))
    res, _ = invoke([*args, "--json", "-"])
    doc = json.loads(res.stdout)
    (row,) = doc["rows"]
    assert row["env_id"] == RELAY and row["episodes"] == 2
    assert {"success_rate", "successes", "mean_bits"} <= set(row["columns"]["P1"])


DEMO_HEADERS = ("family", "protocol", "success", "95% CI", "bits", "info", "tokens", "s/ep")


@pytest.mark.slow  # every demo row on the tiny model: ~10 s on an idle 2-core machine
def test_demo_prints_the_whole_table():
    res, caught = invoke(["demo", "--model", TINY, "--episodes", "2"])  # a shuffle control needs 2
    assert_whole(res.stdout, DEMO_HEADERS)
    assert "scripted oracle" in res.stdout and "activation-graft" in res.stdout
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_demo_json(monkeypatch):
    from lpca_protocols import demo

    def fake(**kw):
        row = demo.Row(RELAY, 0, "P1 text", 0.5, (0.1, 0.9), 80.0, 3.0, 12.0, 0.2)
        kw["on_row"](row)
        return [row]

    monkeypatch.setattr(demo, "run_demo", fake)
    res, _ = invoke(["demo", "--model", TINY, "--episodes", "1", "--json"])
    (row,) = json.loads(res.stdout)
    assert row["protocol"] == "P1 text" and row["success"] == 0.5 and row["mean_bits"] == 80.0
    assert "P1 text: 50%" in res.stderr


def test_leaderboard_keeps_every_column(tmp_path):
    root = tmp_path / "sweep"
    cfg = parse_config({"envs": [{"id": RELAY}], "channels": [{"name": "none"}], "models": [TINY]})
    cells = [Cell(RunConfig(RELAY, "text", "m", episodes=4), "text")]
    for control in ("none", "null", "shuffle", "random"):
        opts = {"layer": 2, "control": control}
        cells.append(
            Cell(RunConfig(RELAY, "activation-graft", "m", episodes=4, channel_options=opts), "graft")
        )
    store = SweepStore(root)
    store.prepare(cfg, cells)
    rng = random.Random(0)
    for cell in cells:
        recs = [
            {"task_id": f"t{s}", "seed": s, "success": rng.random() < 0.5, "score": 0.0, "bits": 4096}
            | {"info_bits": 3.0, "tokens_generated": 9, "prompt_tokens": 90, "forward_passes": 2}
            | {"time_sender_s": 0.1, "time_channel_s": 0.01, "time_receiver_s": 0.1, "messages": []}
            for s in range(4)
        ]
        (store.cell_dir(cell) / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res, _ = invoke(["leaderboard", str(root), "--out", str(tmp_path / "board"), "--no-plots"])
    from lpca_protocols.leaderboard.render import header

    assert_whole(res.stdout, tuple(header(True)))


def test_progress_is_log_lines_off_a_terminal(capsys):
    with output.progress("cells", total=3, every_s=3600) as update:
        update(0)
        update(1)  # within every_s of the last line: not printed
        update(1, description="SecretRelay L0")  # a new step: printed
        update(3)  # done: printed
        update(3)  # done again: not repeated
    err = capsys.readouterr().err.splitlines()
    assert [ln.rsplit(" (", 1)[0] for ln in err] == [
        "cells: 0/3",
        "SecretRelay L0: 1/3",
        "SecretRelay L0: 3/3",
    ]


def test_a_wide_table_is_never_cut_off_a_terminal(capsys):
    table = Table(title="wide")
    for i in range(30):
        table.add_column(f"column number {i}")
    table.add_row(*(f"value {i} " * 3 for i in range(30)))
    output.print_table(output.console(), table)
    text = capsys.readouterr().out
    assert_whole(text, tuple(f"column number {i}" for i in range(30)))
    assert len(text.splitlines()) == 6  # title, top rule, header line, rule, row line, bottom rule


def test_a_fresh_model_conversion_and_load_print_nothing_off_a_terminal(tmp_path):
    """No library warning (import, conversion, load) and no Hugging Face progress bar in a log."""
    code = "import lpca_protocols.cli, lpca_models; lpca_models.load('tiny-random-gemma3')"
    env = {**os.environ, "LPCA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and out.stdout == ""
