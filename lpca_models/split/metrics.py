"""Per-position, per-layer comparison of a lens with the model's final next-token distribution.

For a position with final distribution ``p`` (the last layer's) and a lens distribution ``q_l``
at layer ``l``:

- ``kl[l] = KL(p || q_l) = sum_v p(v) (log p(v) - log q_l(v))`` in nats (0 at the last layer);
- ``top1[l]``: ``argmax q_l == argmax p``;
- ``margin[l] = q_l(top1) - q_l(top2)``: the lens's own confidence (its two largest probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lpca_models.backend import Backend
from lpca_models.split.errors import LensWidthError, OracleError
from lpca_models.split.lens import TunedLens, check_hidden, log_softmax


@dataclass(frozen=True)
class LayerStats:
    """`kl`, `top1`, `margin`, each ``[P, L+1]`` (positions x layers 0..L; column L is the final)."""

    kl: np.ndarray
    top1: np.ndarray
    margin: np.ndarray

    @property
    def n_positions(self) -> int:
        return int(self.kl.shape[0])

    @property
    def n_layers(self) -> int:
        """L: the columns are layers 0..L."""
        return int(self.kl.shape[1]) - 1

    @property
    def final_margin(self) -> np.ndarray:
        return self.margin[:, -1]

    def select(self, rows: np.ndarray) -> LayerStats:
        return LayerStats(self.kl[rows], self.top1[rows], self.margin[rows])

    def summary(self) -> dict[str, list[float]]:
        """Per-layer aggregates over positions: mean and median KL, top-1 agreement, mean margin."""
        if self.n_positions == 0:
            raise OracleError("no positions to summarise")
        return {
            "kl_mean": self.kl.mean(0).tolist(),
            "kl_median": np.median(self.kl, 0).tolist(),
            "top1": self.top1.mean(0).tolist(),
            "margin_mean": self.margin.mean(0).tolist(),
        }


def compare(
    final_logprobs: np.ndarray, lens_logprobs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(kl, top1, margin)`` of lens rows ``[P, V]`` against final rows ``[P, V]`` (log-probs)."""
    p, q = np.asarray(final_logprobs), np.asarray(lens_logprobs)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] < 2:
        raise OracleError(f"need two log-prob arrays of one shape [P, V>=2]; got {p.shape} and {q.shape}")
    return _compare(p, np.exp(p), p.argmax(-1), q)


def _compare(
    p: np.ndarray, p_exp: np.ndarray, p_top: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`compare` with the final's probabilities and top-1 computed once for every layer."""
    kl = np.maximum((p_exp * (p - q)).sum(-1, dtype=np.float64), 0.0)
    two = np.sort(np.partition(q, -2, axis=-1)[:, -2:], axis=-1).astype(np.float64)  # two largest
    margin = np.exp(two[:, 1]) - np.exp(two[:, 0])
    return kl, q.argmax(-1) == p_top, margin


def stats_from_distributions(probs: Any) -> LayerStats:
    """`LayerStats` of hand-made distributions ``[L+1, P, V]`` (layer-major; the last is the final)."""
    a = np.asarray(probs, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] < 2:
        raise OracleError(f"distributions must be [L+1 >= 2, P, V]; got shape {a.shape}")
    if (a < 0).any() or not np.allclose(a.sum(-1), 1.0, atol=1e-6):
        raise OracleError("each distribution must be non-negative and sum to 1")
    logp = np.log(np.maximum(a, 1e-300))
    cols = [compare(logp[-1], logp[i]) for i in range(a.shape[0])]
    return LayerStats(*(np.stack([c[i] for c in cols], axis=1) for i in range(3)))


def lens_stats(
    backend: Backend, hidden: np.ndarray, lens: TunedLens | None = None, chunk: int = 128
) -> LayerStats:
    """Compare every layer's lens with the final distribution over states ``[N, L+1, d]``.

    `lens` None is the logit lens. The final distribution is ``unembed(h_L)``, which is the
    model's own next-token distribution (the lens-identity test checks this on both backends).
    """
    n_layers, d = backend.info.n_layers, backend.info.hidden_size
    h = check_hidden(hidden, d, "captured hidden states")
    if h.ndim != 3 or h.shape[1] != n_layers + 1:
        raise LensWidthError(f"captured hidden states must be [N, {n_layers + 1}, {d}]; got {h.shape}")
    if lens is not None:
        lens.check_model(backend.info)
    out = np.zeros((3, len(h), n_layers + 1))
    for s in range(0, len(h), chunk):
        rows = h[s : s + chunk]
        final = log_softmax(backend.unembed(rows[:, n_layers]))
        final_exp, final_top = np.exp(final), final.argmax(-1)
        for layer in range(n_layers + 1):
            if layer == n_layers:  # no translator at the last layer: the lens is the final itself
                q = final
            else:
                x = rows[:, layer] if lens is None else lens.translate(rows[:, layer], layer)
                q = log_softmax(backend.unembed(x))
            kl, top1, margin = _compare(final, final_exp, final_top, q)
            out[0, s : s + chunk, layer], out[1, s : s + chunk, layer] = kl, top1
            out[2, s : s + chunk, layer] = margin
    return LayerStats(out[0], out[1].astype(bool), out[2])
