"""Sweeps on local worker processes: one run directory per cell, resume, and a real `kill -9`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lpca_models
from lpca_models.agents import LMAgent
from lpca_protocols.episode_log import EpisodeLogError, read_episodes
from lpca_protocols.runner import RunError, run
from lpca_protocols.sweep import SweepStore, expand, parse_config, run_sweep

TINY = "tiny-random-llama"
CONFIG = {
    "name": "tiny",
    "models": [TINY],
    "envs": [{"id": "lpca/SecretRelay-v0", "levels": [0]}],
    "channels": [
        {"name": "none", "budgets": ["unlimited"]},
        {"name": "text", "options": {"forward_view": True}, "budgets": [64, "unlimited"]},
    ],
    "episodes": 6,
    "batch_size": 4,
    "max_new_tokens": 6,
    "scripted": ["silent", "skyline"],
}


def strip(records):
    """Records without their wall times (the only part a rerun may change)."""
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


def cell_records(root, cell):
    return read_episodes(SweepStore(root).cell_dir(cell) / "episodes.jsonl")


@pytest.fixture(scope="module")
def agent():
    return LMAgent(lpca_models.load(TINY), max_new_tokens=6)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny sweep run once on 2 local workers (shared with test_sweep_ray and test_leaderboard)."""
    root = tmp_path_factory.mktemp("sweep") / "tiny"
    result = run_sweep(parse_config(CONFIG), root, workers=2, live=False)
    return root, result


def test_sweep_writes_one_run_directory_per_cell(local_sweep, agent):
    root, result = local_sweep
    cells = expand(parse_config(CONFIG))
    assert not result.failed and len(result.finished) == len(cells) == 5
    manifest = json.loads((root / "sweep.json").read_text())
    assert [c["key"] for c in manifest["cells"]] == [c.key for c in cells]
    for cell in cells:
        d = SweepStore(root).cell_dir(cell)
        assert d.name.endswith(cell.key)
        assert {p.name for p in d.iterdir()} >= {"cell.json", "config.json", "meta.json", "episodes.jsonl"}
        recs = cell_records(root, cell)
        assert [r["seed"] for r in recs] == list(range(6))
        if cell.scripted is None:  # the sweep's records are the runner's, bit for bit
            opts = {k: v for k, v in vars(cell.run).items() if k not in ("env_id", "channel", "model")}
            direct = run(cell.run.env_id, cell.run.channel, TINY, agent=agent, out_dir=None, **opts)
            assert strip(recs) == strip(direct.records)
    # every worker loaded the model once, however many cells it served
    assert {s.get("model_loads", 1) for s in result.finished.values()} == {1}


def test_restarted_sweep_skips_finished_cells(local_sweep):
    root, _ = local_sweep
    before = {p: p.read_bytes() for p in root.glob("cells/*/episodes.jsonl")}
    again = run_sweep(parse_config(CONFIG), root, workers=1, live=False)
    assert not again.finished and len(again.skipped) == 5
    assert {p: p.read_bytes() for p in root.glob("cells/*/episodes.jsonl")} == before


def test_runner_resume_keeps_finished_episodes_and_cuts_a_torn_line(agent, tmp_path):
    kw = dict(episodes=6, batch_size=2, channel_options={"forward_view": True})
    full = run("lpca/SecretRelay-v0", "text", TINY, agent=agent, run_dir=tmp_path / "a", **kw)
    log = tmp_path / "a" / "episodes.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:3]) + lines[3][:17])  # three episodes, then a write cut short
    calls = []
    resumed = run(
        "lpca/SecretRelay-v0",
        "text",
        TINY,
        agent=agent,
        run_dir=tmp_path / "a",
        progress=lambda d, t: calls.append(d),
        **kw,
    )
    # seed 2's batch (2, 3) was cut short: it runs again whole, so the records equal the full run's
    assert calls[0] == 2 and calls[-1] == 6
    assert [r["seed"] for r in read_episodes(log)] == [0, 1, 2, 3, 4, 5]
    assert strip(resumed.records) == strip(full.records)
    assert log.read_bytes().startswith(b"".join(lines[:2]))
    # a finished run directory runs nothing more
    again = run("lpca/SecretRelay-v0", "text", TINY, run_dir=tmp_path / "a", **kw)
    assert strip(again.records) == strip(full.records)
    with pytest.raises(RunError, match=r"different run \(config.json differs in \['episodes'\]\)"):
        run(
            "lpca/SecretRelay-v0", "text", TINY, agent=agent, run_dir=tmp_path / "a", **(kw | {"episodes": 7})
        )


def test_corrupt_episode_logs_are_refused(tmp_path):
    good = json.dumps({k: 0 for k in ("task_id", "success", "bits", "info_bits", "tokens_generated")})
    rec = lambda seed: json.dumps(  # noqa: E731
        json.loads(good)
        | {
            "seed": seed,
            "prompt_tokens": 0,
            "forward_passes": 0,
            "time_sender_s": 0,
            "time_channel_s": 0,
            "time_receiver_s": 0,
        }
    )
    log = tmp_path / "episodes.jsonl"
    for body, match in [
        (f"{rec(0)}\nnot json\n{rec(1)}\n", "line 2 is not JSON"),
        (f"{rec(0)}\n{rec(0)}\n", "seed 0 is recorded twice"),
        (f"{rec(0)}\n[1, 2]\n", "line 2 is a list"),
        (f"{rec(0)}\n{good}\n", "lacks the record key"),
        (f"{rec(9)}\n", "seed 9 is not one of this run's seeds"),
    ]:
        log.write_text(body)
        with pytest.raises(EpisodeLogError, match=match):
            read_episodes(log, repair=True, seeds=range(5))
    log.write_text(f"{rec(0)}\n{rec(1)}")  # torn: the last line has no newline yet
    assert [r["seed"] for r in read_episodes(log)] == [0]
    assert log.read_text().count("\n") == 1  # reading alone does not repair
    read_episodes(log, repair=True)
    assert log.read_text() == rec(0) + "\n"


def _workers_of(pid):
    """Pids of the multiprocessing worker processes (children) of `pid`."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmd:
                out.append(int(child))
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the worker")
def test_kill_9_of_a_worker_loses_nothing_after_resume(agent, tmp_path):
    cfg = CONFIG | {
        "name": "kill",
        "channels": [{"name": "text", "options": {"forward_view": True}}, {"name": "none"}],
        "episodes": 16,
        "batch_size": 2,  # 8 appends per cell: the kill lands between or inside appends
        "scripted": [],
    }
    path = tmp_path / "kill.toml"  # the same grid as `cfg`
    path.write_text(
        'name = "kill"\nmodels = ["tiny-random-llama"]\nepisodes = 16\nbatch_size = 2\nmax_new_tokens = 6\n'
        '[[envs]]\nid = "lpca/SecretRelay-v0"\n'
        '[[channels]]\nname = "text"\noptions = { forward_view = true }\n[[channels]]\nname = "none"\n'
    )
    root = tmp_path / "out"
    cells = expand(parse_config(cfg))
    first = SweepStore(root).cell_dir(cells[0]) / "episodes.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "lpca_protocols.cli",
        "sweep",
        str(path),
        "--out",
        str(root),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (first.exists() and first.read_bytes().count(b"\n") >= 4):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the sweep never started writing episodes"
        time.sleep(0.005)
    (worker,) = _workers_of(proc.pid)
    os.kill(worker, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "worker process died" in out, out
    recorded = first.read_bytes().count(b"\n")
    assert 4 <= recorded < 16, "the kill must land inside the first cell"

    result = run_sweep(path, root, workers=1, live=False)
    assert not result.failed
    for cell in cells:
        recs = cell_records(root, cell)
        assert [r["seed"] for r in recs] == list(range(16))  # none lost, none twice
        opts = {k: v for k, v in vars(cell.run).items() if k not in ("env_id", "channel", "model")}
        direct = run(cell.run.env_id, cell.run.channel, TINY, agent=agent, out_dir=None, **opts)
        assert strip(recs) == strip(direct.records)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_workers_stop_when_the_driver_is_killed_or_interrupted(tmp_path, sig):
    # An orphaned worker would go on running a cell nobody collects, next to a restarted sweep.
    path = tmp_path / "orphan.toml"
    path.write_text(
        'name = "orphan"\nmodels = ["tiny-random-llama"]\nepisodes = 4000\nbatch_size = 1\n'
        'max_new_tokens = 6\n[[envs]]\nid = "lpca/SecretRelay-v0"\nlevels = [0, 1]\n'
        '[[channels]]\nname = "text"\noptions = { forward_view = true }\n'
    )
    cmd = [sys.executable, "-m", "lpca_protocols.cli", "sweep", str(path), "--out", str(tmp_path / "o")]
    # a harness started in the background (`cmd &`) ignores SIGINT and children inherit that: restore it
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    logs = list((tmp_path / "o").glob("cells/*/episodes.jsonl"))
    deadline = time.monotonic() + 120
    while not (logs and all(f.read_bytes().count(b"\n") >= 2 for f in logs) and len(logs) == 2):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the sweep never started writing episodes"
        time.sleep(0.05)
        logs = list((tmp_path / "o").glob("cells/*/episodes.jsonl"))
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    os.kill(proc.pid, sig)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while any(
        Path(f"/proc/{w}").exists() and b"spawn_main" in Path(f"/proc/{w}/cmdline").read_bytes()
        for w in workers
    ):
        assert time.monotonic() < deadline, "a worker outlived its driver"
        time.sleep(0.1)
    counts = [f.read_bytes().count(b"\n") for f in logs]
    time.sleep(1.5)
    assert [f.read_bytes().count(b"\n") for f in logs] == counts  # nobody writes any more
    assert all(c < 4000 for c in counts)  # the cells were cut short, not finished
