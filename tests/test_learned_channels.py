"""Channels `latent-prefix` and `latent-codebook`: checkpoints, both frameworks, controls, errors.

These use codecs with random weights (no training: fast); the trained behaviour and the
gate are in tests/test_training.py.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

import lpca_envs
import lpca_models
from lpca_envs import Budget
from lpca_envs.errors import LPCAError
from lpca_models.agents import LMAgent
from lpca_protocols import codecs
from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels._codec_nets import (
    CheckpointError,
    CheckpointMismatchError,
    CodecRunner,
    CodecSpec,
    load_checkpoint,
    save_checkpoint,
    torch_net,
)
from lpca_protocols.plugins import make_channel

torch = pytest.importorskip("torch")
HAS_MLX = importlib.util.find_spec("mlx") is not None
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="mlx not installed")
#: torch and the MLX port compute the same float32 graph; measured max difference ~3e-7.
MLX_ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    return LMAgent(lpca_models.load("tiny-random-llama", backend="torch"), max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny_mlx():
    if not HAS_MLX:
        pytest.skip("mlx not installed")
    return LMAgent(lpca_models.load("tiny-random-llama", backend="mlx"), max_new_tokens=4)


def random_checkpoint(path, agent, kind="prefix", k=4, m=8, size=16, tail=0):
    info = agent.backend.info
    spec = CodecSpec(
        kind=kind,
        k=k,
        m=m,
        d_src=info.hidden_size,
        d_out=info.hidden_size,
        source_layer=2,
        tail=tail,
        width=32,
        heads=4,
        codebook_size=size if kind == "codebook" else 0,
    )
    torch.manual_seed(0)
    net = torch_net(spec)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        net.enc.mu.normal_(std=0.1)
        net.enc.sd.uniform_(0.5, 2.0)
        if kind == "codebook":
            net.codebook.normal_()
    save_checkpoint(path, spec, net.weights(), info.name, info.fingerprint, {"note": "random"})
    return path, net


def contexts(agent, n=3, seed=0):
    env = lpca_envs.make("lpca/SecretRelay-v0", level=0)
    rows = []
    for s in range(seed, seed + n):
        obs, _ = env.reset(seed=s)
        t = env.task
        rows.append(
            {
                a: AgentContext(a, obs[a]["view"], t, t.family, 1, Budget(), agent, b, is_answerer=a == "B")
                for a, b in (("A", "B"), ("B", "A"))
            }
        )
    return rows


def deliver(chan, rows):
    msgs = chan.send([r["A"] for r in rows])
    for r, m in zip(rows, msgs):
        r["B"].received.append(m)
    return msgs, chan.receive([r["B"] for r in rows])


# ---------------------------------------------------------------------------- checkpoints, frameworks


@pytest.mark.parametrize("kind", ["prefix", "codebook"])
def test_checkpoint_round_trip_gives_the_modules_own_outputs(tmp_path, tiny, kind):
    path, net = random_checkpoint(tmp_path / "c", tiny, kind)
    ckpt = load_checkpoint(path)
    assert ckpt.base_fingerprint == tiny.backend.info.fingerprint and ckpt.meta == {"note": "random"}
    runner = CodecRunner(ckpt)
    h = np.random.default_rng(1).standard_normal((11, 64)).astype(np.float32) * 3
    with torch.no_grad():
        want_p = net.encode(torch.from_numpy(h)[None])[0].numpy()
        want_d = net.decode(torch.from_numpy(want_p)[None])[0].numpy()
    np.testing.assert_array_equal(runner.encode(h, "torch"), want_p)
    np.testing.assert_array_equal(runner.decode(want_p, "torch"), want_d)
    if kind == "codebook":
        idx = runner.quantize(want_p)
        with torch.no_grad():
            assert idx.tolist() == net.nearest(torch.from_numpy(want_p)[None])[0].tolist()
            np.testing.assert_array_equal(runner.rows(idx), net.rows(torch.from_numpy(idx)[None])[0].numpy())


@needs_mlx
@pytest.mark.parametrize("kind", ["prefix", "codebook"])
def test_torch_and_mlx_forwards_agree(tmp_path, tiny, kind):
    runner = CodecRunner(load_checkpoint(random_checkpoint(tmp_path / "c", tiny, kind)[0]))
    for seed, t in ((0, 5), (1, 40)):
        h = np.random.default_rng(seed).standard_normal((t, 64)).astype(np.float32) * 4
        p_t, p_m = runner.encode(h, "torch"), runner.encode(h, "mlx")
        np.testing.assert_allclose(p_m, p_t, atol=MLX_ATOL, rtol=0)
        np.testing.assert_allclose(
            runner.decode(p_t, "mlx"), runner.decode(p_t, "torch"), atol=MLX_ATOL, rtol=0
        )


@needs_mlx
@pytest.mark.parametrize("name", ["latent-prefix", "latent-codebook"])
def test_the_channel_runs_on_both_backends_with_the_same_checkpoint(tmp_path, tiny, tiny_mlx, name):
    kind = "prefix" if name == "latent-prefix" else "codebook"
    path, _ = random_checkpoint(tmp_path / "c", tiny, kind)
    out = {}
    for agent in (tiny, tiny_mlx):
        chan = (
            make_channel(name, checkpoint=str(path), codec="fp32")
            if kind == "prefix"
            else make_channel(name, checkpoint=str(path))
        )
        msgs, conds = deliver(chan, contexts(agent, 3))
        out[agent.backend.info.framework] = (msgs, conds)
    (mt, ct), (mm, cm) = out["torch"], out["mlx"]
    assert [m.bits for m in mt] == [m.bits for m in mm]
    for a, b in zip(ct, cm):  # the backends' hidden states differ in float rounding only
        np.testing.assert_allclose(a.prefix, b.prefix, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------- bits and controls


def test_prefix_bits_follow_the_serializer(tmp_path, tiny):
    path, _ = random_checkpoint(tmp_path / "c", tiny, "prefix", k=4, m=32)
    for codec, bits in (("fp32", 4 * 32 * 32), ("fp16", 4 * 32 * 16), ("q8_0", 4 * 34 * 8)):
        msgs, conds = deliver(
            make_channel("latent-prefix", checkpoint=str(path), codec=codec), contexts(tiny, 2)
        )
        assert all(m.bits == bits and len(m.payload) == bits // 8 for m in msgs)
        assert all(c.prefix.shape == (4, 64) for c in conds)


@pytest.mark.parametrize("size,k", [(16, 4), (5, 3), (256, 2)])
def test_codebook_bits_are_k_times_ceil_log2_k(tmp_path, tiny, size, k):
    path, _ = random_checkpoint(tmp_path / "c", tiny, "codebook", k=k, size=size)
    msgs, _ = deliver(make_channel("latent-codebook", checkpoint=str(path)), contexts(tiny, 2))
    bits = k * math.ceil(math.log2(size))
    assert all(m.bits == bits and len(m.payload) == math.ceil(bits / 8) for m in msgs)
    assert msgs[0].meta["codec"] == f"index:size={size}"


def test_index_codec_round_trip_and_rejections():
    c = codecs.get("index:size=10")
    a = np.array([0, 9, 3, 7, 1], np.float32)
    data = c.encode(a)
    assert c.bits(a.shape) == 20 and len(data) == 3
    np.testing.assert_array_equal(c.decode(data, a.shape), a)
    assert codecs.from_wire(c.codec_id, c.params()) == c
    for bad in ([10.0], [-1.0], [1.5]):
        with pytest.raises(codecs.CodecError):
            c.encode(np.array(bad, np.float32))


@pytest.mark.parametrize("name", ["latent-prefix", "latent-codebook"])
def test_controls_change_the_payload_never_the_bits(tmp_path, tiny, name):
    kind = "prefix" if name == "latent-prefix" else "codebook"
    path, _ = random_checkpoint(tmp_path / "c", tiny, kind, size=256)
    sent = {}
    for control in ("none", "null", "shuffle", "random"):
        msgs, conds = deliver(make_channel(name, checkpoint=str(path), control=control), contexts(tiny, 4))
        assert len(conds) == 4 and all(c.prefix is not None for c in conds)
        sent[control] = msgs
    real = sent["none"]
    assert len({m.payload for m in real}) > 1  # different views, different packets
    for control in ("null", "random", "shuffle"):
        assert [m.bits for m in sent[control]] == [m.bits for m in real]
    assert [m.payload for m in sent["shuffle"]] == [m.payload for m in real[1:] + real[:1]]
    assert all(a.payload != b.payload for a, b in zip(sent["random"], real))
    decode = make_channel(name, checkpoint=str(path)).decode
    null = decode(contexts(tiny, 1)[0]["B"], sent["null"][0])
    assert not null.any()  # prefix: zeros; codebook: every index 0
    if kind == "codebook":
        rnd = np.concatenate([decode(contexts(tiny, 1)[0]["B"], m) for m in sent["random"]])
        assert rnd.min() >= 0 and rnd.max() < 256 and len(set(rnd.tolist())) > 1


# ---------------------------------------------------------------------------- errors


def test_bad_checkpoints_give_typed_errors(tmp_path, tiny):
    path, net = random_checkpoint(tmp_path / "good", tiny, "prefix")
    with pytest.raises(ChannelError, match="checkpoint=DIR"):
        make_channel("latent-prefix")
    with pytest.raises(CheckpointError, match="not a codec checkpoint"):
        make_channel("latent-prefix", checkpoint=str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="'prefix' codec"):
        make_channel("latent-codebook", checkpoint=str(path))
    # truncated weights
    trunc = tmp_path / "trunc"
    random_checkpoint(trunc, tiny, "prefix")
    w = trunc / "codec.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        make_channel("latent-prefix", checkpoint=str(trunc))
    # missing keys (a consistent file without some weights)
    from safetensors.numpy import save_file

    miss = tmp_path / "missing"
    random_checkpoint(miss, tiny, "prefix")
    weights = {n: a for n, a in net.weights().items() if not n.startswith("dec.out")}
    save_file(weights, str(miss / "codec.safetensors"))
    doc = json.loads((miss / "codec.json").read_text())
    doc.pop("weights_sha256")
    (miss / "codec.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"lacks weights \['dec.out.bias', 'dec.out.weight'\]"):
        load_checkpoint(miss)
    # corrupt config
    (miss / "codec.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid codec config"):
        load_checkpoint(miss)
    # another base model: refused when it meets this model
    other = tmp_path / "other"
    save_checkpoint(other, load_checkpoint(path).spec, net.weights(), "some-other-model", "f" * 64)
    chan = make_channel("latent-prefix", checkpoint=str(other))
    with pytest.raises(CheckpointMismatchError, match="some-other-model") as e:
        chan.send([contexts(tiny, 1)[0]["A"]])
    assert isinstance(e.value, LPCAError) and isinstance(e.value, ChannelError)
