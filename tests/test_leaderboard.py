"""The leaderboard: every number recomputed here, independently, from the cells' episode logs."""

import json
import math
import random
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from lpca_protocols.cli import app
from lpca_protocols.leaderboard import build_leaderboard, pareto
from lpca_protocols.runner import RunConfig
from lpca_protocols.sweep import Cell, SweepError, SweepStore, parse_config

RELAY, KV = "lpca/SecretRelay-v0", "lpca/KVLookup-v0"
GRAFT = "activation-graft"  # a latent channel with controls; only its records are needed here


def record(rng, seed, p, bits, info):
    return {
        "task_id": f"t{seed}",
        "seed": seed,
        "success": rng.random() < p,
        "score": 0.0,
        "bits": bits + rng.randrange(0, 9),
        "info_bits": info,
        "tokens_generated": rng.randrange(5, 30),
        "prompt_tokens": 100,
        "forward_passes": 3,
        "time_sender_s": rng.random() / 10,
        "time_channel_s": rng.random() / 100,
        "time_receiver_s": rng.random() / 10,
        "messages": [],
        "diagnostics": {"anything": [1, 2]},
    }


def grid():
    """(cell, success probability, bits) of a synthetic sweep with controls, seed blocks and scripted rows."""
    out = []
    for seed in (0, 100):  # two seed blocks of one row are pooled
        for budget in (64, None):
            out.append(
                (
                    Cell(
                        RunConfig(RELAY, "text", "m", seed=seed, episodes=12, budget_bits_per_message=budget),
                        "text",
                    ),
                    0.7,
                    80,
                )
            )
    for control, p in (("none", 0.9), ("null", 0.1), ("shuffle", 0.2), ("random", 0.15)):
        opts = {"layer": 2, "control": control}
        out.append((Cell(RunConfig(RELAY, GRAFT, "m", episodes=12, channel_options=opts), GRAFT), p, 4096))
    opts = {"layer": 3, "control": "null"}  # a control whose normal row is not in the sweep
    out.append((Cell(RunConfig(RELAY, GRAFT, "m", episodes=12, channel_options=opts), GRAFT), 0.3, 4096))
    out.append(
        (
            Cell(RunConfig(RELAY, "scripted-oracle", "scripted", episodes=12), "scripted oracle", "oracle"),
            1.0,
            24,
        )
    )
    out.append((Cell(RunConfig(KV, "none", "m", level=1, episodes=10), "none"), 0.2, 0))
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("board") / "synthetic"
    rng = random.Random(7)
    cells = grid()
    cfg = parse_config(
        {"envs": [{"id": RELAY}], "channels": [{"name": "none"}], "models": ["tiny-random-llama"]}
    )
    store = SweepStore(root)
    store.prepare(cfg, [c for c, *_ in cells])
    for cell, p, bits in cells:
        info = 3.0 if cell.run.env_id == RELAY else 6.0
        recs = [record(rng, s, p, bits, info) for s in range(cell.run.seed, cell.run.seed + cell.episodes)]
        if cell.run.env_id == KV:
            recs = recs[:7]  # a partial cell
        log = store.cell_dir(cell) / "episodes.jsonl"
        log.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"seed": 99, "succ')  # torn last line
    return root, cells


def wilson(k, n, z=1.96):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    margin = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - margin, centre + margin


def expected(root, cells):
    """Group the JSONL records by hand: (env, level, label, options less control, budget) x control."""
    groups = defaultdict(list)
    for cell, *_ in cells:
        opts = dict(cell.run.channel_options)
        control = opts.pop("control", "none")
        lines = (SweepStore(root).cell_dir(cell) / "episodes.jsonl").read_text().split("\n")[:-1]
        key = (cell.run.env_id, cell.run.level, cell.label, json.dumps(opts, sort_keys=True) if opts else "")
        groups[(*key, cell.run.budget_bits_per_message, control)] += [json.loads(x) for x in lines]
    out = {}
    for key, recs in groups.items():
        n, k = len(recs), sum(r["success"] for r in recs)
        bits = sum(r["bits"] for r in recs) / n
        info = sum(r["info_bits"] for r in recs) / n
        out[key] = {
            "n": n,
            "success": k / n,
            "ci": wilson(k, n),
            "bits": bits,
            "x_info": bits / info,
            "tokens": sum(r["tokens_generated"] for r in recs) / n,
            "latency_s": sum(r["time_sender_s"] + r["time_channel_s"] + r["time_receiver_s"] for r in recs)
            / n,
        }
    return out


def test_numbers_match_an_independent_recount(sweep):
    root, cells = sweep
    board = build_leaderboard(root)
    want = expected(root, cells)
    assert set(board.families) == {"SecretRelay", "KVLookup"}
    rows = [r for rs in board.families.values() for r in rs]
    # one row per protocol; controls sit beside their row, except the orphan (layer 3) which is its own
    assert len(rows) == 2 + 1 + 1 + 1 + 1
    seen = set()
    for r in rows:
        opts = json.loads(r["options"]) if r["options"] else {}
        control = opts.pop("control", "none")  # only an orphan control row shows its control
        opts = json.dumps(opts, sort_keys=True) if opts else ""
        key = (r["env_id"], r["level"], r["label"], opts, r["budget"], control)
        exp = want[key]
        seen.add(key)
        assert r["n"] == exp["n"]
        assert r["success"] == pytest.approx(exp["success"])
        assert (r["ci_lo"], r["ci_hi"]) == pytest.approx(exp["ci"])
        for col in ("bits", "x_info", "tokens", "latency_s"):
            assert r[col] == pytest.approx(exp[col]), col
        for c in ("null", "shuffle", "random"):
            side = want.get((*key[:-1], c)) if control == "none" else None
            if side is None:
                assert r[f"{c}_success"] is None
            else:
                seen.add((*key[:-1], c))
                assert r[f"{c}_success"] == pytest.approx(side["success"])
                assert (r[f"{c}_lo"], r[f"{c}_hi"]) == pytest.approx(side["ci"])
                assert r[f"{c}_n"] == side["n"]
    assert seen == set(want)  # every group of records appears exactly once
    text = next(r for r in rows if r["label"] == "text" and r["budget"] == 64)
    assert text["n"] == 24  # two seed blocks pooled
    kv = board.families["KVLookup"][0]
    assert kv["n"] == 7 and kv["planned"] == 10  # a partial cell is shown as such


def test_files_markdown_html_and_plots(sweep, tmp_path):
    root, _ = sweep
    board = build_leaderboard(root, tmp_path / "out")
    names = {p.name for p in board.files}
    assert {"leaderboard.md", "leaderboard.html", "leaderboard.json"} <= names
    assert {"secretrelay_success_vs_bits.png", "secretrelay_latency_vs_success.png"} <= names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in board.files if p.suffix == ".png")
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## SecretRelay" in md and "## KVLookup" in md
    assert "| control null | control shuffle | control random |" in md
    graft = next(ln for ln in md.splitlines() if "activation-graft | layer=2 " in ln)
    assert graft.count("%") >= 4  # its own success and its three controls, on one line
    assert "7 of 10" in md  # the partial cell
    html = (tmp_path / "out" / "leaderboard.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "src='http" not in html and "<link" not in html


def test_pareto_frontier():
    pts = [(0, 0.1), (8, 0.5), (16, 0.4), (32, 0.9), (64, 0.9), (4, 0.1)]
    assert pareto(pts) == [(0, 0.1), (8, 0.5), (32, 0.9)]


def test_cli_and_errors(sweep, tmp_path):
    root, _ = sweep
    res = CliRunner().invoke(app, ["leaderboard", str(root), "--out", str(tmp_path), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "SecretRelay" in res.output and "activation-graft" in res.output
    assert not list(tmp_path.glob("*.png"))
    with pytest.raises(SweepError, match="is not a sweep directory"):
        build_leaderboard(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match="holds no sweep cells"):
        build_leaderboard(tmp_path / "empty")


def _row(channel, n, k, controls=None, options=""):
    r = {"channel": channel, "options": options, "level": 0, "model": "m", "n": n, "successes": k}
    for c in ("null", "shuffle", "random"):
        r[f"{c}_success"] = None if controls is None else controls[c] / n
        r[f"{c}_n"] = None if controls is None else n
    return r


def test_gate_column_tests_every_control_and_p0():
    from lpca_protocols.leaderboard import add_gate

    low = {"null": 20, "shuffle": 22, "random": 10}
    rows = [
        _row("none", 200, 0),
        _row("latent-codebook", 200, 200, low),
        _row("graft", 200, 60, {"null": 20, "shuffle": 50, "random": 10}),  # does not beat shuffle
        _row("text", 200, 200),  # no controls: no gate
    ]
    add_gate(rows)
    assert [r["gate"] for r in rows] == [None, "pass", "fail", None]
    assert rows[1]["gate_p"] < 1e-30 and rows[2]["gate_p"] > 0.01
    few = [_row("none", 96, 0), _row("cipher", 96, 96, {"null": 10, "shuffle": 11, "random": 0})]
    add_gate(few)
    assert few[1]["gate"] == "pass*"  # passes the test, on fewer than the 200 episodes required
    orphan = [_row("cipher", 200, 200, low)]  # no P0 row to compare with: cannot pass
    add_gate(orphan)
    assert orphan[0]["gate"] == "fail"
