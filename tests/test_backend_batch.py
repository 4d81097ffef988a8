"""Batched white-box passes (`forward_batch`, `decode_embeddings`, `generate` with per-row caches) equal
the per-sequence calls they replace, on both backends and both tiny architectures (Gemma-3 has
sliding-window layers). Tolerance: max abs diff <= 1e-4 on logits, captures and exported caches
(measured: <= 1.2e-5 on torch, 0 on MLX); greedy tokens identical."""

import numpy as np
import pytest

import lpca_models
from lpca_models import (
    Backend,
    Conditioning,
    ForwardRequest,
    HiddenSizeError,
    Injection,
    LayerError,
    ModelError,
    PositionError,
)

MODELS = ["tiny-random-llama", "tiny-random-gemma3"]
ATOL = 1e-4
_CACHE: dict[tuple[str, str], Backend] = {}


def load(model_id: str, framework: str) -> Backend:
    if framework == "mlx":
        pytest.importorskip("mlx.core")
    key = (model_id, framework)
    if key not in _CACHE:
        _CACHE[key] = lpca_models.load(model_id, backend=framework)
    return _CACHE[key]


@pytest.fixture(params=[(m, f) for f in ("torch", "mlx") for m in MODELS], ids=lambda p: f"{p[1]}-{p[0]}")
def backend(request):
    return load(*request.param)


ROLE = "System: you are agent A. You read a table of facts and tell your partner what it needs. Your view:"


def seqs(b: Backend, tails=(" cat dog", " a b c d e f g h i j", " hello")) -> list[list[int]]:
    head = b.tokenize(ROLE, add_special_tokens=True)
    return [head + b.tokenize(t) for t in tails]


def assert_same(got, ref, what):
    assert got.n_positions == ref.n_positions, what
    assert got.logits.shape == ref.logits.shape, what
    if ref.logits.size:
        np.testing.assert_allclose(got.logits, ref.logits, atol=ATOL, err_msg=what)
    assert sorted(got.hidden) == sorted(ref.hidden), what
    for layer in ref.hidden:
        np.testing.assert_allclose(
            got.hidden[layer], ref.hidden[layer], atol=ATOL, err_msg=f"{what} L{layer}"
        )
    assert (got.past is None) == (ref.past is None), what
    if ref.past is not None:
        assert got.past.length == ref.past.length and got.past.layers == ref.past.layers, what
        for k1, k2 in zip(got.past.keys + got.past.values, ref.past.keys + ref.past.values):
            np.testing.assert_allclose(k1, k2, atol=ATOL, err_msg=f"{what} cache")


def check_batch(b: Backend, reqs: list[ForwardRequest]) -> list:
    outs = b.forward_batch(reqs)
    assert len(outs) == len(reqs)
    for i, (r, o) in enumerate(zip(reqs, outs)):
        assert_same(o, b.forward(**r.kwargs()), f"request {i}")
    return outs


def test_mixed_requests_equal_their_single_forwards(backend):
    b = backend
    d = b.info.hidden_size
    rng = np.random.default_rng(0)
    s = seqs(b)
    reqs = [
        ForwardRequest(s[0], capture=[1, 2], positions=[-1, 3], logits="last", return_past=True),
        ForwardRequest(
            s[1],
            capture=[0, 2],
            inject=[Injection(1, rng.standard_normal(d).astype(np.float32), positions=(-1, -3), mode="add")],
            logits="none",
        ),
        ForwardRequest(
            s[2],
            prefix=rng.standard_normal((2, d)).astype(np.float32),
            prefix_at=len(s[2]) - 1,
            capture=[2],
            logits="all",
        ),
        ForwardRequest(b.tokenize("x", add_special_tokens=True), logits="last"),
    ]
    check_batch(b, reqs)


def test_rows_continuing_their_own_caches(backend):
    b = backend
    s = seqs(b)
    p1 = b.forward(s[0], return_past=True).past
    p2 = b.forward(s[2][:5], return_past=True).past
    reqs = [
        ForwardRequest(b.tokenize(" next one"), past=p1, capture=[1], return_past=True),
        ForwardRequest(b.tokenize(" x y z w"), past=p2, logits="all"),
        ForwardRequest(s[1], capture=[2], positions=[-1]),  # no cache: its own positions start at 0
    ]
    check_batch(b, reqs)


def test_a_shared_role_prompt_is_read_once_on_torch():
    b = load("tiny-random-llama", "torch")
    s = seqs(b)
    reqs = [ForwardRequest(x, capture=[2], positions=[-1], return_past=True) for x in s]
    before = b.timing.forward_passes
    check_batch(b, reqs)
    # one pass over the shared head, one over the three tails
    assert b.timing.forward_passes - before - len(reqs) == 2
    # a capture inside the shared head turns sharing off (and stays exact)
    check_batch(b, [ForwardRequest(x, capture=[1], positions=[2, -1]) for x in s])


def test_decode_embeddings_equals_the_row_by_row_loop(backend):
    b = backend
    table = b.input_embeddings()
    s = seqs(b)

    def step(logits, t):
        assert logits.shape[1:] == (b.info.vocab_size,)
        top = logits.argmax(-1)
        # stop rows whose greedy token is even after two vectors: rows stop at different steps
        return table[top], (top % 2 == 0) & (t >= 2)

    got = b.decode_embeddings(s, 6, step)
    ref = Backend.decode_embeddings(b, s, 6, step)
    assert [g.shape for g in got] == [r.shape for r in ref]
    for g, r in zip(got, ref):
        assert 1 <= len(g) <= 6
        np.testing.assert_allclose(g, r, atol=ATOL)


def test_decode_embeddings_rejects_bad_input(backend):
    b = backend
    d = b.info.hidden_size
    ids = b.tokenize("hi", add_special_tokens=True)
    with pytest.raises(ModelError, match="token-id lists"):
        b.decode_embeddings("hello", 2, lambda lg, t: (np.zeros((1, d)), np.zeros(1, bool)))
    with pytest.raises(ModelError, match="steps"):
        b.decode_embeddings([ids], 0, lambda lg, t: (np.zeros((1, d)), np.zeros(1, bool)))
    with pytest.raises(HiddenSizeError, match=rf"\[2, {d}\]"):
        b.decode_embeddings([ids, ids], 2, lambda lg, t: (np.zeros((2, d + 1)), np.zeros(2, bool)))
    with pytest.raises(HiddenSizeError, match="finite"):
        b.decode_embeddings([ids], 2, lambda lg, t: (np.full((1, d), np.nan), np.zeros(1, bool)))
    with pytest.raises(ModelError, match="stop flags"):
        b.decode_embeddings([ids], 2, lambda lg, t: (np.zeros((1, d)), np.zeros(3, bool)))


def test_generate_with_a_cache_per_row_equals_one_at_a_time(backend):
    b = backend
    s = seqs(b)
    p1 = b.forward(s[0], return_past=True).past
    p2 = b.forward(s[1][:7], return_past=True).past
    prompts = [" a b", " c d e f", " g"]
    conds = [Conditioning(past=p1), Conditioning(past=p2), Conditioning()]
    batched = b.generate(prompts, conds, max_new_tokens=6)
    alone = [b.generate(p, c, max_new_tokens=6)[0] for p, c in zip(prompts, conds)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


def test_bad_requests_get_the_errors_of_forward(backend):
    b = backend
    ids = b.tokenize("hello", add_special_tokens=True)
    with pytest.raises(ModelError, match="list of ForwardRequest"):
        b.forward_batch(ForwardRequest(ids))
    with pytest.raises(ModelError, match="ForwardRequest records"):
        b.forward_batch([ForwardRequest(ids), {"ids": ids}])
    with pytest.raises(LayerError, match="out of range"):
        b.forward_batch([ForwardRequest(ids), ForwardRequest(ids, capture=[b.info.n_layers + 1])])
    with pytest.raises(PositionError, match="outside a sequence"):
        b.forward_batch([ForwardRequest(ids), ForwardRequest(ids, capture=[1], positions=[99])])
    with pytest.raises(HiddenSizeError):
        b.forward_batch([ForwardRequest(ids), ForwardRequest(ids, prefix=np.zeros((1, 3), np.float32))])
    assert b.forward_batch([]) == []


def test_sender_states_batch_equals_sender_states(backend):
    b = backend
    prompts = [ROLE + " cat", ROLE + " a much longer view of the table than the first one"]
    for tail in (0, 2):
        got = b.sender_states_batch(prompts, 2, tail)
        for g, p in zip(got, prompts):
            np.testing.assert_allclose(g, b.sender_states(p, 2, tail), atol=ATOL)
