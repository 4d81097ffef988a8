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
from lpca_protocols.packet_codec import (
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


#: Quantizers beside plain VQ, as CodecSpec options.
RVQ = {"quantizer": "rvq", "rvq_levels": 3}
FSQ = {"quantizer": "fsq", "fsq_levels": (5, 4, 3)}


def random_checkpoint(path, agent, kind="prefix", k=4, m=8, size=16, tail=0, **spec_options):
    info = agent.backend.info
    if spec_options.get("quantizer") == "fsq":
        size = math.prod(spec_options["fsq_levels"])
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
        **spec_options,
    )
    torch.manual_seed(0)
    net = torch_net(spec)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        net.enc.mu.normal_(std=0.1)
        net.enc.sd.uniform_(0.5, 2.0)
        for b in net.buffers():  # codebooks, fsq projections
            if b is not net.enc.mu and b is not net.enc.sd:
                b.normal_()
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


@pytest.mark.parametrize(
    "kind,options",
    [("prefix", {}), ("codebook", {}), ("codebook", RVQ), ("codebook", FSQ), ("prefix", {"positions": 8})],
    ids=["prefix", "vq", "rvq", "fsq", "prefix-positions"],
)
def test_checkpoint_round_trip_gives_the_modules_own_outputs(tmp_path, tiny, kind, options):
    path, net = random_checkpoint(tmp_path / "c", tiny, kind, **options)
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
        assert idx.shape == (ckpt.spec.symbols_per_message,)
        with torch.no_grad():
            assert idx.tolist() == net.nearest(torch.from_numpy(want_p)[None])[0].tolist()
            np.testing.assert_array_equal(runner.rows(idx), net.rows(torch.from_numpy(idx)[None])[0].numpy())


@pytest.mark.parametrize(
    "options,m",
    [({"quantizer": "vq"}, 4), (RVQ, 4), ({**FSQ, "fsq_levels": (8, 5, 5)}, 4), (FSQ, 3)],
    ids=["vq", "rvq", "fsq", "fsq-no-projection"],
)
def test_inference_quantizes_exactly_as_vector_quantize_pytorch_trained(options, m):
    """The exported tables, read without the library, give the library's own quantized packets."""
    from lpca_protocols.packet_codec import dequantize, make_quantizer, quantize

    levels = options.get("fsq_levels")
    size = math.prod(levels) if levels else 8
    spec = CodecSpec(
        kind="codebook", k=3, m=m, d_src=8, d_out=8, source_layer=1, width=16, codebook_size=size, **options
    )
    torch.manual_seed(0)
    quant = make_quantizer(spec, commitment=0.25)
    x = torch.randn(256, 3, m) * 2
    quant.init(x, torch.Generator().manual_seed(0))
    quant.module.eval()
    with torch.no_grad():
        want, _ = quant(x)
    tables = {n: t.numpy() for n, t in quant.export().items()}
    symbols = quantize(spec, tables, x.numpy())
    assert symbols.shape == (256, spec.symbols_per_message)
    assert symbols.min() >= 0 and symbols.max() < size and len(np.unique(symbols)) > 4
    np.testing.assert_array_equal(dequantize(spec, tables, symbols), want.numpy())


def test_position_embeddings_make_the_resampler_see_order(tmp_path, tiny):
    """Without positions the resampler reads a bag of states (a permutation changes nothing); with
    them the packet depends on the order, and a right-padded batch encodes like each row alone."""
    h = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 9, 64)).astype(np.float32) * 3)
    perm = h[:, torch.randperm(9, generator=torch.Generator().manual_seed(0))]
    _, bag = random_checkpoint(tmp_path / "bag", tiny, "prefix")
    _, ordered = random_checkpoint(tmp_path / "ord", tiny, "prefix", positions=4)
    with torch.no_grad():
        torch.testing.assert_close(bag.encode(perm), bag.encode(h))
        assert (ordered.encode(perm) - ordered.encode(h)).abs().max() > 1e-3
        short = h[:, :6]
        padded = torch.cat([h, torch.cat([short, torch.zeros(1, 3, 64)], 1)])
        mask = torch.arange(9)[None] < torch.tensor([[9], [6]])
        both = ordered.encode(padded, mask)
        torch.testing.assert_close(both[0], ordered.encode(h)[0])
        torch.testing.assert_close(both[1], ordered.encode(short)[0])


def test_bad_positions_are_refused():
    with pytest.raises(CheckpointError, match=r"positions must be 0\.\.4096"):
        CodecSpec(kind="prefix", k=1, m=4, d_src=8, d_out=8, source_layer=1, width=16, positions=-1)


@needs_mlx
@pytest.mark.parametrize("kind,options", [("prefix", {}), ("codebook", {}), ("prefix", {"positions": 8})])
def test_torch_and_mlx_forwards_agree(tmp_path, tiny, kind, options):
    runner = CodecRunner(load_checkpoint(random_checkpoint(tmp_path / "c", tiny, kind, **options)[0]))
    for seed, t in ((0, 5), (1, 40)):
        h = np.random.default_rng(seed).standard_normal((t, 64)).astype(np.float32) * 4
        p_t, p_m = runner.encode(h, "torch"), runner.encode(h, "mlx")
        np.testing.assert_allclose(p_m, p_t, atol=MLX_ATOL, rtol=0)
        np.testing.assert_allclose(
            runner.decode(p_t, "mlx"), runner.decode(p_t, "torch"), atol=MLX_ATOL, rtol=0
        )


@needs_mlx
@pytest.mark.parametrize(
    "name,options",
    [
        ("latent-prefix", {}),
        ("latent-codebook", {}),
        ("latent-codebook", RVQ),
        ("latent-codebook", FSQ),
        ("latent-prefix", {"inject_layer": 2}),
    ],
    ids=["prefix", "vq", "rvq", "fsq", "prefix-inject"],
)
def test_the_channel_runs_on_both_backends_with_the_same_checkpoint(tmp_path, tiny, tiny_mlx, name, options):
    kind = "prefix" if name == "latent-prefix" else "codebook"
    path, _ = random_checkpoint(tmp_path / "c", tiny, kind, **options)
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
        assert len(a.injections) == len(b.injections) == (1 if "inject_layer" in options else 0)
        for ia, ib in zip(a.injections, b.injections):
            assert (ia.layer, ia.positions, ia.mode) == (ib.layer, ib.positions, ib.mode)
            np.testing.assert_allclose(ia.vector, ib.vector, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------- bits and controls


def test_prefix_bits_follow_the_serializer(tmp_path, tiny):
    path, _ = random_checkpoint(tmp_path / "c", tiny, "prefix", k=4, m=32)
    for codec, bits in (("fp32", 4 * 32 * 32), ("fp16", 4 * 32 * 16), ("q8_0", 4 * 34 * 8)):
        msgs, conds = deliver(
            make_channel("latent-prefix", checkpoint=str(path), codec=codec), contexts(tiny, 2)
        )
        assert all(m.bits == bits and len(m.payload) == bits // 8 for m in msgs)
        assert all(c.prefix.shape == (4, 64) for c in conds)


@pytest.mark.parametrize(
    "size,k,options,bits",
    [
        (16, 4, {}, 4 * 4),
        (5, 3, {}, 3 * 3),
        (256, 2, {}, 2 * 8),
        (16, 4, {"quantizer": "rvq", "rvq_levels": 3}, 4 * 3 * 4),  # k * Q * ceil(log2 K)
        (5, 2, {"quantizer": "rvq", "rvq_levels": 2}, 2 * 2 * 3),
        (60, 4, {"quantizer": "fsq", "fsq_levels": (5, 4, 3)}, 4 * 6),  # k * ceil(log2 prod(levels))
        (1000, 3, {"quantizer": "fsq", "fsq_levels": (8, 5, 5, 5)}, 3 * 10),
    ],
)
def test_codebook_bits_are_exact(tmp_path, tiny, size, k, options, bits):
    path, _ = random_checkpoint(tmp_path / "c", tiny, "codebook", k=k, size=size, **options)
    rows = contexts(tiny, 2)
    msgs, conds = deliver(make_channel("latent-codebook", checkpoint=str(path)), rows)
    assert all(m.bits == bits and len(m.payload) == math.ceil(bits / 8) for m in msgs)
    assert msgs[0].meta["codec"] == f"index:size={size}"
    assert all(c.prefix.shape == (k, 64) for c in conds)
    symbols = rows[0]["A"].diagnostics["symbols"]
    assert len(symbols) == k * options.get("rvq_levels", 1) and rows[0]["A"].diagnostics["alphabet"] == size


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


@pytest.mark.parametrize(
    "name,options",
    [
        ("latent-prefix", {}),
        ("latent-codebook", {}),
        ("latent-codebook", {"quantizer": "rvq", "rvq_levels": 2}),
    ],
    ids=["prefix", "vq", "rvq"],
)
def test_controls_change_the_payload_never_the_bits(tmp_path, tiny, name, options):
    kind = "prefix" if name == "latent-prefix" else "codebook"
    path, _ = random_checkpoint(tmp_path / "c", tiny, kind, size=256, **options)
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


def test_bad_quantizer_and_injection_specs_are_typed_errors():
    base = dict(kind="codebook", k=2, m=4, d_src=8, d_out=8, source_layer=1, width=16, codebook_size=8)
    for bad, match in (
        ({"quantizer": "pq"}, "quantizer must be one of"),
        ({"quantizer": "fsq", "fsq_levels": (5, 2)}, "ints >= 3"),
        ({"quantizer": "fsq", "fsq_levels": (5, 3)}, r"prod\(fsq_levels\) = 15"),
        ({"quantizer": "fsq", "fsq_levels": (4096, 4096, 3), "codebook_size": 4096 * 4096 * 3}, "at most"),
        ({"fsq_levels": (5, 3)}, "only apply to quantizer='fsq'"),
        ({"rvq_levels": 3}, "rvq_levels"),
        ({"inject_layer": -1}, "inject_layer"),
        ({"inject_layer": 1, "inject_mode": "mean"}, "inject_mode"),
    ):
        with pytest.raises(CheckpointError, match=match):
            CodecSpec(**{**base, **bad})


def test_an_injection_past_the_receivers_blocks_is_refused(tmp_path, tiny):
    path, _ = random_checkpoint(tmp_path / "c", tiny, "prefix", inject_layer=tiny.backend.info.n_layers)
    chan = make_channel("latent-prefix", checkpoint=str(path))
    with pytest.raises(ChannelError, match="injects after block 4"):
        deliver(chan, contexts(tiny, 1))


def test_codecs_load_by_name_and_list_with_their_bits(tmp_path, tiny, monkeypatch):
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from lpca_protocols.packet_codec import record_gate
    from lpca_protocols.training import UnknownCodecError, list_codecs, publish
    from lpca_protocols.training.cli import train_app

    root = tmp_path / "codecs"
    monkeypatch.setenv("LPCA_CODECS_DIR", str(root))
    path, _ = random_checkpoint(tmp_path / "c", tiny, "codebook", **RVQ)
    with pytest.raises(UnknownCodecError, match="known: none"):
        make_channel("latent-codebook", checkpoint="relay")
    publish(path, "relay")
    publish(random_checkpoint(tmp_path / "p", tiny, "prefix", k=2, inject_layer=1)[0], "relay")  # replaced
    publish(path, "relay-rvq")
    assert sorted(p.name for p in root.iterdir()) == ["relay", "relay-rvq"]  # no temporary leftovers
    msgs, conds = deliver(make_channel("latent-codebook", checkpoint="relay-rvq"), contexts(tiny, 2))
    assert all(m.bits == 4 * 3 * 4 for m in msgs) and conds[0].prefix.shape == (4, 64)
    assert make_channel("latent-prefix", checkpoint="relay").runner.spec.inject_layer == 1
    with pytest.raises(UnknownCodecError, match="known: relay, relay-rvq") as e:
        make_channel("latent-codebook", checkpoint="relay-vq")
    assert isinstance(e.value, ChannelError)
    with pytest.raises(CheckpointError, match="codec name"):
        publish(path, "-x")
    report = SimpleNamespace(
        passed=True, env_id="lpca/SecretRelay-v0", level=0, episodes=200, rate=0.9, references=()
    )
    record_gate(root / "relay-rvq", report)
    entries = {e.name: e for e in list_codecs()}
    prefix = entries["relay"]
    assert (prefix.kind, prefix.bits, prefix.inject_layer) == ("prefix", 2 * 8 * 16, 1)  # k x m fp16
    rvq = entries["relay-rvq"]
    assert (rvq.quantizer, rvq.k, rvq.codebook_size, rvq.bits) == ("rvq:Q=3", 4, 16, 48)
    assert rvq.gate["passed"] and rvq.base_model == tiny.backend.info.name
    out = CliRunner().invoke(train_app, ["list"])
    assert out.exit_code == 0 and "relay-rvq" in out.output and "passed 90%" in out.output, out.output


@pytest.mark.parametrize("framework", ["torch", pytest.param("mlx", marks=needs_mlx)])
@pytest.mark.parametrize("tail", [0, 5])
def test_serving_and_training_read_bit_identical_sender_states(tmp_path, request, tiny, framework, tail):
    """The channel's sender states (serving) and a training dataset's row (training) come from one
    function, so for the same episode they are the same bits."""
    from lpca_protocols.training.dataset import episode_row

    agent = tiny if framework == "torch" else request.getfixturevalue("tiny_mlx")
    path, _ = random_checkpoint(tmp_path / "c", tiny, tail=tail)
    chan = make_channel("latent-prefix", checkpoint=str(path))
    env = lpca_envs.make("lpca/SecretRelay-v0", level=0)
    for seed in (0, 1, 2):
        (row,) = contexts(agent, n=1, seed=seed)
        served = chan.sender_states(row["A"])
        trained = episode_row(env, seed, agent, chan.runner.spec.source_layer, tail)["hidden"]
        assert served.dtype == trained.dtype == np.float32
        assert served.shape == trained.shape and (not tail or len(served) == tail)
        assert served.tobytes() == trained.tobytes()
