"""The runner and the text baselines: exact bits, caps, schemas, rounds, run directories, reproducibility."""

import json

import pytest
from typer.testing import CliRunner

import lpca_models
from lpca_models.agents import LMAgent
from lpca_protocols import ChannelError, Requirement
from lpca_protocols.channel import Channel, truncate_utf8
from lpca_protocols.channels.retrieval import pack, rank_units
from lpca_protocols.channels.structured import parse_structured
from lpca_protocols.cli import app
from lpca_protocols.runner import RunError, check_requirements, run

TINY = "tiny-random-llama"


@pytest.fixture(scope="module")
def agent():
    return LMAgent(lpca_models.load(TINY), max_new_tokens=16)


def go(agent, channel, env="lpca/SecretRelay-v0", **kw):
    kw.setdefault("episodes", 6)
    return run(env, channel, TINY, agent=agent, out_dir=None, batch_size=4, **kw)


@pytest.mark.parametrize(
    "channel,opts,bits",
    [
        ("none", {}, None),
        ("text", {"max_new_tokens": 12}, None),
        ("text", {"forward_view": True}, None),
        ("text-budget", {"max_new_tokens": 12}, 40),
        ("summary", {"cap_bytes": 6}, None),
        ("retrieval", {}, 96),
        ("structured", {"max_new_tokens": 12}, None),
    ],
)
def test_bits_are_exact_and_caps_hold(agent, channel, opts, bits):
    r = go(agent, channel, channel_options=opts, budget_bits_per_message=bits)
    for rec in r.records:
        assert rec["bits"] == sum(m["bits"] for m in rec["messages"] if m["delivered"])
        assert all(m["bits"] % 8 == 0 for m in rec["messages"])  # text costs 8 bits per UTF-8 byte
        if bits is not None:
            assert all(m["bits"] <= bits for m in rec["messages"])
        if channel == "summary":
            assert all(m["bits"] <= 48 for m in rec["messages"])
        assert not rec["violations"]
    if channel == "none":
        assert all(rec["bits"] == 0 for rec in r.records)


def test_truncation_respects_utf8_boundaries():
    assert truncate_utf8("héllo", 2) == b"h"  # never half of 'é'
    assert truncate_utf8("héllo", 3) == "hé".encode()
    assert truncate_utf8("abc", 10) == b"abc"
    assert truncate_utf8("日本語", 4).decode() == "日"


def test_forwarded_view_is_the_ceiling_of_scripted_text(agent):
    r = go(agent, "text", channel_options={"forward_view": True})
    for rec in r.records:
        assert rec["messages"][0]["sender"] == "A" and rec["messages"][0]["bits"] > rec["info_bits"]


def test_structured_messages_validate_against_the_family_schema():
    ok, why = parse_structured("KVLookup", 'Sure! {"pets": {"Nina": "owl", "Omar": "cat"}} Hope this helps')
    assert ok == '{"pets":{"Nina":"owl","Omar":"cat"}}' and why == ""
    for bad in ('{"pets": ["owl"]}', '{"pets": {"Nina": "owl"}, "extra": 1}', "no json here", '{"pets": {'):
        assert parse_structured("KVLookup", bad)[0] is None
    assert parse_structured("Arithmetic", '{"values": {"a": "three"}}')[0] is None
    assert parse_structured("Arithmetic", '{"values": {"a": 3}}')[0] == '{"values":{"a":3}}'


def test_retrieval_ranks_the_needed_unit_first():
    units = ["Yusuf = fox", "Ahmed = cow", "Clara = fox", "Quinn = rabbit"]
    order = rank_units(units, "You need the pet of: Quinn.")
    assert units[order[0]] == "Quinn = rabbit"
    assert pack(units, order, 14) == "Quinn = rabbit"
    assert pack(units, order, 3) == ""


def test_two_way_rounds(agent):
    r = go(agent, "text", env="lpca/KVLookup-v0", channel_options={"ask": True, "max_new_tokens": 8})
    for rec in r.records:
        rounds = [(m["round"], m["sender"]) for m in rec["messages"]]
        assert (1, "B") in rounds and (2, "A") in rounds
    r = go(agent, "retrieval", env="lpca/KVLookup-v0", budget_bits_per_message=200)
    assert all([m["sender"] for m in rec["messages"]] == ["B", "A"] for rec in r.records)


def test_reproducible_and_recorded(agent, tmp_path):
    kw = dict(episodes=5, channel_options={"max_new_tokens": 8}, batch_size=2)
    a = run("lpca/SecretRelay-v0", "text", TINY, agent=agent, out_dir=tmp_path, **kw)
    b = run("lpca/SecretRelay-v0", "text", TINY, agent=agent, out_dir=tmp_path, **kw)
    strip = lambda recs: [{k: v for k, v in r.items() if not k.startswith("time_")} for r in recs]  # noqa: E731
    assert strip(a.records) == strip(b.records)
    assert a.run_dir != b.run_dir and b.run_dir.is_dir()  # same config, same second: two run dirs
    d = a.run_dir
    lines = (d / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(x)["seed"] for x in lines] == [0, 1, 2, 3, 4]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["env_id"] == "lpca/SecretRelay-v0" and cfg["channel_options"] == {"max_new_tokens": 8}
    meta = json.loads((d / "meta.json").read_text())
    assert len(meta["git_commit"]) in (40, 7) or meta["git_commit"] == "unknown"
    assert "torch" in meta["versions"] and "pettingzoo" in meta["versions"]
    summary = json.loads((d / "summary.json").read_text())
    assert (
        summary["episodes"] == 5 and 0 <= summary["ci95"][0] <= summary["success_rate"] <= summary["ci95"][1]
    )
    rec = a.records[0]
    for key in (
        "task_id",
        "seed",
        "success",
        "score",
        "bits",
        "info_bits",
        "tokens_generated",
        "prompt_tokens",
        "forward_passes",
        "time_sender_s",
        "time_channel_s",
        "time_receiver_s",
        "messages",
    ):
        assert key in rec


@pytest.mark.parametrize(
    "kw,err,match",
    [
        ({"env_id": "lpca/Nope-v0"}, RunError, "unknown env id"),
        ({"channel": "telepathy"}, KeyError, "known channels"),
        ({"level": 9}, RunError, "level must be one of"),
        ({"episodes": 0}, RunError, "episodes must be"),
        ({"channel": "retrieval", "rounds": 1, "budget_bits_per_message": 64}, RunError, "needs 2 rounds"),
        ({"budget_bits_per_message": -1}, RunError, "max_bits_per_message"),
        ({"colour": "blue"}, RunError, "unknown run option"),
        ({"channel": "text-budget"}, ChannelError, "needs a cap"),
    ],
)
def test_bad_runs(agent, kw, err, match):
    args = {"env_id": "lpca/SecretRelay-v0", "channel": "text", "episodes": 2} | kw
    env_id, channel = args.pop("env_id"), args.pop("channel")
    with pytest.raises(err, match=match):
        run(env_id, channel, TINY, agent=agent, out_dir=None, **args)


def test_requirements_are_enforced(agent):
    class SameModel(Channel):
        name = "same-model-test"
        requires = Requirement.WHITE_BOX_SAME_MODEL

    other = LMAgent(lpca_models.load("tiny-random-gemma3"))
    with pytest.raises(ChannelError, match="same model"):
        check_requirements(SameModel(), agent, other)
    check_requirements(SameModel(), agent, agent)
    with pytest.raises(ChannelError, match="language-model sender"):
        check_requirements(SameModel(), object(), agent)


def test_cli_run_errors_are_helpful():
    r = CliRunner()
    res = r.invoke(app, ["run", "--env", "lpca/SecretRelay-v0", "--channel", "text", "--episodes", "0"])
    assert res.exit_code == 2
    res = r.invoke(app, ["run", "--env", "lpca/SecretRelay-v0", "--channel", "text", "--opt", "novalue"])
    assert res.exit_code == 2 and "key=value" in res.output
    res = r.invoke(app, ["run", "--env", "lpca/SecretRelay-v0", "--channel", "text", "--model", "gpt9"])
    assert res.exit_code == 2 and "not a zoo id" in res.output and "tiny-random-llama" in res.output


def test_cli_run_prints_table_and_run_dir(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--env",
            "lpca/SecretRelay-v0",
            "--channel",
            "none",
            "--model",
            TINY,
            "--episodes",
            "3",
            "--out",
            str(tmp_path),
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "success" in res.output and "run directory:" in res.output
    assert len(list(tmp_path.iterdir())) == 1
