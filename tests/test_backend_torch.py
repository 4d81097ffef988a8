"""TorchBackend: the white-box contract every channel relies on (tiny models + SmolLM2/Gemma-3)."""

import numpy as np
import pytest
from backend_checks import assert_injection_fires_once_at_the_prompt_positions

import lpca_models
from lpca_models import (
    PREFIX_MARKER,
    Conditioning,
    ConditioningError,
    FingerprintMismatchError,
    HiddenSizeError,
    Injection,
    LayerError,
    ModelError,
    PositionError,
    Sampling,
)

TINY = ["tiny-random-llama", "tiny-random-gemma3"]
_CACHE: dict[str, lpca_models.Backend] = {}


def load(model_id):
    if model_id not in _CACHE:
        _CACHE[model_id] = lpca_models.load(model_id, backend="torch")
    return _CACHE[model_id]


@pytest.fixture(params=TINY)
def tiny(request):
    return load(request.param)


@pytest.fixture(scope="module")
def smol():
    return load("smollm2-135m")


def prompt_ids(b, text="The quick brown fox jumps over the lazy dog"):
    return b.tokenize(text, add_special_tokens=True)


def test_info(tiny):
    info = tiny.info
    assert info.framework == "torch" and info.n_layers == 4 and info.hidden_size == 64
    assert len(info.fingerprint) == 64
    assert info.fingerprint == lpca_models.load(info.name).info.fingerprint  # stable across loads


@pytest.mark.parametrize("model_id", [*TINY, "smollm2-135m"])
def test_capture_then_replace_is_identity(model_id):
    b = load(model_id)
    ids = prompt_ids(b)
    n = b.info.n_layers
    ref = b.forward(ids, capture=range(n + 1), logits="all")
    for layer in sorted({0, 1, n // 2, n - 1, n}):
        out = b.forward(ids, inject=[Injection(layer, ref.hidden[layer], positions=None)], logits="all")
        assert np.abs(out.logits - ref.logits).max() <= 1e-5, layer


def test_injection_modes(tiny):
    ids = prompt_ids(tiny)
    ref = tiny.forward(ids, capture=[2], logits="all")
    h = ref.hidden[2]
    zero = np.zeros(tiny.info.hidden_size, np.float32)
    same = [
        Injection(2, zero, positions=None, mode="add"),
        Injection(2, h, positions=None, mode="mean"),
        Injection(2, h[-1], positions=[-1], mode=lambda cur, v: cur * 1.0),
    ]
    for inj in same:
        assert np.abs(tiny.forward(ids, inject=[inj], logits="all").logits - ref.logits).max() <= 1e-5
    moved = tiny.forward(ids, inject=[Injection(2, zero, positions=[3])], logits="all").logits
    assert np.allclose(moved[:3], ref.logits[:3], atol=1e-6)  # causal: earlier positions untouched
    assert np.abs(moved[3:] - ref.logits[3:]).max() > 1e-3


def test_capture_positions_and_logit_lens(tiny):
    ids = prompt_ids(tiny)
    n = tiny.info.n_layers
    full = tiny.forward(ids, capture=[1, n], logits="all")
    part = tiny.forward(ids, capture=[1], positions=[0, -1])
    assert np.allclose(part.hidden[1], full.hidden[1][[0, -1]])
    assert np.allclose(part.logits, full.logits[-1], atol=1e-5)
    # the logit lens on the raw last residual is exactly the model's own output
    assert np.abs(tiny.unembed(full.hidden[n]) - full.logits).max() <= 1e-4


def test_embed_matches_input_embeddings(tiny):
    ids = prompt_ids(tiny)
    assert np.allclose(tiny.embed(ids), tiny.input_embeddings()[ids])
    ref = tiny.forward(ids, capture=[0])
    assert np.allclose(ref.hidden[0], tiny.embed(ids))


def test_prefix_embeddings(tiny):
    ids = prompt_ids(tiny)
    ref = tiny.forward(ids, logits="all")
    empty = np.zeros((0, tiny.info.hidden_size), np.float32)
    assert np.abs(tiny.forward(ids, prefix=empty, logits="all").logits - ref.logits).max() == 0
    # a prefix made of the prompt's own first embeddings == the unprefixed prompt
    emb = tiny.embed(ids[:3])
    out = tiny.forward(ids[3:], prefix=emb, logits="all")
    assert np.abs(out.logits - ref.logits).max() <= 1e-5
    mid = tiny.forward(ids[:2] + ids[5:], prefix=tiny.embed(ids[2:5]), prefix_at=2, logits="all")
    assert np.abs(mid.logits - ref.logits).max() <= 1e-5


def test_prefix_at_marker_in_generate(tiny):
    text = "hello there, friend"
    vecs = tiny.embed(tiny.tokenize("there"))
    with_marker = tiny.generate(
        "hello " + PREFIX_MARKER + ", friend", Conditioning(prefix=vecs), max_new_tokens=6
    )[0]
    plain = tiny.generate(text, max_new_tokens=6)[0]
    assert with_marker.token_ids == plain.token_ids


@pytest.mark.parametrize("model_id", [*TINY, "smollm2-135m"])
def test_kv_cache_round_trip(model_id):
    b = load(model_id)
    ids = prompt_ids(b, "One two three four five six seven eight nine ten eleven twelve")
    whole = b.forward(ids, logits="all")
    k = len(ids) // 2
    first = b.forward(ids[:k], return_past=True)
    assert first.past.length == k and len(first.past.keys) == b.info.n_layers
    rest = b.forward(ids[k:], past=first.past, logits="all")
    assert np.abs(rest.logits - whole.logits[k:]).max() <= 1e-3 * max(1.0, np.abs(whole.logits).max())
    # the same cache conditions generation
    cond = b.generate(b.detokenize(ids[k:]), Conditioning(past=first.past), max_new_tokens=4)[0]
    assert cond.prompt_tokens > 0 and len(cond.token_ids) >= 1


@pytest.mark.parametrize("model_id", [*TINY, "smollm2-135m"])
def test_batched_generation_equals_unbatched(model_id):
    b = load(model_id)
    qs = [
        "What is 2+2?",
        "Name a colour.",
        "Write one word about the sea, then explain it in a long sentence.",
    ]
    prompts = [b.chat([{"role": "user", "content": q}]) for q in qs]
    n = 12 if model_id.startswith("tiny") else 16
    single = [b.generate(p, max_new_tokens=n)[0] for p in prompts]
    batch = b.generate(prompts, max_new_tokens=n)
    assert [g.token_ids for g in batch] == [g.token_ids for g in single]
    assert [g.text for g in batch] == [g.text for g in single]


def test_generation_is_deterministic_and_seeded(tiny):
    s = Sampling(temperature=1.0, top_k=50, top_p=0.9, seed=3)
    a = tiny.generate("abc", sampling=s, max_new_tokens=10)[0]
    assert a == tiny.generate("abc", sampling=s, max_new_tokens=10)[0]
    others = {
        tiny.generate("abc", sampling=Sampling(1.0, seed=k), max_new_tokens=10)[0].token_ids for k in range(4)
    }
    assert len(others) > 1


def test_stop_strings(smol):
    p = smol.chat([{"role": "user", "content": "What is 2+2?"}])
    full = smol.generate(p, max_new_tokens=20)[0]
    assert full.finish_reason == "eos" and "4" in full.text
    cut = smol.generate(p, max_new_tokens=20, stop=["4"])[0]
    assert cut.finish_reason == "stop" and "4" not in cut.text and full.text.startswith(cut.text)


def test_chat_templates():
    smol = load("smollm2-135m")
    assert smol.info.has_chat_template and "<|im_start|>user" in smol.chat(
        [{"role": "user", "content": "hi"}]
    )


@pytest.mark.slow
def test_gemma3_loads_and_behaves():
    g = load("gemma3-270m")
    assert g.info.architecture == "gemma3_text" and g.info.n_layers == 18 and g.info.hidden_size == 640
    assert not g.info.has_chat_template
    assert g.chat([{"role": "user", "content": "hi"}]) == "User: hi\n\nAssistant:"
    ids = g.tokenize("The capital of France is Paris. The capital of Germany is", add_special_tokens=True)
    ref = g.forward(ids, capture=[0, 9, 18], logits="all")
    out = g.forward(ids, inject=[Injection(9, ref.hidden[9], positions=None)], logits="all")
    assert np.abs(out.logits - ref.logits).max() <= 1e-5
    assert (
        "Berlin"
        in g.generate("The capital of France is Paris. The capital of Germany is", max_new_tokens=4)[0].text
    )
    smol = load("smollm2-135m")
    assert g.info.fingerprint != smol.info.fingerprint


def test_generate_fires_each_injection_once_at_the_prompt_positions(tiny):
    """An injection acts on the prompt pass only (the `Conditioning` contract, as on mlx):
    decode steps reuse the prompt's cache and never call the injection again."""
    assert_injection_fires_once_at_the_prompt_positions(tiny, lambda h: h.float().cpu().numpy())


# -- bad input -----------------------------------------------------------------------
def test_bad_layers_positions_and_sizes(tiny):
    ids = prompt_ids(tiny)
    d = tiny.info.hidden_size
    with pytest.raises(LayerError, match=r"expected 0\.\.4"):
        tiny.forward(ids, capture=[5])
    with pytest.raises(LayerError):
        tiny.forward(ids, capture=[-1])
    with pytest.raises(LayerError):
        tiny.forward(ids, inject=[Injection(9, np.zeros(d, np.float32))])
    with pytest.raises(HiddenSizeError, match=f"shape \\[{d}\\]"):
        tiny.forward(ids, inject=[Injection(1, np.zeros(d + 1, np.float32))])
    with pytest.raises(HiddenSizeError, match="NaN"):
        tiny.forward(ids, inject=[Injection(1, np.full(d, np.nan, np.float32))])
    with pytest.raises(HiddenSizeError):
        tiny.forward(ids, prefix=np.zeros((2, d - 1), np.float32))
    with pytest.raises(PositionError, match="outside"):
        tiny.forward(ids, capture=[1], positions=[len(ids)])
    with pytest.raises(PositionError):
        tiny.forward(ids, inject=[Injection(1, np.zeros(d, np.float32), positions=[-len(ids) - 1])])
    with pytest.raises(ModelError, match="token ids"):
        tiny.forward([tiny.info.vocab_size + 5])
    with pytest.raises(ModelError, match="tokenize"):
        tiny.forward("raw text")  # type: ignore[arg-type]
    with pytest.raises(ConditioningError, match="mode"):
        tiny.forward(ids, inject=[Injection(1, np.zeros(d, np.float32), mode="multiply")])
    with pytest.raises(ModelError, match="max_new_tokens"):
        tiny.generate("x", max_new_tokens=0)
    with pytest.raises(ModelError, match="temperature"):
        tiny.generate("x", sampling=Sampling(temperature=-1))


def test_cache_from_another_model_is_refused():
    a, b = load("tiny-random-llama"), load("tiny-random-gemma3")
    past = a.forward(prompt_ids(a), return_past=True).past
    with pytest.raises(FingerprintMismatchError, match="produced by model"):
        b.forward(prompt_ids(b), past=past)
    with pytest.raises(FingerprintMismatchError):
        b.generate("x", Conditioning(past=past))
    with pytest.raises(FingerprintMismatchError):
        b.generate(["x", "y"], [Conditioning(past=past), Conditioning()])


def test_unknown_model_and_backend():
    with pytest.raises(lpca_models.UnknownModelError, match="tiny-random-llama"):
        lpca_models.load("gpt-17")
    with pytest.raises(ModelError, match="backend must be one of"):
        lpca_models.load("tiny-random-llama", backend="jax")


@pytest.mark.parametrize("model_id", ["tiny-random-gemma3", "smollm2-135m"])
def test_resume_from_a_late_layer_matches_the_full_forward(model_id):
    b = load(model_id)
    ids = prompt_ids(b)
    for layer in (0, b.info.n_layers // 2, b.info.n_layers - 1):
        full = b.forward(ids, capture=[layer], logits="all")
        resumed = b.resume(full.hidden[layer], layer, logits="all")
        assert np.abs(resumed.logits - full.logits).max() <= 1e-4, layer
