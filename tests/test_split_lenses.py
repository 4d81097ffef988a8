"""Split inference, part one: logit and tuned lens, the sufficiency report, oracle labels.

Tiny random models only (both backends); real-model figures live in benchmarks/bench_split_lenses.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import lpca_models
from lpca_envs.errors import LPCAError
from lpca_models.errors import FingerprintMismatchError, HiddenSizeError, LayerError
from lpca_models.split import (
    LABELS,
    Boundaries,
    LensCheckpointError,
    LensFingerprintError,
    LensTraining,
    LensWidthError,
    OracleError,
    OracleThresholds,
    SplitLayerError,
    TunedLens,
    capture,
    choose_boundaries,
    exit_layers,
    lens_stats,
    load_lens,
    log_softmax,
    logit_lens,
    oracle_labels,
    stats_from_distributions,
    sweep,
    task_prompts,
    train_tuned_lens,
)

ENVS = ("lpca/Arithmetic-v0", "lpca/KVLookup-v0")
TEXT = "Here is what you know: x = 7. Compute x + 2."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_BACKENDS: dict[tuple[str, str], lpca_models.Backend] = {}


def backend(name: str, framework: str = "torch") -> lpca_models.Backend:
    if framework == "mlx":
        pytest.importorskip("mlx.core")
    key = (name, framework)
    if key not in _BACKENDS:
        _BACKENDS[key] = lpca_models.load(name, backend=framework)
    return _BACKENDS[key]


@pytest.fixture(scope="module")
def llama_data():
    b = backend("tiny-random-llama")
    cap = capture(b, task_prompts(b, ENVS, train_seeds=3, heldout_seeds=2), max_positions=8)
    return cap.split(False), cap.split(True)


@pytest.fixture(scope="module")
def trained(llama_data):
    train, _ = llama_data
    return train_tuned_lens(backend("tiny-random-llama"), train.hidden, LensTraining(steps=30, batch=32))


def _probs(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


# -- lens identity -----------------------------------------------------------------------
@pytest.mark.parametrize("framework", ["torch", "mlx"])
@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-gemma3"])
def test_last_layer_lens_is_the_models_next_token_distribution(name, framework):
    b = backend(name, framework)
    n = b.info.n_layers
    ids = b.prompt_ids(b.chat([{"role": "user", "content": TEXT}]))
    fwd = b.forward(ids, capture=list(range(n + 1)), logits="all")
    model = _probs(fwd.logits)
    h_last = fwd.hidden[n]
    np.testing.assert_allclose(_probs(logit_lens(b, h_last, n)), model, atol=1e-5)
    identity = TunedLens.identity(b.info)
    np.testing.assert_allclose(_probs(identity.logits(b, h_last, n)), model, atol=1e-5)
    for layer in range(n):  # an untrained tuned lens is the logit lens at every layer
        h = fwd.hidden[layer]
        np.testing.assert_array_equal(identity.logits(b, h, layer), logit_lens(b, h, layer))
    stats = lens_stats(b, np.stack([fwd.hidden[i] for i in range(n + 1)], axis=1))
    assert np.allclose(stats.kl[:, n], 0.0) and stats.top1[:, n].all()


# -- training ----------------------------------------------------------------------------
def test_short_training_lowers_heldout_kl_and_is_deterministic(llama_data, trained):
    b = backend("tiny-random-llama")
    train, held = llama_data
    n = b.info.n_layers
    logit = lens_stats(b, held.hidden).kl[:, :n].mean(0)
    tuned = lens_stats(b, held.hidden, trained).kl[:, :n].mean(0)
    assert tuned.mean() < logit.mean(), (tuned, logit)
    assert (tuned[1:] < logit[1:]).all(), (tuned, logit)  # every block's output, not just on average
    again = train_tuned_lens(b, train.hidden, LensTraining(steps=30, batch=32))
    np.testing.assert_array_equal(again.weight, trained.weight)
    np.testing.assert_array_equal(again.bias, trained.bias)
    assert trained.meta["loss_last"] < trained.meta["loss_first"]


def test_training_refuses_mlx_and_bad_states():
    mb = backend("tiny-random-llama", "mlx")
    h = np.zeros((4, mb.info.n_layers + 1, mb.info.hidden_size), np.float32)
    with pytest.raises(LPCAError, match="torch backend"):
        train_tuned_lens(mb, h, LensTraining(steps=1))
    with pytest.raises(LensWidthError):
        train_tuned_lens(backend("tiny-random-llama"), h[..., :10], LensTraining(steps=1))


# -- checkpoint --------------------------------------------------------------------------
def test_save_load_round_trip_on_torch_and_mlx(trained, llama_data, tmp_path):
    tb, mb = backend("tiny-random-llama"), backend("tiny-random-llama", "mlx")
    _, held = llama_data
    path = trained.save(tmp_path / "lens")
    back = load_lens(path, tb.info)
    assert back.meta == json.loads(json.dumps(trained.meta))
    ids = tb.prompt_ids(tb.chat([{"role": "user", "content": TEXT}]))
    layers = list(range(tb.info.n_layers + 1))
    ht = tb.forward(ids, capture=layers, logits="none").hidden
    hm = mb.forward(ids, capture=layers, logits="none").hidden
    mx = pytest.importorskip("mlx.core")
    on_mlx = load_lens(path, mb.info)
    for layer in layers:
        np.testing.assert_array_equal(back.logits(tb, ht[layer], layer), trained.logits(tb, ht[layer], layer))
        np.testing.assert_allclose(
            _probs(on_mlx.logits(mb, hm[layer], layer)),
            _probs(trained.logits(tb, ht[layer], layer)),
            atol=1e-4,
        )
        x = mx.array(hm[layer])  # mlx arrays in, mlx arrays out
        np.testing.assert_allclose(
            np.array(on_mlx.translate(x, layer)), on_mlx.translate(hm[layer], layer), atol=1e-5
        )
    assert np.allclose(lens_stats(mb, held.hidden, back).kl, lens_stats(tb, held.hidden, back).kl, atol=1e-3)


# -- oracle labels -----------------------------------------------------------------------
def _hand_made() -> np.ndarray:
    """[L+1 = 5, P = 6, V = 3] distributions; the final (layer 4) of every position is
    (0.7, 0.2, 0.1) (margin 0.5). `on` is the final itself, `off` a wrong top-1, `flat` the right
    top-1 with margin 0.1 (|0.1 - 0.5| > 0.15), `near` the right top-1 with margin 0.4."""
    on, off, flat, near = [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.6, 0.2, 0.2]
    rows = [
        [on, on, on, on],  # exit 0 -> accept_local
        [off, near, on, on],  # exit 1 -> accept_local (shallow boundary is 1)
        [off, flat, near, off],  # exit 2 -> continue_local (flat fails the margin)
        [off, off, off, on],  # exit 3 -> revive_local
        [off, flat, off, off],  # only the last -> escalate
        [flat, off, flat, off],  # only the last -> escalate
    ]
    final = [0.7, 0.2, 0.1]
    return np.array([[r[layer] for r in rows] for layer in range(4)] + [[final] * len(rows)])


def test_oracle_labels_on_a_hand_made_case():
    stats = stats_from_distributions(_hand_made())
    assert stats.n_layers == 4 and stats.n_positions == 6
    bounds = Boundaries(shallow=1, late=2)
    assert exit_layers(stats).tolist() == [0, 1, 2, 3, 4, 4]
    assert oracle_labels(stats, bounds) == [
        "accept_local",
        "accept_local",
        "continue_local",
        "revive_local",
        "escalate",
        "escalate",
    ]
    # a looser margin accepts `flat`: position 2 exits at 1 and position 4 at 1; without the top-1
    # rule and with huge thresholds every position exits at layer 0
    loose = OracleThresholds(kl_max=4.0, margin_delta=0.45)
    assert exit_layers(stats, loose).tolist() == [0, 1, 1, 3, 1, 0]
    anything = OracleThresholds(kl_max=1e9, margin_delta=1.0, require_top1=False)
    assert set(oracle_labels(stats, bounds, anything)) == {"accept_local"}
    rows = sweep(stats, bounds, kl_grid=(0.1, 4.0), margin_grid=(0.15, 0.45))
    assert len(rows) == 4
    for r in rows:
        assert sum(r[k] for k in LABELS) == pytest.approx(1.0)
    strict = rows[0]  # KL 0.1 still admits `near` (KL 0.04): the default labels again
    assert strict["escalate"] == pytest.approx(2 / 6)


def test_boundaries_from_evidence():
    top1 = [0.0, 0.2, 0.55, 0.8, 0.95, 1.0]  # 5 layers
    b, why = choose_boundaries(top1, 5, 0.5, 0.9)
    assert (b.shallow, b.late) == (2, 4) and "0.9" in why
    b, why = choose_boundaries([0.0, 0.1, 0.2, 0.3, 1.0], 4, 0.5, 0.9)  # only the last reaches either
    assert b.shallow < b.late < 4 and "set to" in why


# -- bad inputs --------------------------------------------------------------------------
def _typed(exc: pytest.ExceptionInfo, *kinds: type) -> None:
    assert isinstance(exc.value, LPCAError) and isinstance(exc.value, ValueError)
    for k in kinds:
        assert isinstance(exc.value, k)


def test_layer_out_of_range():
    b = backend("tiny-random-llama")
    n, h = b.info.n_layers, np.zeros((2, b.info.hidden_size), np.float32)
    for bad in (-1, n + 1, 1.5, True):
        with pytest.raises(SplitLayerError, match=f"expected 0..{n}") as e:
            logit_lens(b, h, bad)
        _typed(e, LayerError)
        with pytest.raises(SplitLayerError):
            TunedLens.identity(b.info).translate(h, bad)
    stats = stats_from_distributions(_hand_made())
    with pytest.raises(SplitLayerError, match="late boundary"):
        oracle_labels(stats, Boundaries(1, 9))
    with pytest.raises(OracleError, match="shallow < late") as e:
        oracle_labels(stats, Boundaries(2, 2))
    _typed(e)
    with pytest.raises(OracleError):
        OracleThresholds(kl_max=float("nan")).check()


def test_checkpoint_of_another_model(trained, tmp_path):
    path = trained.save(tmp_path / "lens")
    gemma = backend("tiny-random-gemma3")
    with pytest.raises(LensFingerprintError, match="tiny-random-llama") as e:
        load_lens(path, gemma.info)
    _typed(e, FingerprintMismatchError)
    h = np.zeros((1, gemma.info.hidden_size), np.float32)
    with pytest.raises(LensFingerprintError):
        trained.logits(gemma, h, 1)
    with pytest.raises(LensFingerprintError):
        lens_stats(gemma, np.zeros((1, gemma.info.n_layers + 1, gemma.info.hidden_size), np.float32), trained)


def test_wrong_width(trained, tmp_path):
    b = backend("tiny-random-llama")
    d = b.info.hidden_size
    with pytest.raises(LensWidthError, match=f"\\[..., {d}\\]") as e:
        trained.translate(np.zeros((2, d - 1), np.float32), 1)
    _typed(e, HiddenSizeError)
    with pytest.raises(LensWidthError):
        logit_lens(b, np.zeros((2, d + 1), np.float32), 1)
    narrow = TunedLens(b.info.name, b.info.fingerprint, np.zeros((4, 8, 8)), np.zeros((4, 8)))
    with pytest.raises(LensWidthError, match="width 8") as e:
        narrow.check_model(b.info)
    _typed(e)
    path = narrow.save(tmp_path / "narrow")  # a config that disagrees with its weights
    doc = json.loads((path / "lens.json").read_text())
    (path / "lens.json").write_text(json.dumps(doc | {"hidden_size": d}))
    with pytest.raises(LensWidthError, match=f"\\(4, {d}, {d}\\)"):
        load_lens(path)
    with pytest.raises(LensWidthError):
        TunedLens("m", "f", np.zeros((4, 8, 9)), np.zeros((4, 8)))


def test_truncated_or_corrupt_checkpoint(trained, tmp_path):
    path = trained.save(tmp_path / "lens")
    weights, config = path / "lens.safetensors", path / "lens.json"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(LensCheckpointError, match="truncated or corrupt") as e:
        load_lens(path)
    _typed(e)
    weights.write_bytes(data)
    assert load_lens(path).n_layers == trained.n_layers
    good = config.read_text()
    for text, match in (
        ("{not json", "not a valid"),
        (json.dumps({"format": "x"}), "format 'x'"),
        ("[]", "format"),
    ):
        config.write_text(text)
        with pytest.raises(LensCheckpointError, match=match):
            load_lens(path)
    config.write_text(good)
    weights.write_bytes(b"\0" * 8 + data[8:])  # same length, garbage header; its hash is checked first
    with pytest.raises(LensCheckpointError):
        load_lens(path)
    with pytest.raises(LensCheckpointError, match=r"expected lens\.json"):
        load_lens(tmp_path / "missing")


# -- the command -------------------------------------------------------------------------
def test_cli_writes_the_report(tmp_path):
    from typer.testing import CliRunner

    from lpca_protocols.cli import app

    out = tmp_path / "report"
    args = ["split", "lenses", "-m", "tiny-random-llama", "--envs", ENVS[0], "--train-seeds", "2"]
    args += ["--heldout-seeds", "1", "--humaneval-train", "1", "--humaneval-heldout", "1", "--steps", "3"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "report.json").read_text())
    n = doc["n_layers"]
    assert len(doc["layers"]["tuned/heldout"]["kl_mean"]) == n + 1
    assert 0 <= doc["boundaries"]["shallow"] < doc["boundaries"]["late"] < n
    assert sum(doc["oracle"]["heldout_balance"].values()) == pytest.approx(1.0)
    assert (out / "report.md").read_text().startswith("# Per-layer sufficiency")
    assert (out / "lens" / "lens.safetensors").is_file()
    pytest.importorskip("matplotlib")
    assert (out / "report.png").stat().st_size > 0
    res = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "r2"), "-m", "tiny-random-gemma3", "--lens", str(out / "lens")]
    )
    assert res.exit_code == 2 and "tiny-random-llama" in res.output
