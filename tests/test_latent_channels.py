"""Training-free latent channels: exactness of each mechanism, controls, bits and errors.

Mechanics run on the seeded tiny random models of both frameworks (fast); the
behavioural claims run on SmolLM2 with fixed seeds (deterministic, greedy).
"""

from __future__ import annotations

import numpy as np
import pytest

import lpca_envs
import lpca_models
from lpca_envs import Budget, Message
from lpca_models import PREFIX_MARKER, Conditioning
from lpca_models.agents import LMAgent
from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels._latent import LatentMismatchError, sender_prompt
from lpca_protocols.plugins import make_channel
from lpca_protocols.runner import run

LATENT = ["activation-graft", "cipher", "kv-share", "hidden-packet"]
BACKENDS = [
    "torch",
    pytest.param(
        "mlx",
        marks=pytest.mark.skipif(
            __import__("importlib").util.find_spec("mlx") is None, reason="mlx not installed"
        ),
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def tiny(request):
    return LMAgent(lpca_models.load("tiny-random-llama", backend=request.param), max_new_tokens=4)


@pytest.fixture
def exact():
    """One torch thread: a multithreaded BLAS may split reductions differently from call to call
    when the machine is loaded, which moves float32 logits by ~1e-3 on a random model."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def smol():
    return LMAgent(lpca_models.load("smollm2-135m"), max_new_tokens=8)


def contexts(agent, n=3, env_id="lpca/SecretRelay-v0", level=0):
    """Holder and answerer contexts of `n` seeded episodes, as the runner builds them."""
    env = lpca_envs.make(env_id, level=level)
    out = []
    for seed in range(n):
        obs, _ = env.reset(seed=seed)
        task = env.task
        row = {}
        for a, b in (("A", "B"), ("B", "A")):
            row[a] = AgentContext(
                a, obs[a]["view"], task, task.family, 1, Budget(), agent, b, is_answerer=a == "B"
            )
        out.append(row)
    return out


def deliver(chan, rows):
    """send for every holder, hand the messages over, return (messages, conditionings)."""
    msgs = chan.send([r["A"] for r in rows])
    for r, m in zip(rows, msgs):
        r["B"].received.append(m)
    return msgs, chan.receive([r["B"] for r in rows])


def receiver_prompt(agent, ctx, cond):
    return agent.prompt(agent.answer_turn(ctx.family, ctx.view, cond))


# ---------------------------------------------------------------------------- exactness


def test_graft_identity_with_the_receivers_own_activation_changes_nothing(tiny, exact):
    b = tiny.backend
    ctx = contexts(tiny, 1)[0]["B"]
    prompt = receiver_prompt(tiny, ctx, Conditioning())
    ids = b.prompt_ids(prompt)
    base = b.prompt_logits(prompt)
    for layer in (1, b.info.n_layers // 2, b.info.n_layers):
        chan = make_channel("activation-graft", source_layer=layer, target_layer=layer, mode="replace")
        own = b.forward(ids, capture=[layer], positions=[-1], logits="none").hidden[layer][0]
        cond = chan.condition(ctx, own)
        assert np.abs(b.prompt_logits(prompt, cond) - base).max() <= 1e-5
    # and a foreign activation does change the answer distribution
    other = np.random.default_rng(0).standard_normal(b.info.hidden_size).astype(np.float32) * 10
    assert np.abs(b.prompt_logits(prompt, chan.condition(ctx, other)) - base).max() > 1e-3


def test_cipher_at_temperature_zero_equals_feeding_the_greedy_tokens(tiny, exact):
    b = tiny.backend
    rows = contexts(tiny, 1)
    chan = make_channel("cipher", temperature=0.0, steps=5, stop_at_eos=False, codec="fp32")
    soft = chan.payloads([rows[0]["A"]])[0]
    greedy = b.generate(sender_prompt(rows[0]["A"], "sender"), max_new_tokens=5)[0].token_ids
    assert len(greedy) == 5
    np.testing.assert_array_equal(soft, b.embed(list(greedy)))
    # the receiver reading the soft tokens == the receiver reading those tokens as text
    ctx = rows[0]["B"]
    with_soft = b.prompt_logits(
        receiver_prompt(tiny, ctx, Conditioning(prefix=soft)), Conditioning(prefix=soft)
    )
    text = b.detokenize(list(greedy))
    marked = receiver_prompt(tiny, ctx, Conditioning(prefix=soft))
    ids = (
        b.prompt_ids(marked.split(PREFIX_MARKER)[0])
        + list(greedy)
        + b.tokenize(marked.split(PREFIX_MARKER)[1])
    )
    assert text  # the tokens exist as text
    assert np.abs(with_soft - b.forward(ids).logits).max() <= 1e-4


def test_kv_share_equals_one_forward_over_sender_then_receiver(tiny, exact):
    b = tiny.backend
    rows = contexts(tiny, 1)
    chan = make_channel("kv-share", codec="fp32")
    _, (cond,) = deliver(chan, rows)
    ctx = rows[0]["B"]
    prompt = receiver_prompt(tiny, ctx, cond)
    sender_text = tiny.prompt(
        __import__("lpca_models.agents", fromlist=["Turn"]).Turn(
            ctx.family, "latent_sender", {"view": rows[0]["A"].view}
        ),
        add_generation_prompt=False,
    )
    joint = b.prompt_ids(sender_text) + b.tokenize(prompt)
    assert cond.past.length == len(b.prompt_ids(sender_text))
    assert np.abs(b.prompt_logits(prompt, cond) - b.forward(joint).logits).max() <= 1e-4


def test_kv_share_layer_subset_sends_fewer_bits_and_still_runs(tiny):
    n = tiny.backend.info.n_layers
    rows_all, rows_one = contexts(tiny, 2), contexts(tiny, 2)
    full, _ = deliver(make_channel("kv-share"), rows_all)
    part, conds = deliver(make_channel("kv-share", layers=[n - 1]), rows_one)
    assert [m.bits * n for m in part] == [m.bits for m in full]
    assert all(c.past is not None and len(c.past.keys) == n for c in conds)
    gens = tiny.run([tiny.answer_turn(r["B"].family, r["B"].view, c) for r, c in zip(rows_one, conds)])
    assert len(gens) == 2


# ---------------------------------------------------------------------------- controls and bits


@pytest.mark.parametrize("name", LATENT)
def test_controls_change_the_payload_never_the_bits(tiny, name):
    opts = {"steps": 3} if name == "cipher" else {"max_tokens": 3} if name == "hidden-packet" else {}
    sent = {}
    for control in ("none", "null", "shuffle", "random"):
        msgs, conds = deliver(make_channel(name, control=control, **opts), contexts(tiny, 3))
        assert all(
            m.kind == "latent" and m.meta["fingerprint"] == tiny.backend.info.fingerprint for m in msgs
        )
        assert len(conds) == 3
        sent[control] = msgs
    real = sent["none"]
    assert sorted(m.bits for m in sent["shuffle"]) == sorted(m.bits for m in real)
    for control in ("null", "random"):
        assert [m.bits for m in sent[control]] == [m.bits for m in real]
        assert all(a.payload != b.payload for a, b in zip(sent[control], real))
    # shuffle: every episode gets another episode's payload (a derangement of the batch)
    assert [m.payload for m in sent["shuffle"]] == [m.payload for m in real[1:] + real[:1]]
    assert any(a.payload != b.payload for a, b in zip(sent["shuffle"], real))
    ch = make_channel(name, control="null", **opts)
    null = ch.decode(contexts(tiny, 1)[0]["B"], sent["null"][0])
    assert not null.any()
    rnd = make_channel(name).decode(contexts(tiny, 1)[0]["B"], sent["random"][0])
    ref = make_channel(name).decode(contexts(tiny, 1)[0]["B"], real[0])
    if rnd.shape == ref.shape:  # the same norm per vector (fp16 rounding aside)
        np.testing.assert_allclose(np.linalg.norm(rnd, axis=-1), np.linalg.norm(ref, axis=-1), rtol=2e-3)


def test_bits_follow_the_codec_exactly(tiny):
    d = tiny.backend.info.hidden_size
    for codec, bits in (("fp32", 32 * d), ("fp16", 16 * d), ("bf16", 16 * d), ("q8_0", d // 32 * 34 * 8)):
        (msg,), _ = deliver(make_channel("activation-graft", codec=codec), contexts(tiny, 1))
        assert msg.bits == bits and len(msg.payload) == bits // 8


def test_shuffle_of_a_single_episode_batch_needs_another_payload(tiny):
    chan = make_channel("activation-graft", control="shuffle")
    with pytest.raises(ChannelError, match="batch_size >= 2"):
        chan.send([contexts(tiny, 1)[0]["A"]])
    deliver(chan, contexts(tiny, 2))  # after a batch, a lone episode gets a previous payload
    (msg,) = chan.send([contexts(tiny, 1)[0]["A"]])
    assert msg is not None


def test_sensitivity_is_logged_per_episode(tiny):
    rows = contexts(tiny, 2)
    chan = make_channel("activation-graft", sensitivity_draws=2, sensitivity_eps=0.5)
    deliver(chan, rows)
    for r in rows:
        kl = r["B"].diagnostics["sensitivity_kl"]
        assert isinstance(kl, float) and kl > 0
        assert r["B"].diagnostics["diagnostic_time_s"] >= 0


# ---------------------------------------------------------------------------- errors


def test_payload_from_another_model_is_refused(tiny):
    (msg,), _ = deliver(make_channel("activation-graft"), contexts(tiny, 1))
    forged = Message(
        msg.sender, msg.recipients, msg.payload, msg.kind, msg.bits, {**msg.meta, "fingerprint": "0" * 64}
    )
    with pytest.raises(LatentMismatchError, match="only transfer between identical models"):
        make_channel("activation-graft").decode(contexts(tiny, 1)[0]["B"], forged)
    bad_shape = Message(
        msg.sender, msg.recipients, msg.payload, msg.kind, msg.bits, {**msg.meta, "shape": "7x9"}
    )
    with pytest.raises(LatentMismatchError, match="undecodable"):
        make_channel("activation-graft").decode(contexts(tiny, 1)[0]["B"], bad_shape)
    no_meta = Message(msg.sender, msg.recipients, msg.payload, msg.kind, msg.bits)
    with pytest.raises(LatentMismatchError, match="fingerprint, codec and shape"):
        make_channel("activation-graft").decode(contexts(tiny, 1)[0]["B"], no_meta)


def test_bad_layers_options_and_agents_are_clear_errors(tiny):
    n = tiny.backend.info.n_layers
    with pytest.raises(ChannelError, match=f"source_layer must be a layer in 0..{n}"):
        make_channel("activation-graft", source_layer=n + 1).send([contexts(tiny, 1)[0]["A"]])
    with pytest.raises(ChannelError, match="target_layer"):
        make_channel("activation-graft", target_layer=-n - 2).condition(
            contexts(tiny, 1)[0]["B"], np.zeros(4)
        )
    with pytest.raises(ChannelError, match="kv-share layers"):
        make_channel("kv-share", layers=[n]).send([contexts(tiny, 1)[0]["A"]])
    with pytest.raises(ChannelError, match="control"):
        make_channel("cipher", control="loud")
    with pytest.raises(ChannelError, match="codebook"):
        make_channel("hidden-packet", codec="vq")
    with pytest.raises(ChannelError, match="unknown codec"):
        make_channel("hidden-packet", codec="zip")
    ctx = contexts(None, 1)[0]["A"]  # a scripted agent has no hidden states
    with pytest.raises(ChannelError, match="white-box"):
        make_channel("kv-share").send([ctx])


# ---------------------------------------------------------------------------- behaviour on SmolLM2


def test_graft_beats_its_shuffled_control_on_secret_relay(smol):
    # late-layer state of a sender about to say the secret replaces the receiver's: 40 fixed episodes
    opts = {"source_layer": -1, "target_layer": -1}
    res = {
        c: run(
            "lpca/SecretRelay-v0",
            "activation-graft",
            "smollm2-135m",
            agent=smol,
            out_dir=None,
            episodes=40,
            channel_options={**opts, "control": c},
        ).summary["successes"]
        for c in ("none", "shuffle")
    }
    assert res["none"] >= 34 and res["shuffle"] <= 12, res


def test_skyline_and_text_bound_the_latent_channels_on_the_same_episodes(smol):
    common = dict(agent=smol, out_dir=None, episodes=16)
    sky = run("lpca/SecretRelay-v0", "skyline", "smollm2-135m", **common)
    p0 = run("lpca/SecretRelay-v0", "none", "smollm2-135m", **common)
    assert [r["seed"] for r in sky.records] == [r["seed"] for r in p0.records]
    assert sky.summary["mean_bits"] == 0 and sky.summary["success_rate"] >= 0.9
    assert p0.summary["success_rate"] <= 0.3


@pytest.mark.skipif(__import__("importlib").util.find_spec("mlx") is None, reason="mlx not installed")
def test_torch_and_mlx_agree_on_smollm2_answers(smol):
    # the same channel code on both frameworks; mlx on a Linux CPU is slow, so 10 short episodes
    common = dict(out_dir=None, episodes=10, max_new_tokens=4)
    mlx_agent = LMAgent(lpca_models.load("smollm2-135m", backend="mlx"))
    answers = {
        be: [
            r["answer"]
            for r in run(
                "lpca/SecretRelay-v0", "activation-graft", "smollm2-135m", agent=a, backend=be, **common
            ).records
        ]
        for be, a in (("torch", smol), ("mlx", mlx_agent))
    }
    agree = sum(a == b for a, b in zip(answers["torch"], answers["mlx"]))
    assert agree >= 9, answers


# ---------------------------------------------------------------------------- batched == unbatched


@pytest.mark.parametrize("name", LATENT)
def test_every_latent_channel_records_the_same_episodes_batched_and_one_at_a_time(tiny, exact, name):
    """The senders of a batch share one pass (cipher: one decode), the receivers one generation;
    greedy, every episode's answer, success, bits and messages equal those of a batch of one."""
    opts = {"steps": 3} if name == "cipher" else {"max_tokens": 3} if name == "hidden-packet" else {}
    keys = ("seed", "task_id", "answer", "success", "bits", "messages")
    records = {}
    for batch in (1, 4):
        res = run(
            "lpca/KVLookup-v0",
            name,
            "tiny-random-llama",
            agent=tiny,
            out_dir=None,
            episodes=8,
            batch_size=batch,
            max_new_tokens=4,
            channel_options=opts,
        )
        records[batch] = [{k: r[k] for k in keys} for r in res.records]
    assert records[4] == records[1]
    assert len({r["answer"] for r in records[4]}) > 1  # the answers differ between episodes
