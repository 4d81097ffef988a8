"""Oracle routing labels: how deep a position has to go before its prediction is settled.

Definitions (a position, the model's ``L`` blocks, a lens, two boundary layers
``0 <= shallow < late < L``, thresholds ``kl_max`` and ``margin_delta``):

- Layer ``l`` is **sufficient** when its lens distribution ``q_l`` is within the thresholds of
  the final distribution ``p`` (the last layer's): ``KL(p || q_l) <= kl_max``, the two agree on
  the top-1 token (unless ``require_top1`` is off), and the lens's top-1 margin
  ``q_l(top1) - q_l(top2)`` is within ``margin_delta`` of the final's: ``|m_l - m_L| <= margin_delta``.
- The **exit layer** ``e`` is the earliest sufficient layer. The last layer is always
  sufficient (``q_L = p``), so ``e <= L``.
- Labels, by where ``e`` falls:
    - ``accept_local``:   ``e <= shallow``          -- exit at the shallow boundary, accept locally;
    - ``continue_local``: ``shallow < e <= late``   -- a late boundary suffices: continue the local
      path up to it (resume from the late boundary);
    - ``revive_local``:   ``late < e < L``           -- no boundary suffices, but a layer before the
      last does: revive the local path past the late boundary;
    - ``escalate``:       ``e == L``                 -- no layer before the last is within the
      thresholds: the full depth (the deeper / remote path) is needed.

The published regime (the AGP documents) used KL 4.0 and margin delta 0.15; `sweep` reports
the class balance over a grid of thresholds so a calibration can be chosen from evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpca_models.split.errors import OracleError
from lpca_models.split.lens import check_layer
from lpca_models.split.metrics import LayerStats

LABELS = ("accept_local", "continue_local", "revive_local", "escalate")


@dataclass(frozen=True)
class OracleThresholds:
    """When a layer's lens counts as sufficient (see the module docstring)."""

    kl_max: float = 4.0
    """Largest KL(final || lens) in nats."""
    margin_delta: float = 0.15
    """Largest |lens margin - final margin| (top-1 minus top-2 probability)."""
    require_top1: bool = True
    """The lens's top-1 token must be the final's."""

    def check(self) -> None:
        ok = all(
            isinstance(v, int | float) and math.isfinite(v) and v >= 0
            for v in (self.kl_max, self.margin_delta)
        )
        if not ok:
            raise OracleError(f"thresholds must be finite and >= 0; got {self}")


@dataclass(frozen=True)
class Boundaries:
    """The two split layers the labels are relative to: ``0 <= shallow < late < n_layers``."""

    shallow: int
    late: int

    def check(self, n_layers: int) -> None:
        check_layer(self.shallow, n_layers, "shallow boundary")
        check_layer(self.late, n_layers, "late boundary")
        if not self.shallow < self.late < n_layers:
            raise OracleError(
                f"boundaries need 0 <= shallow < late < {n_layers}; "
                f"got shallow {self.shallow}, late {self.late}"
            )

    @classmethod
    def default(cls, n_layers: int) -> Boundaries:
        """Three quarters and nine tenths of the depth (the published 26 and 30 of a 34-block model)."""
        if n_layers < 3:
            raise OracleError(
                f"labels need a model of >= 3 layers (two boundaries below the last); got {n_layers}"
            )
        late = min(max(round(0.9 * n_layers), 2), n_layers - 1)
        shallow = min(max(round(0.75 * n_layers), 1), late - 1)
        return cls(shallow, late)


def sufficient(stats: LayerStats, thresholds: OracleThresholds = OracleThresholds()) -> np.ndarray:
    """``[P, L+1]`` bool: which layers are within the thresholds of the final, per position."""
    thresholds.check()
    ok = (stats.kl <= thresholds.kl_max) & (
        np.abs(stats.margin - stats.final_margin[:, None]) <= thresholds.margin_delta
    )
    if thresholds.require_top1:
        ok &= stats.top1
    ok[:, -1] = True  # the final layer is the final distribution
    return ok


def exit_layers(stats: LayerStats, thresholds: OracleThresholds = OracleThresholds()) -> np.ndarray:
    """``[P]`` int: the earliest sufficient layer of each position (``L`` when only the last is)."""
    return sufficient(stats, thresholds).argmax(axis=1)


def oracle_labels(
    stats: LayerStats, boundaries: Boundaries, thresholds: OracleThresholds = OracleThresholds()
) -> list[str]:
    """One of `LABELS` per position (see the module docstring)."""
    n = stats.n_layers
    boundaries.check(n)
    e = exit_layers(stats, thresholds)
    return [
        LABELS[0]
        if x <= boundaries.shallow
        else LABELS[1]
        if x <= boundaries.late
        else LABELS[2]
        if x < n
        else LABELS[3]
        for x in e.tolist()
    ]


def balance(labels: Sequence[str]) -> dict[str, float]:
    """Fraction of each label (all four keys, in `LABELS` order)."""
    n = max(len(labels), 1)
    return {k: sum(x == k for x in labels) / n for k in LABELS}


def sweep(
    stats: LayerStats,
    boundaries: Boundaries,
    kl_grid: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    margin_grid: Sequence[float] = (0.05, 0.15, 0.3, 1.0),
    require_top1: bool = True,
) -> list[dict[str, float]]:
    """The class balance (and the mean exit layer) at every ``(kl_max, margin_delta)`` of the grid."""
    rows = []
    for kl_max in kl_grid:
        for delta in margin_grid:
            th = OracleThresholds(float(kl_max), float(delta), require_top1)
            labels = oracle_labels(stats, boundaries, th)
            rows.append(
                {"kl_max": th.kl_max, "margin_delta": th.margin_delta, **balance(labels)}
                | {"mean_exit_layer": float(exit_layers(stats, th).mean())}
            )
    return rows
