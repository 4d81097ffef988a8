"""Codec training: datasets and their resume, config checks, deterministic resume, the gate, the CLI.

Everything runs on tiny-random-llama (4 layers, d=64, byte tokenizer): a SmolLM2 forward +
backward costs ~50x more on CPU and the gate test would not fit the suite's budget. A random
model is a fair test of the plumbing: the receiver has no prior for colour words, so any
success above the controls is information the codec carried.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import lpca_envs
import lpca_models
from lpca_envs import Budget
from lpca_models.agents import LMAgent
from lpca_protocols.channel import AgentContext
from lpca_protocols.packet_codec import load_checkpoint
from lpca_protocols.training import (
    DatasetError,
    DatasetSpec,
    TrainConfigError,
    TrainError,
    collect,
    load,
    parse_config,
    run_gate,
    train_codec,
    two_proportion_p,
)
from lpca_protocols.training.cli import train_app

torch = pytest.importorskip("torch")
HAS_MLX = importlib.util.find_spec("mlx") is not None

#: The gate runs: SecretRelay level 0 (a colour among 8) on tiny-random-llama. Measured: ~50 s of
#: training on one thread, held-out teacher-forced exact match ~60-80%; the gate's 5 x 200 episodes
#: ~25 s. Both codecs reach 177/200 against 19/200 shuffled and 0/200 null/random/P0.
GATE_CONFIG = {
    "model": "tiny-random-llama",
    "env": "lpca/SecretRelay-v0",
    "level": 0,
    "layer": 2,
    "train_episodes": 256,
    "eval_episodes": 64,
    "shard_size": 128,
    "threads": 1,
    "codec": {"kind": "prefix", "k": 8, "m": 8, "width": 64, "bounded": False},
    "optim": {"steps": 300, "batch_size": 16, "lr": 1e-2, "eval_every": 100, "checkpoint_every": 100},
}
SMALL = {
    **GATE_CONFIG,
    "train_episodes": 24,
    "eval_episodes": 8,
    "shard_size": 8,
    "optim": {"steps": 6, "batch_size": 4, "lr": 1e-2, "eval_every": 3, "checkpoint_every": 3},
}


class Killed(Exception):
    """Stands for a kill in the middle of a collection."""


@pytest.fixture(scope="module")
def tiny():
    return LMAgent(lpca_models.load("tiny-random-llama", backend="torch"))


@pytest.fixture(scope="module")
def tiny_mlx():
    return LMAgent(lpca_models.load("tiny-random-llama", backend="mlx")) if HAS_MLX else None


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------- datasets


def test_dataset_collection_resumes_skipping_finished_shards(tmp_path, tiny, monkeypatch):
    spec = DatasetSpec(
        "tiny-random-llama", "lpca/SecretRelay-v0", 0, seed=10, episodes=10, layer=2, shard_size=4
    )
    whole = load(collect(spec, tmp_path / "whole", tiny))
    assert len(whole) == 10 and whole.arrays["seeds"].tolist() == list(range(10, 20))
    assert whole.arrays["hidden"].shape[-1] == 64 and (whole.arrays["target_len"] > 1).all()
    # an interrupted collection: the second shard's forward fails once
    import lpca_protocols.training.dataset as ds

    real, calls, killed = ds.episode_row, [], []

    def flaky(env, seed, *a):
        calls.append(seed)
        if seed == 15 and not killed:
            killed.append(seed)
            raise Killed
        return real(env, seed, *a)

    monkeypatch.setattr(ds, "episode_row", flaky)
    with pytest.raises(Killed):
        collect(spec, tmp_path / "cut", tiny)
    with pytest.raises(DatasetError, match=r"shard-00001\.safetensors is missing"):
        load(tmp_path / "cut")
    calls.clear()
    collect(spec, tmp_path / "cut", tiny)
    assert calls == list(range(14, 20))  # shard 0 (seeds 10..13) was not redone
    resumed = load(tmp_path / "cut")
    for key, a in whole.arrays.items():
        np.testing.assert_array_equal(resumed.arrays[key], a)
    other = DatasetSpec(
        "tiny-random-llama", "lpca/SecretRelay-v0", 0, seed=10, episodes=10, layer=1, shard_size=4
    )
    with pytest.raises(DatasetError, match="holds another dataset"):
        collect(other, tmp_path / "cut", tiny)


def test_a_p1_teacher_dataset_holds_the_p1_receivers_answer_distribution(tmp_path, tiny, one_thread):
    from lpca_protocols.plugins import make_channel
    from lpca_protocols.training.dataset import TOPK

    spec = DatasetSpec(
        "tiny-random-llama", "lpca/SecretRelay-v0", 0, seed=3, episodes=2, layer=2, teacher="p1-view"
    )
    data = load(collect(spec, tmp_path / "p1", tiny))
    g = data.arrays["target"].shape[1]
    assert data.arrays["teacher_ids"].shape == (2, g, TOPK) == data.arrays["teacher_logp"].shape
    # the first answer position: the P1 receiver's next-token distribution (its view forwarded as text)
    env = lpca_envs.make("lpca/SecretRelay-v0", level=0)
    obs, _ = env.reset(seed=3)
    t = env.task
    ctx = {
        a: AgentContext(a, obs[a]["view"], t, t.family, 1, Budget(), tiny, b, is_answerer=a == "B")
        for a, b in (("A", "B"), ("B", "A"))
    }
    chan = make_channel("text", forward_view=True)
    ctx["B"].received.extend(chan.send([ctx["A"]]))
    (cond,) = chan.receive([ctx["B"]])
    z = tiny.backend.prompt_logits(tiny.prompt(tiny.answer_turn(t.family, ctx["B"].view, cond))).astype(
        np.float64
    )
    logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
    top = np.argsort(-logp, kind="stable")[:TOPK]
    assert data.arrays["teacher_ids"][0, 0].tolist() == top.tolist()
    np.testing.assert_allclose(data.arrays["teacher_logp"][0, 0], logp[top], atol=1e-4)
    p1 = DatasetSpec("tiny-random-llama", "lpca/SecretRelay-v0", 0, seed=3, episodes=2, layer=2, teacher="p1")
    generated = load(collect(p1, tmp_path / "p1-generated", tiny)).arrays  # the sender writes its message
    assert generated["teacher_logp"].shape == (2, g, TOPK) and (generated["teacher_logp"] <= 0).all()
    with pytest.raises(DatasetError, match="teacher must be one of"):
        collect(
            DatasetSpec("tiny-random-llama", "lpca/SecretRelay-v0", 0, 3, 2, 2, teacher="x"),
            tmp_path / "x",
            tiny,
        )


def test_the_teacher_kl_objective_trains_and_is_logged(tmp_path, tiny, one_thread):
    cfg = {
        **SMALL,
        "out": str(tmp_path / "run"),
        "data_dir": str(tmp_path / "data"),
        "teacher": "p1-view",
        "codec": {"kind": "prefix", "k": 3, "m": 8, "width": 32},
        "objective": {"answer_ce": 0.0, "teacher_kl": 1.0},
    }
    res = train_codec(cfg, agent=tiny, progress=False)
    last = res.history[-1]
    assert {"kl", "kl_shuffle", "kl_null"} <= set(last) and 0 < last["kl"] < 10
    assert 0 < last["train_loss"] < 10  # the KL alone (answer_ce is off)


def test_config_errors_name_the_key():
    with pytest.raises(TrainConfigError, match=r"codec\.kk"):
        parse_config({"codec": {"kk": 3}})
    with pytest.raises(TrainConfigError, match=r"objective\.anchor"):
        parse_config({"objective": {"anchor": -1}})
    with pytest.raises(TrainConfigError, match="overlap"):
        parse_config({"train_seed": 0, "train_episodes": 100, "eval_seed": 50})
    book = {"kind": "codebook"}
    for codec, match in (
        ({**book, "quantizer": "lfq"}, r"codec\.quantizer"),
        ({**book, "quantizer": "fsq"}, "fsq_levels must be a non-empty list"),
        ({**book, "quantizer": "fsq", "fsq_levels": [8, 2]}, "ints >= 3"),
        ({**book, "quantizer": "fsq", "fsq_levels": [8, 5], "codebook_size": 16}, r"prod\(fsq_levels\) = 40"),
        ({**book, "rvq_levels": 2}, "rvq_levels applies to quantizer='rvq'"),
        ({**book, "fsq_levels": [5, 5]}, "fsq_levels applies to quantizer='fsq'"),
        ({"quantizer": "rvq"}, "kind='codebook' only"),
        ({"inject_layer": -2}, r"codec\.inject_layer"),
        ({"inject_mode": "add"}, "inject_mode needs inject_layer"),
    ):
        with pytest.raises(TrainConfigError, match=match):
            parse_config({"codec": codec})
    assert (
        parse_config({"codec": {**book, "quantizer": "fsq", "fsq_levels": [8, 5, 5, 5]}}).codec.alphabet
        == 1000
    )
    with pytest.raises(TrainConfigError, match="teacher_kl needs teacher"):
        parse_config({"objective": {"teacher_kl": 1.0}})
    with pytest.raises(TrainConfigError, match="only used by teacher_kl"):
        parse_config({"teacher": "p1"})
    with pytest.raises(TrainConfigError, match=r"at teacher"):
        parse_config({"teacher": "graft", "objective": {"teacher_kl": 1.0}})
    with pytest.raises(TrainConfigError, match="set anchor = 0"):
        parse_config({"codec": {"inject_layer": 2}, "objective": {"anchor": 0.1}})


# ---------------------------------------------------------------------------- trainer


def test_training_resumes_to_the_same_codec_and_writes_checkpoints(tmp_path, tiny, one_thread):
    cfg = {**SMALL, "out": str(tmp_path / "a"), "data_dir": str(tmp_path / "data")}
    full = train_codec(cfg, agent=tiny, progress=False)
    assert full.step == 6 and [h["step"] for h in full.history] == [3, 6]
    cut = {**cfg, "out": str(tmp_path / "b")}
    part = train_codec(cut, agent=tiny, progress=False, stop_after=4)
    assert part.checkpoint is None and part.step == 4
    rest = train_codec(cut, agent=tiny, progress=False)
    assert rest.resumed_from == 4 and rest.step == 6
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    assert a.base_fingerprint == tiny.backend.info.fingerprint and a.meta["step"] == 6
    for name, w in a.weights.items():
        np.testing.assert_array_equal(b.weights[name], w, err_msg=name)
    assert (tmp_path / "a" / "checkpoints" / "step-000003" / "codec.json").exists()
    with pytest.raises(TrainError, match="another training run"):
        train_codec({**cfg, "seed": 1}, agent=tiny, progress=False)


def test_a_run_started_before_new_config_keys_existed_still_resumes(tmp_path, tiny, one_thread):
    """A run directory whose config.json predates keys added since (they take their defaults) is the
    same run, not another: a prefix codec's full dump lists quantizer keys, which must not fail."""
    cfg = {**SMALL, "out": str(tmp_path / "a"), "data_dir": str(tmp_path / "data")}
    train_codec(cfg, agent=tiny, progress=False, stop_after=2)
    f = tmp_path / "a" / "config.json"
    old = json.loads(f.read_text())
    del old["codec"]["positions"], old["objective"]["answer_probe"]
    f.write_text(json.dumps(old))
    assert train_codec(cfg, agent=tiny, progress=False).resumed_from == 2
    with pytest.raises(TrainError, match=r"config differs in \['codec'\]"):
        train_codec({**cfg, "codec": {"kind": "prefix", "k": 5}}, agent=tiny, progress=False)


def test_every_objective_term_and_the_codebook_kind_train(tmp_path, tiny, one_thread):
    cfg = {
        **SMALL,
        "out": str(tmp_path / "cb"),
        "data_dir": str(tmp_path / "data"),
        "codec": {"kind": "codebook", "k": 2, "m": 4, "width": 32, "codebook_size": 8, "quantize_after": 2},
        "objective": {"infonce": 0.5, "anchor": 0.1, "reconstruction": 0.1},
    }
    res = train_codec(cfg, agent=tiny, progress=False)
    ckpt = load_checkpoint(res.checkpoint)
    assert ckpt.spec.kind == "codebook" and ckpt.weights["codebook"].shape == (2, 8, 4)
    usage = res.history[-1]["codebook"]
    assert usage["size"] == 8 and usage["symbols"] == 2 * 8 and 1 <= usage["perplexity"] <= 8


def test_the_answer_probe_term_resumes_exactly_and_stays_out_of_the_checkpoint(tmp_path, tiny, one_thread):
    """The probe's weights are training state (saved for resume) but never part of the codec."""
    cfg = {
        **SMALL,
        "out": str(tmp_path / "a"),
        "data_dir": str(tmp_path / "data"),
        "codec": {"kind": "prefix", "k": 3, "m": 8, "width": 32, "positions": 16},
        "objective": {"answer_probe": 1.0},
    }
    full = train_codec(cfg, agent=tiny, progress=False)
    cut = {**cfg, "out": str(tmp_path / "b")}
    train_codec(cut, agent=tiny, progress=False, stop_after=4)
    rest = train_codec(cut, agent=tiny, progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    assert set(a.weights) == set(a.spec.weight_shapes()) and "enc.pos" in a.weights
    for name, w in a.weights.items():
        np.testing.assert_array_equal(b.weights[name], w, err_msg=name)
    plain = train_codec({**cfg, "out": str(tmp_path / "c"), "objective": {}}, agent=tiny, progress=False)
    assert not np.array_equal(
        load_checkpoint(plain.checkpoint).weights["enc.out.weight"], a.weights["enc.out.weight"]
    )
    with pytest.raises(TrainConfigError, match=r"objective\.answer_probe"):
        parse_config({"objective": {"answer_probe": -1}})


@pytest.mark.parametrize(
    "quant,slots",
    [
        ({"quantizer": "rvq", "rvq_levels": 3, "codebook_size": 4}, 2 * 3),
        ({"quantizer": "fsq", "fsq_levels": [5, 3, 4]}, 2),
    ],
    ids=["rvq", "fsq"],
)
def test_rvq_and_fsq_train_resume_and_log_codebook_usage(tmp_path, tiny, one_thread, quant, slots):
    codec = {"kind": "codebook", "k": 2, "m": 4, "width": 32, "quantize_after": 2, **quant}
    cfg = {**SMALL, "out": str(tmp_path / "a"), "data_dir": str(tmp_path / "data"), "codec": codec}
    full = train_codec(cfg, agent=tiny, progress=False)
    cut = {**cfg, "out": str(tmp_path / "b")}
    assert train_codec(cut, agent=tiny, progress=False, stop_after=4).checkpoint is None
    rest = train_codec(cut, agent=tiny, progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    for name, w in a.weights.items():
        np.testing.assert_array_equal(b.weights[name], w, err_msg=name)
    size = 4 if quant["quantizer"] == "rvq" else 60
    assert a.spec.quantizer == quant["quantizer"] and a.spec.codebook_size == size
    assert a.spec.symbols_per_message == slots
    last = full.history[-1]
    assert last["codebook"]["symbols"] == 8 * slots and last["codebook"]["size"] == size
    per = last["codebook_slots"]
    assert len(per) == slots and all(u["symbols"] == 8 and u["used"] + u["dead"] == size for u in per)
    assert all(1 <= u["perplexity"] <= u["used"] + 1e-9 for u in per)


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_mid_layer_injection_trains_through_the_receivers_own_path(
    tmp_path, tiny, tiny_mlx, one_thread, mode
):
    """The trainer's hooked receiver forward equals the backends' (torch, MLX); the injection matters."""
    from lpca_models import Conditioning
    from lpca_protocols.plugins import make_channel
    from lpca_protocols.training.trainer import _datasets, _Run

    codec = {"kind": "prefix", "k": 3, "m": 8, "width": 32, "inject_layer": 2, "inject_mode": mode}
    cfg = parse_config(
        {**SMALL, "out": str(tmp_path / "run"), "data_dir": str(tmp_path / "data"), "codec": codec}
    )
    res = train_codec(cfg, agent=tiny, progress=False)
    ckpt = load_checkpoint(res.checkpoint)
    assert (ckpt.spec.inject_layer, ckpt.spec.inject_mode) == (2, mode)
    # the training path, teacher-forced: logits at the first answer position of train seeds 0..2
    run = _Run(cfg, ckpt.spec, tiny.backend, *_datasets(cfg, 2, tiny))
    run.net.load_weights(ckpt.weights)
    run.net.eval()
    with torch.no_grad():
        vectors = run.net.decode(run.packets(run.train, torch.arange(3)))
        trained, _, _ = run.answer_logits(vectors, run.train, torch.arange(3))
    agents = [tiny] + ([tiny_mlx] if tiny_mlx is not None else [])
    logits = {}
    for agent in agents:
        chan = make_channel("latent-prefix", checkpoint=str(res.checkpoint), codec="fp32")
        env = lpca_envs.make("lpca/SecretRelay-v0", level=0)
        rows = []
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            t = env.task
            rows.append(
                {
                    a: AgentContext(
                        a, obs[a]["view"], t, t.family, 1, Budget(), agent, b, is_answerer=a == "B"
                    )
                    for a, b in (("A", "B"), ("B", "A"))
                }
            )
        for r, m in zip(rows, chan.send([r["A"] for r in rows])):
            r["B"].received.append(m)
        conds = chan.receive([r["B"] for r in rows])
        out = []
        for r, c in zip(rows, conds):
            (inj,) = c.injections
            assert inj.layer == 2 and inj.mode == mode and not c.prefix.any() and len(inj.positions) == 3
            prompt = agent.prompt(agent.answer_turn(r["B"].family, r["B"].view, c))
            with_packet = agent.backend.prompt_logits(prompt, c)
            without = agent.backend.prompt_logits(prompt, Conditioning(prefix=c.prefix))  # placeholders only
            # float noise between the paths is ~1e-5; after 6 steps the packet moves the logits by
            # ~2 (replace) and ~0.04 (add: the tiny model's residual there has norm ~40)
            assert np.abs(with_packet - without).max() > 0.01
            out.append(with_packet)
        logits[agent.backend.info.framework] = np.stack(out)
    np.testing.assert_allclose(logits["torch"], trained[:, 0].numpy(), atol=1e-4, rtol=0)
    if HAS_MLX:
        np.testing.assert_allclose(logits["mlx"], logits["torch"], atol=1e-3, rtol=0)
    with pytest.raises(TrainError, match=r"inject_layer must be in 0\.\.3"):
        train_codec(
            {**cfg.model_dump(), "out": str(tmp_path / "bad"), "codec": {**codec, "inject_layer": 4}},
            agent=tiny,
        )


def test_shared_prompt_cache_equals_the_full_receiver_forward(tmp_path, tiny):
    from lpca_protocols.packet_codec import CodecSpec
    from lpca_protocols.training.trainer import _datasets, _Run

    cfg = parse_config({**SMALL, "out": str(tmp_path / "x"), "data_dir": str(tmp_path / "data")})
    train, evald = _datasets(cfg, 2, tiny)
    spec = CodecSpec(kind="prefix", k=3, m=4, d_src=64, d_out=64, source_layer=2, width=32)
    run = _Run(cfg, spec, tiny.backend, train, evald)
    assert run.shared is not None
    idx = torch.arange(5)
    prefix = torch.randn(5, 3, 64)
    with torch.no_grad():
        cached, tgt, mask = run.answer_logits(prefix, run.train, idx)
        run.shared = None
        full, tgt2, mask2 = run.answer_logits(prefix, run.train, idx)
    assert torch.equal(tgt, tgt2) and torch.equal(mask, mask2)
    assert (cached - full)[mask].abs().max() < 1e-4


# ---------------------------------------------------------------------------- the gate


def test_two_proportion_test():
    assert two_proportion_p(150, 200, 25, 200) < 1e-30
    assert 0.4 < two_proportion_p(20, 200, 20, 200) <= 0.5
    assert two_proportion_p(10, 200, 40, 200) > 0.99
    assert two_proportion_p(0, 200, 0, 200) == 1.0


CODEBOOK = {"kind": "codebook", "k": 8, "m": 8, "width": 64, "bounded": False, "codebook_size": 16}


@pytest.mark.parametrize(
    "codec,bits",
    [
        (GATE_CONFIG["codec"], 8 * 8 * 16),  # k x m fp16 values
        ({**CODEBOOK, "quantize_after": 150}, 8 * 4),  # k indices of ceil(log2 16) bits
    ],
    ids=["prefix", "codebook"],
)
def test_a_short_training_run_passes_the_gate(tmp_path, tiny, one_thread, codec, bits):
    cfg = {**GATE_CONFIG, "out": str(tmp_path / "run"), "codec": codec}
    res = train_codec(cfg, agent=tiny, progress=False)
    report = run_gate(res.checkpoint, env_id="lpca/SecretRelay-v0", level=0, agent=tiny, episodes=200)
    print(report.table())
    assert report.passed, report.table()
    assert report.episodes == 200 and report.rate >= 0.5
    refs = {r.name: r for r in report.references}
    assert set(refs) == {"shuffle", "null", "random", "p0"}
    assert all(r.p_value < 0.01 and r.rate < report.rate for r in refs.values())
    assert report.bits_per_episode == bits
    if codec["kind"] == "codebook":
        assert report.usage is not None and report.usage.symbols == 200 * 8 and report.usage.perplexity > 2
        return
    # the CLI's gate command: too few episodes is a failed gate (exit 1), whatever the rates
    out = CliRunner().invoke(train_app, ["gate", str(res.checkpoint), "--episodes", "16"])
    assert out.exit_code == 1, out.output
    assert "gate FAILED" in out.output and "the gate needs >= 200" in out.output


def test_cli_trains_from_a_toml_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LPCA_CODECS_DIR", str(tmp_path / "codecs"))
    cfg = tmp_path / "codec.toml"
    small = dict(SMALL, out=str(tmp_path / "run"))
    lines = [f"{k} = {json.dumps(v)}" for k, v in small.items() if not isinstance(v, dict)]
    for section in ("codec", "optim"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in small[section].items()]
    cfg.write_text("\n".join(lines).replace("false", "false").replace("true", "true") + "\n")
    res = CliRunner().invoke(train_app, ["codec", str(cfg), "--no-progress", "--name", "cli-relay"])
    assert res.exit_code == 0, res.output
    assert "trained 6 steps" in res.output and (tmp_path / "run" / "codec" / "codec.safetensors").exists()
    assert "published as 'cli-relay'" in res.output
    assert (tmp_path / "codecs" / "cli-relay" / "codec.json").exists()
    res = CliRunner().invoke(train_app, ["codec", str(cfg), "--name", "../up"])
    assert res.exit_code == 2 and "codec name" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "tiny-random-llama"\nlayers = 3\n')
    res = CliRunner().invoke(train_app, ["codec", str(bad)])
    assert res.exit_code == 2 and "layers" in res.output
    shutil.rmtree(tmp_path / "run")
