"""Codec training: datasets and their resume, config checks, deterministic resume, the gate, the CLI.

Everything runs on tiny-random-llama (4 layers, d=64, byte tokenizer): a SmolLM2 forward +
backward costs ~50x more on CPU and the gate test would not fit the suite's budget. A random
model is a fair test of the plumbing: the receiver has no prior for colour words, so any
success above the controls is information the codec carried.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import lpca_models
from lpca_models.agents import LMAgent
from lpca_protocols.channels._codec_nets import load_checkpoint
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


def test_config_errors_name_the_key():
    with pytest.raises(TrainConfigError, match=r"codec\.kk"):
        parse_config({"codec": {"kk": 3}})
    with pytest.raises(TrainConfigError, match=r"objective\.anchor"):
        parse_config({"objective": {"anchor": -1}})
    with pytest.raises(TrainConfigError, match="overlap"):
        parse_config({"train_seed": 0, "train_episodes": 100, "eval_seed": 50})


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


def test_shared_prompt_cache_equals_the_full_receiver_forward(tmp_path, tiny):
    from lpca_protocols.channels._codec_nets import CodecSpec
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


def test_cli_trains_from_a_toml_config(tmp_path):
    cfg = tmp_path / "codec.toml"
    small = dict(SMALL, out=str(tmp_path / "run"))
    lines = [f"{k} = {json.dumps(v)}" for k, v in small.items() if not isinstance(v, dict)]
    for section in ("codec", "optim"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in small[section].items()]
    cfg.write_text("\n".join(lines).replace("false", "false").replace("true", "true") + "\n")
    res = CliRunner().invoke(train_app, ["codec", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "trained 6 steps" in res.output and (tmp_path / "run" / "codec" / "codec.safetensors").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "tiny-random-llama"\nlayers = 3\n')
    res = CliRunner().invoke(train_app, ["codec", str(bad)])
    assert res.exit_code == 2 and "layers" in res.output
    shutil.rmtree(tmp_path / "run")
