"""Classification metrics of route heads: accuracy, macro-F1, confusion, calibration, abstention.

Everything takes integer class indices ``y`` in ``0..C-1`` and, where confidence matters,
probabilities ``[N, C]``; all of it is numpy.

- **Macro-F1**: the unweighted mean of per-class F1 over the classes that occur in ``y_true`` or
  ``y_pred`` (scikit-learn's default), so a constant predictor is not rewarded for classes that
  never appear.
- **Confusion**: ``[C, C]`` counts, rows the true class, columns the predicted one.
- **Expected calibration error** (Guo et al. 2017): split ``[0, 1]`` into `bins` equal-width bins
  by the top-1 probability ``c_i = max_k p_ik`` (the first bin is closed ``[0, 1/B]``, the rest
  ``(lo, hi]``); ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` with ``acc`` the fraction whose
  top-1 is right and ``conf`` the mean ``c_i`` in the bin.
- **Temperature scaling**: one scalar ``T > 0`` dividing the logits, fitted by minimising the
  negative log-likelihood on a calibration split (a bounded 1-D search over ``log T``); it never
  changes the argmax, only the confidence.
- **Abstain region**: a prediction whose top-1 probability is below a threshold ``t`` abstains;
  coverage is the fraction that does not, accuracy is measured on those alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpca_models.split.errors import SplitError

ABSTAIN_THRESHOLDS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise SplitError(f"labels must be two 1-D arrays of one length; got {t.shape} and {p.shape}")
    return t.astype(int), p.astype(int)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _pair(y_true, y_pred)
    return float((t == p).mean()) if len(t) else float("nan")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C, C]`` int counts; rows true, columns predicted."""
    t, p = _pair(y_true, y_pred)
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C]`` F1 per class (0 where a class has no true and no predicted member)."""
    m = confusion(y_true, y_pred, n_classes)
    tp = np.diag(m).astype(float)
    denom = m.sum(0) + m.sum(1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``."""
    m = confusion(y_true, y_pred, n_classes)
    present = (m.sum(0) + m.sum(1)) > 0
    if not present.any():
        return float("nan")
    return float(per_class_f1(y_true, y_pred, n_classes)[present].mean())


def _probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or (p < -1e-9).any() or not np.allclose(p.sum(1), 1.0, atol=1e-5):
        raise SplitError(f"probabilities must be [N, C >= 2], non-negative rows summing to 1; got {p.shape}")
    return p


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 prediction (see the module docstring)."""
    p = _probs(probs)
    t = np.asarray(y_true).astype(int)
    if bins < 1 or len(t) != len(p):
        raise SplitError(
            f"need bins >= 1 and one label per row; got {bins} bins, {len(t)} labels, {len(p)} rows"
        )
    conf, right = p.max(1), p.argmax(1) == t
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.mean() * abs(right[rows].mean() - conf[rows].mean())
    return float(total)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(y_true).astype(int)].mean())


def fit_temperature(
    logits: np.ndarray, y_true: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The ``T`` in `bounds` minimising the NLL on a calibration split (golden-section on ``log T``,
    after a coarse grid so a non-convex tail cannot trap it). 1.0 when the split is empty."""
    if len(y_true) == 0:
        return 1.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    grid = np.linspace(lo, hi, 41)
    vals = [nll(logits, y_true, float(np.exp(g))) for g in grid]
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(logits, y_true, float(np.exp(c))) <= nll(logits, y_true, float(np.exp(d))):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def abstain_curve(
    probs: np.ndarray, y_true: np.ndarray, thresholds: Sequence[float] = ABSTAIN_THRESHOLDS
) -> list[dict[str, float]]:
    """``{threshold, coverage, accuracy}`` per threshold: predictions with top-1 probability ``>= t``
    are kept; accuracy over the kept ones (NaN when none is kept)."""
    p = _probs(probs)
    t = np.asarray(y_true).astype(int)
    conf, right = p.max(1), p.argmax(1) == t
    out = []
    for th in thresholds:
        keep = conf >= th
        out.append(
            {
                "threshold": float(th),
                "coverage": float(keep.mean()) if len(t) else float("nan"),
                "accuracy": float(right[keep].mean()) if keep.any() else float("nan"),
            }
        )
    return out


def classification(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[str],
    probs: np.ndarray | None = None,
    bins: int = 15,
) -> dict:
    """Accuracy, macro-F1, per-class F1, confusion (and ECE when `probs` is given) as a JSON-able dict."""
    c = len(labels)
    doc = {
        "n": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, c),
        "per_class_f1": dict(zip(labels, per_class_f1(y_true, y_pred, c).tolist())),
        "confusion": confusion(y_true, y_pred, c).tolist(),
    }
    if probs is not None:
        doc["ece"] = ece(probs, y_true, bins)
    return doc
