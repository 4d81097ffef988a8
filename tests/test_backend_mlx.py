"""MlxBackend: the white-box contract on mlx-lm, and parity with TorchBackend (SmolLM2, Qwen2.5-Coder-0.5B).

mlx on a Linux CPU is slow (SmolLM2: ~0.13 s per prompt token, ~0.2 s per
generated token), so the real-model tests use short prompts and few tokens.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from backend_checks import assert_injection_fires_once_at_the_prompt_positions

mx = pytest.importorskip("mlx.core")

from lpca_models.backend import read_model_meta  # noqa: E402
from lpca_models.errors import (  # noqa: E402
    ConditioningError,
    FingerprintMismatchError,
    HiddenSizeError,
    LayerError,
    MissingPackageError,
    ModelError,
    PositionError,
)
from lpca_models.mlx_backend import MlxBackend, mlx_config_overrides  # noqa: E402
from lpca_models.types import PREFIX_MARKER, Conditioning, Injection, KVCache, Sampling  # noqa: E402

TINY = ["tiny-random-llama", "tiny-random-gemma3"]
_SCRATCH = {
    "tiny-random-llama": "tiny_llama",
    "tiny-random-gemma3": "tiny_gemma3",
    "smollm2-135m": "smollm2_patched",
}
# Byte-level prompts of mixed lengths; 600 tokens pass tiny-random-gemma3's 512-token sliding window.
_rs = np.random.RandomState(1)
LONG_PROMPTS = ["".join(chr(c) for c in _rs.randint(97, 123, n)) for n in (5, 600, 130, 40)]


@pytest.fixture(scope="session")
def model_dir():
    """model_id -> model directory: the zoo's cache when the zoo exists, else the scratch conversions."""
    try:
        from lpca_models import zoo
    except ImportError:
        zoo = None

    def find(model_id: str) -> Path:
        if zoo is not None:
            return Path(zoo.ensure_cached(model_id))
        path = Path("/work/zoo_scratch/cache") / _SCRATCH[model_id]
        if not path.exists():
            pytest.skip(f"no model directory for {model_id}")
        return path

    return find


@pytest.fixture(scope="module", params=TINY)
def tiny(request, model_dir):
    return MlxBackend(model_dir(request.param), name=request.param)


@pytest.fixture(scope="module")
def smol(model_dir):
    return MlxBackend(model_dir("smollm2-135m"), name="smollm2-135m")


def _ids(backend, text="hello world, tiny model"):
    return backend.tokenize(text)


def _window(backend) -> int | None:
    """The sliding window of a model with sliding-attention layers, else None."""
    cfg = json.loads((backend.path / "config.json").read_text())
    return cfg.get("sliding_window") if "sliding_attention" in (cfg.get("layer_types") or []) else None


def _random_ids(n: int) -> list[int]:
    return [int(i) for i in np.random.RandomState(0).randint(0, 250, n)]


# -- identity, prefix, embeddings ---------------------------------------------------------
def test_info_fingerprint_is_the_directory_fingerprint(tiny, model_dir):
    assert tiny.info.framework == "mlx"
    assert tiny.info.fingerprint == read_model_meta(model_dir(tiny.info.name))["fingerprint"]
    assert tiny.input_embeddings().shape == (tiny.info.vocab_size, tiny.info.hidden_size)


def test_capture_then_replace_leaves_logits_unchanged(tiny):
    ids = _ids(tiny)
    n_layers = tiny.info.n_layers
    base = tiny.forward(ids, capture=range(n_layers + 1), logits="all")
    for layer in (0, 1, n_layers // 2, n_layers):
        inj = Injection(layer, base.hidden[layer], positions=None, mode="replace")
        out = tiny.forward(ids, inject=[inj], logits="all")
        assert np.abs(out.logits - base.logits).max() <= 1e-5, layer
    zero = tiny.forward(ids, inject=[Injection(2, np.zeros(tiny.info.hidden_size, np.float32))], logits="all")
    assert np.abs(zero.logits[-1] - base.logits[-1]).max() > 1e-3  # the injection does act


def test_capture_then_replace_on_smollm2(smol):
    ids = smol.tokenize("The capital of France is")
    base = smol.forward(ids, capture=(0, 15, 30), logits="all")
    for layer in (0, 15, 30):
        out = smol.forward(ids, inject=[Injection(layer, base.hidden[layer], positions=None)], logits="all")
        assert np.abs(out.logits - base.logits).max() <= 1e-5, layer


def test_embed_unembed_and_layer_conventions(tiny):
    ids = _ids(tiny)
    n_layers = tiny.info.n_layers
    f = tiny.forward(ids, capture=(0, n_layers), positions=(0, -1), logits="all")
    np.testing.assert_array_equal(tiny.embed(ids)[[0, -1]], f.hidden[0])  # embed == what block 1 reads
    np.testing.assert_array_equal(tiny.input_embeddings()[ids], tiny.embed(ids))
    np.testing.assert_allclose(tiny.unembed(f.hidden[n_layers]), f.logits[[0, -1]], atol=1e-5)


def test_zero_length_prefix_changes_nothing(tiny):
    ids = _ids(tiny)
    base = tiny.forward(ids, logits="all")
    empty = np.zeros((0, tiny.info.hidden_size), np.float32)
    out = tiny.forward(ids, prefix=empty, prefix_at=3, logits="all")
    assert out.n_positions == len(ids)
    assert np.abs(out.logits - base.logits).max() <= 1e-5


def test_prefix_at_marked_position_equals_forward_over_the_same_embeddings(tiny):
    ids = _ids(tiny)
    base = tiny.forward(ids, logits="all")
    out = tiny.forward(ids[:4] + ids[9:], prefix=tiny.embed(ids[4:9]), prefix_at=4, logits="all")
    assert np.abs(out.logits - base.logits).max() <= 1e-5
    # generate: the prefix goes where the marker is
    cond = Conditioning(prefix=tiny.embed(tiny.tokenize("lo")))
    with_prefix = tiny.generate("hel" + PREFIX_MARKER + " world", cond, max_new_tokens=5)[0]
    assert with_prefix.token_ids == tiny.generate("hello world", max_new_tokens=5)[0].token_ids


def test_injection_function_gets_mlx_arrays_and_hooks_are_restored(tiny):
    ids = _ids(tiny)
    base = tiny.forward(ids, capture=[2], logits="all")
    classes = [type(block) for block in tiny.model.layers]

    def as_replace(h, v):
        assert isinstance(h, mx.array) and isinstance(v, mx.array)
        return h * 0 + v

    inj = Injection(2, base.hidden[2], positions=None, mode=as_replace)
    out = tiny.forward(ids, inject=[inj], logits="all")
    assert np.abs(out.logits - base.logits).max() <= 1e-5

    def broken(h, v):
        raise RuntimeError("user function failed")

    with pytest.raises(RuntimeError):
        tiny.forward(ids, inject=[Injection(1, base.hidden[2][0], mode=broken)], capture=[0, 3])
    with pytest.raises(ConditioningError):
        tiny.forward(ids, inject=[Injection(1, base.hidden[2][0], mode=lambda h, v: v[None, :2])])
    assert [type(block) for block in tiny.model.layers] == classes
    np.testing.assert_array_equal(tiny.forward(ids, logits="all").logits, base.logits)


def test_generate_fires_each_injection_once_at_the_prompt_positions(tiny):
    """An injection acts on the prompt pass only (the `Conditioning` contract, as on torch):
    decode steps reuse the prompt's cache and never call the injection again."""
    assert_injection_fires_once_at_the_prompt_positions(tiny, lambda h: np.array(h.astype(mx.float32)))


# -- KV cache -------------------------------------------------------------------------
def test_kv_round_trip_equals_one_uninterrupted_forward(tiny):
    """Tolerance 1e-5 (measured <= 5e-7); cuts on both sides of a sliding window."""
    w = _window(tiny) or 100
    ids = _random_ids(w + 60)
    full = tiny.forward(ids, logits="all")
    for cut in (1, 40, w - 1, w + 10):
        first = tiny.forward(ids[:cut], return_past=True)
        assert first.past.length == cut and first.past.fingerprint == tiny.info.fingerprint
        assert first.past.keys[0].ndim == 3 and first.past.keys[0].shape[1] == cut
        rest = tiny.forward(ids[cut:], past=first.past, logits="all")
        assert np.abs(rest.logits - full.logits[cut:]).max() <= 1e-5, cut
    # token by token across the window: rotated caches export their last window - 1 positions
    past = tiny.forward(ids[: w - 3], return_past=True).past
    for i in range(w - 3, w + 3):
        step = tiny.forward([ids[i]], past=past, return_past=True)
        assert np.abs(step.logits - full.logits[i]).max() <= 1e-5, i
        past = step.past
    assert past.length == w + 3


def test_generate_continues_from_an_imported_cache(tiny):
    head = tiny.tokenize("hello wor")
    past = tiny.forward(head, return_past=True).past
    cont = tiny.generate("ld, tiny", Conditioning(past=past), max_new_tokens=6)[0]
    # the continuation prompt is tokenized like any prompt (a BOS-adding tokenizer adds its BOS)
    ids = head + tiny.tokenize("ld, tiny", add_special_tokens=True)
    for _ in range(6):
        ids.append(int(tiny.forward(ids).logits.argmax()))
    assert list(cont.token_ids) == ids[-6:]


def test_sliding_window_cache_import_needs_the_window(model_dir):
    b = MlxBackend(model_dir("tiny-random-gemma3"))
    w = _window(b)
    ids = _random_ids(w + 60)
    cut = w + 50
    full = b.forward(ids, logits="all")
    past = b.forward(ids[:cut], return_past=True).past
    types = json.loads((b.path / "config.json").read_text())["layer_types"]
    sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]

    def keep(n):
        ks = tuple(k[:, -n:] if i in sliding else k for i, k in enumerate(past.keys))
        vs = tuple(v[:, -n:] if i in sliding else v for i, v in enumerate(past.values))
        return dataclasses.replace(past, keys=ks, values=vs)

    out = b.forward(ids[cut:], past=keep(w - 1), logits="all")  # the last window - 1 positions suffice
    assert np.abs(out.logits - full.logits[cut:]).max() <= 1e-5
    with pytest.raises(ConditioningError):
        b.forward(ids[cut:], past=keep(w // 2))


# -- generation -----------------------------------------------------------------------
def test_batched_greedy_equals_unbatched_on_mixed_lengths(tiny):
    one = [tiny.generate(p, max_new_tokens=12)[0] for p in LONG_PROMPTS]
    batch = tiny.generate(LONG_PROMPTS, max_new_tokens=12)
    assert [g.token_ids for g in batch] == [g.token_ids for g in one]
    assert [g.prompt_tokens for g in batch] == [g.prompt_tokens for g in one]


def test_batched_conditioning_equals_unbatched(tiny):
    d = tiny.info.hidden_size
    rs = np.random.RandomState(2)
    pre = (rs.randn(3, d) * 0.05).astype(np.float32)
    add = Injection(2, rs.randn(d).astype(np.float32), positions=(0, -1), mode="add")
    prompts = ["abc" + PREFIX_MARKER + "xyz", LONG_PROMPTS[1], LONG_PROMPTS[2]]
    conds = [
        Conditioning(text="hi ", prefix=pre),
        Conditioning(injections=(add,)),
        Conditioning(prefix=pre[:1], injections=(Injection(0, pre[0], positions=(1,), mode="mean"),)),
    ]
    one = [tiny.generate(p, c, max_new_tokens=8)[0].token_ids for p, c in zip(prompts, conds)]
    assert [g.token_ids for g in tiny.generate(prompts, conds, max_new_tokens=8)] == one


def test_batched_greedy_equals_unbatched_on_smollm2(smol):
    prompts = ["The capital of France is", "Once upon a time, in a small village by the sea"]
    one = [smol.generate(p, max_new_tokens=5)[0].token_ids for p in prompts]
    assert [g.token_ids for g in smol.generate(prompts, max_new_tokens=5)] == one


def test_seeded_sampling_is_deterministic(tiny):
    prompts = [LONG_PROMPTS[0], LONG_PROMPTS[3]]
    s = Sampling(temperature=1.0, top_k=50, top_p=0.9, seed=3)
    a = tiny.generate(prompts, max_new_tokens=8, sampling=s)
    b = tiny.generate(prompts, max_new_tokens=8, sampling=s)
    c = tiny.generate(prompts, max_new_tokens=8, sampling=dataclasses.replace(s, seed=4))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    top1 = tiny.generate(prompts, max_new_tokens=8, sampling=Sampling(temperature=0.7, top_k=1, seed=9))
    assert [g.token_ids for g in top1] == [g.token_ids for g in tiny.generate(prompts, max_new_tokens=8)]


def test_stop_strings_and_counters(tiny):
    free = tiny.generate(LONG_PROMPTS[0], max_new_tokens=10)[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 10
    stop = free.text[3:5]
    before = tiny.timing.forward_passes
    cut = tiny.generate(LONG_PROMPTS[0], max_new_tokens=10, stop=[stop])[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    assert tiny.timing.forward_passes - before == cut.forward_passes >= len(cut.token_ids)


# -- bad input ------------------------------------------------------------------------
def test_bad_input_raises_typed_errors(tiny, model_dir):
    ids = _ids(tiny)
    n, d, n_layers = len(ids), tiny.info.hidden_size, tiny.info.n_layers
    with pytest.raises(LayerError):
        tiny.forward(ids, capture=[n_layers + 1])
    with pytest.raises(LayerError):
        tiny.forward(ids, inject=[Injection(-1, np.zeros(d, np.float32))])
    with pytest.raises(HiddenSizeError):
        tiny.forward(ids, inject=[Injection(1, np.zeros(d + 1, np.float32))])
    with pytest.raises(HiddenSizeError):
        tiny.forward(ids, prefix=np.zeros((2, d - 1), np.float32))
    with pytest.raises(PositionError):
        tiny.forward(ids, capture=[1], positions=[n])
    with pytest.raises(PositionError):
        tiny.forward(ids, inject=[Injection(1, np.zeros(d, np.float32), positions=(-n - 1,))])
    other = MlxBackend(model_dir(next(m for m in TINY if m != tiny.info.name)))
    foreign = other.forward(other.tokenize("abc"), return_past=True).past
    with pytest.raises(FingerprintMismatchError):
        tiny.forward(ids, past=foreign)
    own = tiny.forward(ids, return_past=True).past
    partial = KVCache(own.keys[:1], own.values[:1], own.fingerprint, own.length, (0,))
    with pytest.raises(ConditioningError):
        tiny.forward(ids, past=partial)
    with pytest.raises(ConditioningError):
        tiny.generate(["a", "b"], [Conditioning(past=partial), Conditioning()])


def test_transformers5_config_gets_the_flat_keys_mlx_lm_reads():
    llama = {"model_type": "llama", "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
    assert mlx_config_overrides(llama) == {"rope_theta": 100000.0}
    rope = {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}
    s, f = "sliding_attention", "full_attention"
    gemma = {"model_type": "gemma3_text", "rope_parameters": rope, "layer_types": [s, f, s, s, f]}
    with pytest.raises(ModelError, match="periodic"):
        mlx_config_overrides(gemma)
    gemma["layer_types"] = [s, f] * 2
    assert mlx_config_overrides(gemma) == {
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
        "sliding_window_pattern": 2,
    }


def test_missing_mlx_names_the_pip_command(monkeypatch):
    monkeypatch.delitem(sys.modules, "lpca_models.mlx_backend")
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    with pytest.raises(MissingPackageError, match=r'pip install -c constraints.txt "lpca\[mlx\]"'):
        importlib.import_module("lpca_models.mlx_backend")


# -- parity with PyTorch ----------------------------------------------------------------
PARITY_CHATS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    for content in ("Write a poem about the sea.", "List the planets of the solar system.")
]


def _assert_parity(mlx_b, ref, chat) -> str:
    """mlx vs torch on one chat: same prompt, ids, fingerprint; hidden cosine >= 0.999 at every
    layer, |dlogit| <= 1e-3, the same 20 greedy tokens. Returns the generated text."""
    assert ref.info.fingerprint == mlx_b.info.fingerprint
    prompt = mlx_b.chat(chat)
    assert prompt == ref.chat(chat)
    ids = mlx_b.tokenize(prompt)
    assert ids == ref.tokenize(prompt)
    layers = range(mlx_b.info.n_layers + 1)
    got = mlx_b.forward(ids, capture=layers, logits="all")
    want = ref.forward(ids, capture=layers, logits="all")
    for layer in layers:
        a, b = got.hidden[layer], want.hidden[layer]
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cos.min() >= 0.999, layer
    assert np.abs(got.logits - want.logits).max() <= 1e-3
    g_mlx = mlx_b.generate(prompt, max_new_tokens=20)[0]
    g_torch = ref.generate(prompt, max_new_tokens=20)[0]
    assert len(g_mlx.token_ids) == 20
    assert g_mlx.token_ids == g_torch.token_ids and g_mlx.text == g_torch.text
    return g_mlx.text


@pytest.mark.slow
@pytest.mark.parametrize("chat", PARITY_CHATS, ids=["poem", "planets"])
def test_parity_with_torch_on_smollm2(smol, model_dir, chat):
    """fp32 both sides, measured: max |dlogit| 1.4e-4 (logits up to ~39), min hidden cosine 0.9999998."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lpca_models.torch_backend import TorchBackend

    _assert_parity(smol, TorchBackend(model_dir("smollm2-135m")), chat)


@pytest.mark.slow
def test_parity_with_torch_on_qwen_coder_05b():
    """fp32 both sides, measured on 3 chats: max |dlogit| 1.2e-4 (logits up to ~32), min hidden
    cosine 0.9999998, same 20 greedy tokens. One chat only: mlx takes ~25 s for it on 2 CPU cores."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lpca_models import zoo
    from lpca_models.torch_backend import TorchBackend

    try:
        path = zoo.ensure_cached("qwen2.5-coder-0.5b")
    except MissingPackageError as exc:
        pytest.skip(str(exc))
    text = _assert_parity(MlxBackend(path), TorchBackend(path), PARITY_CHATS[1])
    assert "Mercury" in text


def test_kv_cache_crosses_frameworks(model_dir):
    """Same directory -> same fingerprint: a cache exported by torch continues in mlx, and back."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lpca_models.torch_backend import TorchBackend

    path = model_dir("tiny-random-gemma3")
    m, t = MlxBackend(path), TorchBackend(path)
    cut = _window(m) + 50  # past the window: torch's sliding layers export only their window
    ids = _random_ids(cut + 10)
    full = m.forward(ids, logits="all").logits
    from_torch = m.forward(ids[cut:], past=t.forward(ids[:cut], return_past=True).past, logits="all")
    assert np.abs(from_torch.logits - full[cut:]).max() <= 1e-5
    from_mlx = t.forward(ids[cut:], past=m.forward(ids[:cut], return_past=True).past, logits="all")
    assert np.abs(from_mlx.logits - full[cut:]).max() <= 1e-5
