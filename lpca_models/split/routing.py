"""Vitality labels, the held-out-by-prompt splits, and the baselines a route head must beat.

**Vitality.** The state at the shallow boundary is *alive* when the local path settles the
prediction: the oracle's exit layer ``e`` (the earliest layer whose tuned lens is within the KL
and margin thresholds of the final distribution and agrees on its top-1; `oracle.exit_layers`)
is at most the late boundary, i.e. the route label is ``accept_local`` or ``continue_local``.
It is *dead* when only layers past the late boundary settle it (``revive_local``, ``escalate``):
carrying that state to the late boundary and reading it there does not reproduce the final
next-token distribution. Vitality is a coarsening of the route labels, from the same lens
statistics, boundaries and thresholds.

**Splits.** Held-out data is held out by prompt seed (`capture`: env seeds from 10_000 and
shuffled HumanEval problems), never by position within a prompt. The calibration split that
fits the temperature is cut from the train side the same way: whole ``(source, seed)`` groups
(every agent's view of one env instance travels together).

**Baselines**, measured on the same held-out positions:

- *majority*: the train side's most frequent label, with the train class frequencies as its
  probabilities;
- *fixed split*: always one label (``continue_local``, the naive split at the late boundary, for
  routing; ``alive`` for vitality);
- *entropy*: the entropy of the logit lens at the shallow boundary, cut into the classes by
  ordered thresholds fitted on the train side (an exhaustive search over a quantile grid, both
  orders of the classes, maximising macro-F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations_with_replacement

import numpy as np

from lpca_models.backend import Backend
from lpca_models.split.calibration import macro_f1
from lpca_models.split.capture import Captured
from lpca_models.split.errors import SplitError
from lpca_models.split.lens import TunedLens, check_hidden, check_layer, log_softmax
from lpca_models.split.metrics import LayerStats
from lpca_models.split.oracle import Boundaries, OracleThresholds, exit_layers

VITALITY_LABELS = ("alive", "dead")


def vitality_labels(
    stats: LayerStats, boundaries: Boundaries, thresholds: OracleThresholds = OracleThresholds()
) -> list[str]:
    """``alive`` where the oracle exit layer is at most the late boundary, else ``dead``."""
    boundaries.check(stats.n_layers)
    return [
        VITALITY_LABELS[0] if e <= boundaries.late else VITALITY_LABELS[1]
        for e in exit_layers(stats, thresholds)
    ]


def head_layers(shallow: int, first: int | None = None, k: int = 3) -> tuple[int, ...]:
    """`k` layers evenly spaced from `first` (the sufficiency map's earliest useful layer; 1 when
    None) up to the shallow boundary, which is always read; fewer when they coincide."""
    if k < 1 or shallow < 0:
        raise SplitError(f"need k >= 1 and a shallow boundary >= 0; got k {k}, shallow {shallow}")
    start = min(max(1 if first is None else first, 0), shallow)
    return tuple(sorted({round(float(x)) for x in np.linspace(start, shallow, k)}))


def prompt_groups(cap: Captured) -> np.ndarray:
    """``[N]`` group index per row: rows share a group when their prompts share (source, seed)."""
    keys = [(cap.prompts[i].source, cap.prompts[i].seed) for i in cap.prompt.tolist()]
    index = {k: j for j, k in enumerate(sorted(set(keys)))}
    return np.array([index[k] for k in keys], dtype=np.int64)


def calibration_rows(cap: Captured, fraction: float, seed: int = 0) -> np.ndarray:
    """``[N]`` bool: the rows of a `fraction` of the (source, seed) groups, drawn with `seed`."""
    if not 0 <= fraction < 1:
        raise SplitError(f"calibration fraction must be in [0, 1); got {fraction}")
    groups = prompt_groups(cap)
    n = int(groups.max()) + 1 if len(groups) else 0
    order = np.random.default_rng(seed).permutation(n)
    picked = order[: int(np.ceil(fraction * n))] if fraction > 0 else order[:0]
    return np.isin(groups, picked)


def lens_entropy(
    backend: Backend, states: np.ndarray, layer: int, lens: TunedLens | None = None, chunk: int = 256
) -> np.ndarray:
    """``[N]`` entropy (nats) of the logit lens (or `lens`) on states ``[N, d]`` after block `layer`."""
    check_layer(layer, backend.info.n_layers)
    h = check_hidden(states, backend.info.hidden_size)
    out = []
    for s in range(0, len(h), chunk):
        x = h[s : s + chunk] if lens is None else lens.translate(h[s : s + chunk], layer)
        logp = log_softmax(backend.unembed(x))
        out.append(-(np.exp(logp) * logp).sum(-1, dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def route_by_thresholds(score: np.ndarray, thresholds: Sequence[float], order: Sequence[int]) -> np.ndarray:
    """Class ``order[j]`` where ``thresholds[j-1] < score <= thresholds[j]`` (ascending thresholds)."""
    return np.asarray(order)[np.searchsorted(np.asarray(thresholds), score, side="left")]


def fit_thresholds(score: np.ndarray, y: np.ndarray, n_classes: int, grid: int = 25) -> dict:
    """Ordered thresholds on `score` cutting it into `n_classes` (in label order or reversed),
    maximising train macro-F1 over a quantile grid; ``{"thresholds", "order", "train_macro_f1"}``."""
    if len(score) != len(y) or len(y) == 0:
        raise SplitError(f"need one label per score; got {len(score)} scores, {len(y)} labels")
    cands = np.unique(np.quantile(score, np.linspace(0, 1, grid)))
    best = {"train_macro_f1": -1.0}
    for order in (list(range(n_classes)), list(range(n_classes))[::-1]):
        for cut in combinations_with_replacement(cands.tolist(), n_classes - 1):
            f1 = macro_f1(y, route_by_thresholds(score, cut, order), n_classes)
            if f1 > best["train_macro_f1"]:
                best = {"thresholds": list(cut), "order": order, "train_macro_f1": f1}
    return best
