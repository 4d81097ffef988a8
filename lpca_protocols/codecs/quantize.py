"""Numpy inference of the learned quantizers (VQ nearest, greedy residual VQ, FSQ), written once.

Both learned codecs use these kernels: the tensor codecs of `codecs.learned` (float32, the
memory-light ``|c|^2 - 2 x.c`` form of the nearest search, FSQ levels clipped) and the learned
packet codec (`packet_codec`: float64, direct squared distances, no clip). Each caller passes
its own `dtype` and `form`, so the bits each one produces stay what they were: the two forms
can pick different entries on near-ties, and float32 and float64 round FSQ bounds differently.

Tables may carry leading dimensions (one codebook per packet slot: ``[k, K, g]``); the
leading dimensions of the table align with the trailing ones of the rows' batch shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Form = Literal["expanded", "direct"]


def nearest(x: np.ndarray, table: np.ndarray, *, form: Form, dtype: type = np.float32) -> np.ndarray:
    """Index of the nearest entry of `table` for each row of `x` (squared euclidean).

    ``form="expanded"``: `x` ``[m, g]``, `table` ``[K, g]``; argmin of ``|c|^2 - 2 x.c``, which
    never materializes ``[m, K, g]``. ``form="direct"``: `x` ``[..., g]``, `table` ``[..., K, g]``
    broadcast against it; argmin of ``sum((x - c)^2)``.
    """
    x = np.asarray(x, dtype)
    table = np.asarray(table, dtype)
    if form == "direct":
        return ((x[..., None, :] - table) ** 2).sum(-1).argmin(-1)
    scores = x @ table.T
    scores *= -2
    scores += np.einsum("ij,ij->i", table, table)[None, :]
    return scores.argmin(axis=1)


def lookup(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Chosen entries: `table` ``[*lead, K, g]``, `idx` ``[..., *lead]`` -> ``[..., *lead, g]``."""
    lead = table.shape[:-2]
    grids = [np.arange(s).reshape((s,) + (1,) * (len(lead) - 1 - i)) for i, s in enumerate(lead)]
    return table[(*grids, idx)]


def residual(
    x: np.ndarray, stages: Sequence[np.ndarray], *, form: Form, dtype: type = np.float32
) -> np.ndarray:
    """Greedy residual coding (as ResidualVQ trains it): rows `x` ``[..., g]`` -> indices ``[..., S]``.

    Stage s codes what stages 0..s-1 left over, against ``stages[s]`` (``[..., K, g]``, see `nearest`).
    """
    r = np.array(x, dtype)  # a copy: the residual is updated in place
    out = np.empty((*r.shape[:-1], len(stages)), np.int64)
    for s, table in enumerate(stages):  # stages are sequential by definition; each is vectorized
        out[..., s] = nearest(r, table, form=form, dtype=dtype)
        r -= lookup(table, out[..., s])
    return out


def residual_lookup(tables: np.ndarray, idx: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Sum over stages of the chosen entries, accumulated in `dtype`: `tables` ``[*lead, K, g]``
    whose last lead axis is the stage, `idx` ``[..., *lead]`` -> ``[..., *lead[:-1], g]``."""
    return lookup(tables, idx).sum(-2, dtype=dtype)


def fsq_constants(
    levels: Sequence[int], dtype: type
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(half_l, offset, shift, basis) of vector-quantize-pytorch's FSQ bound, in `dtype` (basis int64).

    half_l and offset are computed in float64 and cast; shift = arctanh(offset / half_l) in `dtype`.
    """
    lv = np.asarray(levels, np.int64)
    half_l = ((lv - 1) * (1 + 1e-3) / 2).astype(dtype)
    offset = np.where(lv % 2 == 0, 0.5, 0.0).astype(dtype)
    shift = np.arctanh(offset / half_l)
    basis = np.cumprod(np.concatenate([[1], lv[:-1]])).astype(np.int64)
    return half_l, offset, shift, basis


def fsq_indices(z: np.ndarray, levels: Sequence[int], *, clip: bool) -> np.ndarray:
    """Projected values `z` ``[..., L]`` -> one symbol each (mixed radix over the levels).

    tanh squashing, then rounding to the level grid, in the dtype of `z`; `clip` bounds each
    level to 0..L-1 (the bound already keeps it there up to rounding).
    """
    half_l, offset, shift, basis = fsq_constants(levels, z.dtype.type)
    lv = np.asarray(levels, np.int64)
    level = np.rint(np.tanh(z + shift) * half_l - offset).astype(np.int64)
    level += lv // 2  # 0 .. L-1 per dimension
    if clip:
        level = np.clip(level, 0, lv - 1)
    return (level * basis).sum(-1)


def fsq_codes(idx: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """Symbols ``[...]`` -> FSQ codes ``[..., L]`` in [-1, 1] (float64): the grid point each names."""
    lv = np.asarray(levels, np.int64)
    half = lv // 2
    basis = np.cumprod(np.concatenate([[1], lv[:-1]])).astype(np.int64)
    return ((np.asarray(idx, np.int64)[..., None] // basis) % lv - half) / half
