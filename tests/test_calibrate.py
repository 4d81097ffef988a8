"""`lpca calibrate`: the competence table (chance, P0, skyline, oracle-text, P1) and its fairness verdict."""

import dataclasses
import io
import itertools
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

import lpca_envs
import lpca_models
from lpca_envs.code.sandbox import SandboxUnavailable
from lpca_models.agents import LMAgent
from lpca_protocols import calibrate as cal
from lpca_protocols.calibrate import CalibrationError, CalibrationRow, Column, calibrate, judge
from lpca_protocols.cli import app

TINY = "tiny-random-llama"
CELLS = [("lpca/SecretRelay-v0", 0), ("lpca/KVLookup-v0", 1)]
LABELS = ["chance", "P0", "skyline", "oracle-text", "P1"]


@pytest.fixture(scope="module")
def agent():
    return LMAgent(lpca_models.load(TINY))


@pytest.fixture(scope="module")
def rows(agent):
    calls = []
    out = calibrate(TINY, CELLS, episodes=4, seed=3, agent=agent, progress=lambda *a: calls.append(a))
    return out, calls


def test_rows_carry_every_column_on_the_same_episodes(rows):
    out, calls = rows
    assert [(r.env_id, r.level) for r in out] == CELLS
    for row, (env_id, level) in zip(out, CELLS):
        assert row.skipped is None and row.model == TINY and len(row.fingerprint) == 64
        assert row.family == lpca_envs.get_family(env_id).name and (row.seed, row.episodes) == (3, 4)
        assert list(row.columns) == LABELS
        env = lpca_envs.make(env_id, level=level)
        tasks = [_task(env, s) for s in range(3, 7)]
        want = tuple(t.task_id for t in tasks)
        for col in row.columns.values():
            assert col.seeds == (3, 4, 5, 6) and col.task_ids == want  # the same episodes in every column
            assert col.episodes == 4 and 0 <= col.successes <= 4
            lo, hi = col.ci95
            assert 0.0 <= lo <= col.rate <= hi <= 1.0
        # chance is the scripted silent team, as evaluate_scripted plays it on these seeds
        assert row.columns["chance"].rate == lpca_envs.evaluate_scripted(env, "silent", 4, 3).success_rate
        assert row.info_bits == pytest.approx(sum(t.info_bits for t in tasks) / 4)
        assert row.columns["P0"].mean_bits == 0 and row.columns["skyline"].mean_bits == 0
        assert row.oracle_text_bits == row.columns["oracle-text"].mean_bits > 0
        assert row.p1_bits == row.columns["P1"].mean_bits > 0
        assert row.s_per_episode > 0
        c = row.columns
        assert row.failed == judge(c["chance"].rate, c["P0"].rate, c["skyline"].rate, c["oracle-text"].rate)
        assert row.fair is (not row.failed)
    done, total, _ = calls[-1]
    assert done == total == 2 * 4 * 5
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))  # the bar only moves forward


def _task(env, seed):
    env.reset(seed=seed)
    return env.task


def _col(label, k, n=20):
    return Column(
        label, tuple(range(n)), tuple(f"t{i}" for i in range(n)), (True,) * k + (False,) * (n - k), 8.0, 0.1
    )


def _row(chance, p0, skyline, oracle, n=20):
    ks = dict(zip(LABELS, (chance, p0, skyline, oracle, 0)))
    cols = {label: _col(label, k, n) for label, k in ks.items()}
    return CalibrationRow(TINY, "f" * 64, "lpca/KVLookup-v0", "KVLookup", 0, 0, n, cols, info_bits=2.0)


def test_fair_verdict_follows_the_criteria_boundaries_inclusive():
    assert _row(2, 4, 17, 16).fair is True  # P0 20% = chance 10% + 10, skyline 85%, oracle-text 80%
    assert _row(14, 16, 17, 16).fair is True  # 0.7 + 0.1 is 0.7999... in floats: still fair at 80%
    assert _row(2, 5, 17, 16).failed == ("P0",)
    assert _row(2, 4, 16, 16).failed == ("skyline",)
    assert _row(2, 4, 17, 15).failed == ("oracle-text",)
    assert _row(0, 20, 0, 0).failed == ("skyline", "P0", "oracle-text")
    assert judge(0.7, 0.8, 0.85, 0.8) == () and judge(0.7, 0.8001, 0.8499, 0.7999) == cal.CRITERIA
    skipped = CalibrationRow(TINY, "f" * 64, "lpca/CodeRepair-v0", "CodeRepair", 0, 0, 4, {}, skipped="why")
    assert skipped.fair is None and skipped.failed == () and skipped.to_dict()["fair"] is None


@pytest.mark.parametrize("width", [200, 110, 60])
def test_the_table_is_never_cut(width):
    """A console too narrow for the table gets one block per cell, wrapped between figures."""
    rows = [_row(2, 4, 17, 16), dataclasses.replace(_row(14, 20, 3, 16), family="ConstraintSatisfaction")]
    rows.append(
        CalibrationRow(TINY, "f" * 64, "lpca/CodeRepair-v0", "CodeRepair", 0, 0, 4, {}, skipped="why")
    )
    console = Console(width=width, file=io.StringIO())
    cal.print_table(console, rows, "title")
    text = console.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    for row in rows[:2]:
        assert all(cal.fmt_rate(c) in text for c in row.columns.values())
    assert "no: skyline, P0" in text and "ConstraintSatisfaction" in text and "[1] why" in text
    assert ("───" in text) is (width == 200)  # the table where it fits, blocks elsewhere


def test_json_and_markdown(rows, tmp_path):
    out, _ = rows
    skipped = CalibrationRow(
        TINY, out[0].fingerprint, "lpca/CodeRepair-v0", "CodeRepair", 0, 3, 4, {}, skipped="no sandbox"
    )
    path = cal.write_json(tmp_path / "t" / "cal.json", [*out, skipped], "lpca calibrate --model x")
    doc = json.loads(path.read_text())
    assert doc["command"] == "lpca calibrate --model x" and doc["models"] == {TINY: out[0].fingerprint}
    assert len(doc["git_commit"]) in (40, 7) and doc["criteria"]["skyline_min"] == 0.85
    first = doc["rows"][0]
    assert first["fair"] == out[0].fair and set(first["columns"]) == set(LABELS)
    assert first["columns"]["P1"]["seeds"] == [3, 4, 5, 6] and len(first["columns"]["P1"]["outcomes"]) == 4
    assert doc["rows"][2]["skipped"] == "no sandbox" and doc["rows"][2]["columns"] == {}
    md = cal.write_markdown(tmp_path / "cal.md", [*out, skipped], "lpca calibrate --model x").read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| model | episodes | family | L | chance | P0 | skyline | oracle-text | P1 |")
    assert lines[2].startswith(f"| {TINY} | 4 | SecretRelay | 0 | {cal.fmt_rate(out[0].columns['chance'])} |")
    assert (
        lines[4].endswith("| skipped [1] |") and "[1] no sandbox" in md and "`lpca calibrate --model x`" in md
    )


def test_a_family_that_cannot_run_is_skipped_with_the_reason(agent, monkeypatch):
    def no_sandbox(kind=None):
        raise SandboxUnavailable("no sandbox in this test")

    monkeypatch.setattr(cal, "resolve_kind", no_sandbox)
    (row,) = calibrate(TINY, [("lpca/CodeRepair-v0", 0)], episodes=2, agent=agent)
    assert row.skipped == "no code sandbox: no sandbox in this test" and row.columns == {}
    assert row.fair is None and "skipped [1]" in cal.table_cells(row, cal.skip_notes([row]))


def test_cells_and_bad_input():
    assert cal.select_cells(["lpca/KVLookup-v0"]) == [("lpca/KVLookup-v0", lv) for lv in (0, 1, 2)]
    assert cal.select_cells(levels=[1]) == [(e, 1) for e in lpca_envs.list_envs()]
    assert cal._check([CELLS[0], CELLS[0]], 1, 0) == [CELLS[0]]  # a repeated cell runs once
    assert len(cal.select_cells()) == sum(len(lpca_envs.get_family(e).levels) for e in lpca_envs.list_envs())
    bad = [
        (dict(cells=[("lpca/Nope-v0", 0)]), r"unknown env id\(s\) \['lpca/Nope-v0'\]; known ids: .*KVLookup"),
        (dict(cells=[("lpca/KVLookup-v0", 7)]), r"lpca/KVLookup-v0: level must be one of \[0, 1, 2\], got 7"),
        (dict(cells=["lpca/KVLookup-v0"]), r"a cell is an \(env id, level\) pair, got 'lpca/KVLookup-v0'"),
        (dict(cells=[]), r"no cells to calibrate"),
        (dict(episodes=0), r"episodes must be an int >= 1, got 0"),
        (dict(seed=-1), r"seed must be an int >= 0, got -1"),
    ]
    for kwargs, match in bad:  # checked before any model loads (agent=None here)
        with pytest.raises(CalibrationError, match=match):
            calibrate(TINY, **({"cells": CELLS[:1]} | kwargs))
    with pytest.raises(CalibrationError, match=r"no registered env has level\(s\) \[9\]"):
        cal.select_cells(levels=[9])


def test_cli_prints_the_whole_table_and_writes_files(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            *[
                "calibrate",
                "--model",
                TINY,
                "--env",
                "lpca/SecretRelay-v0",
                "--level",
                "0",
                "--episodes",
                "2",
            ],
            *["--json", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")],
        ],
        env={"COLUMNS": "80"},
    )
    assert res.exit_code == 0, res.output
    # the table is on stdout; progress lines ("SecretRelay L0 chance: 0/10") go to stderr
    line = next(ln for ln in res.stdout.splitlines() if "SecretRelay" in ln)
    assert line.count("%") == 5 and "…" not in res.output  # a narrow pipe does not cut the table
    assert ("yes" in line) or ("no: " in line)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["command"] == (
        "lpca calibrate --model tiny-random-llama --env lpca/SecretRelay-v0 --level 0 --episodes 2 --seed 0 "
        "--backend torch --batch-size 8 --max-new-tokens 24"
    )
    assert [(r["env_id"], r["level"]) for r in doc["rows"]] == [("lpca/SecretRelay-v0", 0)]
    assert "| SecretRelay | 0 |" in (tmp_path / "c.md").read_text()


@pytest.mark.parametrize(
    "args,match",
    [
        (["--env", "lpca/Nope-v0"], "unknown env id(s) ['lpca/Nope-v0']; known ids:"),
        (["--env", "lpca/KVLookup-v0", "--level", "7"], "level must be one of [0, 1, 2], got 7"),
        (["--episodes", "0"], "Invalid value for '--episodes': Input should be greater than or equal to 1"),
        (["--sandbox", "vm"], "expected docker, bwrap or process, got 'vm'"),
    ],
)
def test_cli_rejects_bad_input(args, match):
    res = CliRunner().invoke(app, ["calibrate", "--model", TINY, *args], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and match in " ".join(res.output.split()), res.output


def test_cli_rejects_an_unknown_model():
    res = CliRunner().invoke(
        app, ["calibrate", "--model", "gpt9", "--env", "lpca/SecretRelay-v0"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 2 and "unknown model 'gpt9'" in res.output


def test_each_row_is_handed_over_as_soon_as_its_cell_is_done(agent, tmp_path):
    seen = []

    def on_row(row):
        seen.append(row)
        # the row arrives before the next cell starts: the file written here holds the rows so far
        cal.write_markdown(tmp_path / "so_far.md", seen)
        assert (tmp_path / "so_far.md").read_text().count("| tiny-random-llama |") == len(seen)

    out = calibrate(TINY, CELLS, episodes=2, agent=agent, on_row=on_row)
    assert [(r.env_id, r.level) for r in seen] == CELLS
    assert seen == out
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed
