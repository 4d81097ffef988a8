"""Split inference, part two: route and vitality heads, their metrics, checkpoint and command.

Tiny random models and hand-made labelled sets only; real-model figures live in
benchmarks/bench_split_heads.py.
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
    VITALITY_LABELS,
    Boundaries,
    HeadCheckpointError,
    HeadFingerprintError,
    HeadLabelError,
    HeadTraining,
    HeadWidthError,
    RouteHead,
    SplitLayerError,
    abstain_curve,
    calibration_rows,
    capture,
    confusion,
    ece,
    fit_temperature,
    fit_thresholds,
    head_layers,
    load_head,
    macro_f1,
    stats_from_distributions,
    task_prompts,
    train_head,
    vitality_labels,
)
from lpca_models.split.calibration import softmax

ENVS = ("lpca/Arithmetic-v0", "lpca/KVLookup-v0")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_BACKENDS: dict[tuple[str, str], lpca_models.Backend] = {}


def backend(name: str = "tiny-random-llama", framework: str = "torch") -> lpca_models.Backend:
    if framework == "mlx":
        pytest.importorskip("mlx.core")
    key = (name, framework)
    if key not in _BACKENDS:
        _BACKENDS[key] = lpca_models.load(name, backend=framework)
    return _BACKENDS[key]


def separable(info, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """States ``[n, L+1, d]`` of noise whose layer-2 state carries the label as a shift along one
    of four fixed directions (the directions are the same for every seed, the noise is not)."""
    d = info.hidden_size
    directions = np.random.default_rng(123).normal(size=(len(LABELS), d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    h = rng.normal(size=(n, info.n_layers + 1, d)).astype(np.float32)
    h[:, 2] += 1.5 * directions[y]
    return h, [LABELS[i] for i in y]


# -- training ----------------------------------------------------------------------------
def test_head_learns_a_separable_set_deterministically():
    info = backend().info
    h, y = separable(info, 400, seed=0)
    h_held, y_held = separable(info, 200, seed=1)  # other "prompts": fresh noise
    cfg = HeadTraining(hidden=32, steps=150, seed=3)
    head = train_head(info, h, y, (1, 2), LABELS, cfg)
    acc = np.mean(np.array(head.predict(h_held)) == np.array(y_held))
    assert acc >= 0.95, acc
    linear = train_head(info, h, y, (2,), LABELS, HeadTraining(hidden=0, steps=150))
    assert np.mean(np.array(linear.predict(h_held)) == np.array(y_held)) >= 0.95
    again = train_head(info, h, y, (1, 2), LABELS, cfg)
    for a, b in zip(head.params, again.params):
        np.testing.assert_array_equal(a, b)
    assert head.meta["loss_last"] < head.meta["loss_first"]
    # a mapping {layer: [N, d]} reads the same as the full stack
    np.testing.assert_array_equal(head.logits({1: h_held[:, 1], 2: h_held[:, 2]}), head.logits(h_held))


# -- metrics -----------------------------------------------------------------------------
def test_ece_equals_the_hand_computation():
    # top-1 probabilities 0.95 (right), 0.95 (wrong), 0.65 (right), 0.55 (right), 0.55 (wrong)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.55, 0.45], [0.45, 0.55]])
    y = np.array([0, 1, 1, 0, 0])
    # 10 bins: (0.9, 1] acc 1/2 conf 0.95 -> 2/5 * 0.45; (0.6, 0.7] acc 1 conf 0.65 -> 1/5 * 0.35;
    # (0.5, 0.6] acc 1/2 conf 0.55 -> 2/5 * 0.05
    assert ece(probs, y, bins=10) == pytest.approx(0.4 * 0.45 + 0.2 * 0.35 + 0.4 * 0.05)
    # one bin: |mean accuracy - mean confidence| = |3/5 - 0.73|
    assert ece(probs, y, bins=1) == pytest.approx(abs(0.6 - 0.73))
    assert ece(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 0.0


def test_macro_f1_and_confusion_on_a_hand_made_case():
    t, p = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    assert confusion(t, p, 4).tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # F1: class 0 2*1/(2+2) = 0.5, class 1 2*2/(3+2) = 0.8, class 2 0; class 3 absent, not averaged
    assert macro_f1(t, p, 4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_temperature_scaling_lowers_ece_on_an_overconfident_case():
    rng = np.random.default_rng(0)
    n, c = 2000, 4
    y = rng.integers(0, c, n)
    guess = np.where(rng.random(n) < 0.7, y, (y + 1 + rng.integers(0, c - 1, n)) % c)  # 70% right
    logits = 8.0 * np.eye(c)[guess] + rng.normal(scale=0.5, size=(n, c))  # ~100% confident
    cal, test = slice(0, n // 2), slice(n // 2, n)
    temp = fit_temperature(logits[cal], y[cal])
    assert temp > 1.5
    before, after = ece(softmax(logits[test]), y[test]), ece(softmax(logits[test], temp), y[test])
    assert before > 0.2 and after < 0.05 and after < before, (before, after, temp)
    assert (softmax(logits[test], temp).argmax(1) == logits[test].argmax(1)).all()  # argmax unchanged


def test_abstain_region_on_a_hand_made_case():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.5, 0.5]])
    y = np.array([0, 1, 1, 0, 0])  # right, wrong, right, wrong, right (argmax of a tie is 0)
    rows = abstain_curve(probs, y, thresholds=(0.0, 0.6, 0.75, 0.85, 0.95))
    got = [(r["threshold"], r["coverage"], r["accuracy"]) for r in rows]
    assert got[0] == (0.0, 1.0, pytest.approx(3 / 5))
    assert got[1] == (0.6, 3 / 5, pytest.approx(2 / 3))  # keeps 0.9, 0.8, 0.7
    assert got[2] == (0.75, 2 / 5, pytest.approx(1 / 2))
    assert got[3] == (0.85, 1 / 5, 1.0)
    assert got[4][1] == 0.0 and np.isnan(got[4][2])


# -- labels, splits, baselines -----------------------------------------------------------
def test_vitality_labels_on_the_oracle_hand_made_case():
    on, off, flat, near = [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.6, 0.2, 0.2]
    rows = [[on] * 4, [off, near, on, on], [off, flat, near, off], [off, off, off, on], [off, flat, off, off]]
    probs = np.array([[r[i] for r in rows] for i in range(4)] + [[on] * len(rows)])
    stats = stats_from_distributions(probs)  # exit layers 0, 1, 2, 3, 4
    assert vitality_labels(stats, Boundaries(1, 2)) == ["alive", "alive", "alive", "dead", "dead"]
    assert vitality_labels(stats, Boundaries(1, 3)) == ["alive"] * 4 + ["dead"]


def test_entropy_thresholds_and_layer_choice():
    score = np.array([0.1, 0.2, 1.1, 1.3, 2.5, 2.7, 3.9, 4.0])
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    fit = fit_thresholds(score, y, 4)
    assert fit["train_macro_f1"] == 1.0 and fit["order"] == [0, 1, 2, 3]
    assert fit_thresholds(score, y[::-1], 4)["order"] == [3, 2, 1, 0]  # high entropy -> class 0
    assert head_layers(19, 1, 3) == (1, 10, 19)
    assert head_layers(2, None, 3) == (1, 2) and head_layers(5, 9, 2) == (5,)


def test_calibration_split_keeps_prompts_whole():
    b = backend()
    cap = capture(b, task_prompts(b, ENVS, train_seeds=4, heldout_seeds=0), max_positions=4).split(False)
    rows = calibration_rows(cap, 0.25, seed=0)
    assert 0 < rows.sum() < len(rows)
    key = [(cap.prompts[i].source, cap.prompts[i].seed) for i in cap.prompt]
    for k in set(key):  # a (source, seed) group is all calibration or all fit
        assert len({bool(r) for r, kk in zip(rows, key) if kk == k}) == 1


# -- checkpoint --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_head():
    """A head trained on tiny-random-llama's own states (torch), with the prompts it read."""
    b = backend()
    prompts = task_prompts(b, ENVS, train_seeds=2, heldout_seeds=1)
    cap = capture(b, prompts, max_positions=6)
    labels = [LABELS[i % 4] for i in range(len(cap))]
    head = train_head(b.info, cap.hidden, labels, (1, 3), LABELS, HeadTraining(hidden=16, steps=20))
    head.temperature = 1.7
    return head, prompts, cap


def test_save_load_round_trip_on_torch_and_mlx(real_head, tmp_path):
    head, prompts, cap = real_head
    tb, mb = backend(), backend(framework="mlx")
    path = head.save(tmp_path / "route")
    back = load_head(path, tb.info, labels=LABELS)
    assert (back.layers, back.labels, back.temperature) == (head.layers, head.labels, 1.7)
    assert back.meta == json.loads(json.dumps(head.meta))
    np.testing.assert_array_equal(back.probs(cap.hidden), head.probs(cap.hidden))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(back.logits(torch.from_numpy(cap.hidden)), head.logits(cap.hidden))
    on_mlx = load_head(path, mb.info, labels=LABELS)
    mcap = capture(mb, prompts, max_positions=6)  # MLX's own forward passes over the same prompts
    np.testing.assert_array_equal(mcap.position, cap.position)
    np.testing.assert_allclose(on_mlx.probs(mcap.hidden), head.probs(cap.hidden), atol=1e-3)
    mx = pytest.importorskip("mlx.core")
    np.testing.assert_allclose(on_mlx.logits(mx.array(mcap.hidden)), on_mlx.logits(mcap.hidden), atol=1e-5)


# -- bad inputs --------------------------------------------------------------------------
def _typed(exc: pytest.ExceptionInfo, *kinds: type) -> None:
    assert isinstance(exc.value, LPCAError) and isinstance(exc.value, ValueError)
    for k in kinds:
        assert isinstance(exc.value, k)


def test_layer_out_of_range(real_head):
    head, _, cap = real_head
    info = backend().info
    n = info.n_layers
    h, y = separable(info, 8, 0)
    for bad in (-1, n + 1, 1.5):
        with pytest.raises(SplitLayerError, match=f"expected 0..{n}") as e:
            train_head(info, h, y, (1, bad), LABELS, HeadTraining(steps=1))
        _typed(e, LayerError)
    with pytest.raises(SplitLayerError, match="distinct"):
        train_head(info, h, y, (2, 2), LABELS, HeadTraining(steps=1))
    with pytest.raises(SplitLayerError, match=r"0\.\.2"):  # states cut at layer 2; the head reads 3
        head.probs(cap.hidden[:, :3])
    with pytest.raises(SplitLayerError, match=r"lack \[3\]"):
        head.probs({1: cap.hidden[:, 1]})


def test_checkpoint_of_another_model(real_head, tmp_path):
    head, _, _ = real_head
    path = head.save(tmp_path / "route")
    gemma = backend("tiny-random-gemma3")
    with pytest.raises(HeadFingerprintError, match="tiny-random-llama") as e:
        load_head(path, gemma.info)
    _typed(e, FingerprintMismatchError)


def test_wrong_width(real_head, tmp_path):
    head, _, cap = real_head
    info = backend().info
    d = info.hidden_size
    with pytest.raises(HeadWidthError, match=f"\\[..., {d}\\]") as e:
        head.probs(cap.hidden[..., : d - 1])
    _typed(e, HiddenSizeError)
    with pytest.raises(HeadWidthError):
        head.probs(np.zeros((2, d)))
    narrow = RouteHead(info.name, info.fingerprint, info.n_layers, 8, (1,), LABELS, np.zeros(8), np.ones(8),
                       (np.zeros((4, 8)), np.zeros(4)))  # fmt: skip
    with pytest.raises(HeadWidthError, match="width 8"):
        narrow.check_model(info)
    with pytest.raises(HeadWidthError, match="into 4 labels"):
        RouteHead("m", "f", 4, 8, (1,), LABELS, np.zeros(8), np.ones(8), (np.zeros((4, 9)), np.zeros(4)))
    path = narrow.save(tmp_path / "narrow")  # a config that disagrees with its weights
    doc = json.loads((path / "head.json").read_text())
    (path / "head.json").write_text(json.dumps(doc | {"hidden_size": d}))
    with pytest.raises(HeadWidthError):
        load_head(path)


def test_truncated_or_corrupt_checkpoint(real_head, tmp_path):
    head, _, _ = real_head
    path = head.save(tmp_path / "route")
    weights, config = path / "head.safetensors", path / "head.json"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(HeadCheckpointError, match="truncated or corrupt") as e:
        load_head(path)
    _typed(e)
    weights.write_bytes(data)
    good = config.read_text()
    for text, match in (("{not json", "not a valid"), (json.dumps({"format": "x"}), "format 'x'")):
        config.write_text(text)
        with pytest.raises(HeadCheckpointError, match=match):
            load_head(path)
    config.write_text(good)
    assert load_head(path).layers == head.layers
    with pytest.raises(HeadCheckpointError, match=r"expected head\.json"):
        load_head(tmp_path / "missing")


def test_label_set_mismatch(real_head, tmp_path):
    head, _, cap = real_head
    path = head.save(tmp_path / "route")
    with pytest.raises(HeadLabelError, match="expected \\['alive', 'dead'\\]") as e:
        load_head(path, labels=VITALITY_LABELS)
    _typed(e)
    info = backend().info
    with pytest.raises(HeadLabelError, match="revive"):
        train_head(info, cap.hidden[:2], ["alive", "revive"], (1,), VITALITY_LABELS, HeadTraining(steps=1))
    with pytest.raises(HeadLabelError):
        head.encode(["dead"])


# -- the command -------------------------------------------------------------------------
def test_cli_writes_the_heads_report(tmp_path):
    from typer.testing import CliRunner

    from lpca_protocols.cli import app

    out = tmp_path / "heads"
    args = ["split", "heads", "-m", "tiny-random-llama", "--envs", ",".join(ENVS), "--train-seeds", "4"]
    args += [
        "--heldout-seeds",
        "2",
        "--humaneval-train",
        "0",
        "--humaneval-heldout",
        "0",
        "--lens-steps",
        "2",
    ]
    res = CliRunner().invoke(app, [*args, "--steps", "20", "--hidden", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "heads.json").read_text())
    assert set(doc["tasks"]) == {"route", "vitality"}
    assert max(doc["layers"]) <= doc["boundaries"]["shallow"]
    for task, labels in (("route", LABELS), ("vitality", VITALITY_LABELS)):
        r = doc["tasks"][task]
        assert set(r["baselines"]) == {"majority", "fixed_split", "entropy"}
        assert np.array(r["head"]["confusion"]).sum() == doc["positions"]["heldout"]
        head = load_head(out / task, backend().info, labels=labels)
        assert head.temperature == r["head"]["temperature"]
    assert (out / "heads.md").read_text().startswith("# Route and vitality heads")
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--boundaries", "1,9"])
    assert res.exit_code == 2 and "late boundary" in res.output
