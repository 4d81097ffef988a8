"""Compiled (numba) kernels for `rotq-tcq`, identical in output to the numpy code in `tcq`.

Imported lazily by `tcq` on the first encode, decode or Viterbi search, never at package
import (numba itself takes ~0.4 s to import). The kernels are compiled for fixed signatures
when this module loads: a few seconds the first time, after which numba's on-disk cache (in
``__pycache__``, or numba's user cache directory when that folder is read-only) loads in well
under a second. With no writable place at all they compile in memory in every process.

- `viterbi` fills the branches and levels of the least-squared-error trellis path of each row.
- `encode` runs the same search, then writes the path's reconstruction (`tcq.replay`) and its
  symbols packed at ``b`` bits (`bitpack.pack`'s layout). The caller computes the gains with
  numpy, so their float sums and the fp16 check are the numpy code's.
- `decode` unpacks the symbols and replays them into float32 reconstructions.

Everything is the numpy code's arithmetic, operation by operation in float64 (no fastmath, so no
reordering or fused multiply-adds): the nearest level of a subset is numpy's ``searchsorted`` on
the same midpoints, ties in the trellis go to the first predecessor (``c1 < c0`` is strict), the
minimum propagates NaN as ``np.minimum`` does, and the final state is ``argmin``'s (the first
minimum, or the first NaN).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

STATES = 8
#: SUBSET[state, branch], as in `tcq`.
SUBSET = np.array([[0, 2], [1, 3], [2, 0], [3, 1], [2, 0], [3, 1], [0, 2], [1, 3]], np.int64)
#: For each next state, the subset its first / second predecessor used to reach it (`tcq._PRED_SUB`).
PRED_SUB = np.array([[SUBSET[p, ns & 1] for p in (ns >> 1, (ns >> 1) + 4)] for ns in range(STATES)], np.int64)
# `_path` spells these out, one line per next state
assert PRED_SUB.tolist() == [[0, 2], [2, 0], [1, 3], [3, 1], [2, 0], [0, 2], [3, 1], [1, 3]]

_F64_1, _F64_2 = types.Array(types.float64, 1, "C"), types.Array(types.float64, 2, "C")
_F64_1_RO, _F64_2_RO = _F64_1.copy(readonly=True), _F64_2.copy(readonly=True)
_I64_2 = types.Array(types.int64, 2, "C")
_U8, _U8_RO = types.Array(types.uint8, 1, "C"), types.Array(types.uint8, 1, "C", readonly=True)
_F32_2 = types.Array(types.float32, 2, "C")
_SIG_VITERBI = [types.void(_F64_2_RO, _F64_1_RO, _I64_2, _I64_2)]
_SIG_ENC = [types.void(_F64_2_RO, _F64_1_RO, types.int64, _F64_2, _U8)]
_SIG_DEC = [types.void(_U8_RO, _F64_1_RO, types.int64, _F32_2)]


def _njit(sig: list):
    """``njit`` with an on-disk cache where numba finds a writable place, else without one."""

    def wrap(fn):
        try:
            return njit(sig, cache=True, nogil=True)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(sig, nogil=True)(fn)

    return wrap


@njit(nogil=True)
def _subsets(alphabet):
    """The four subsets ``alphabet[j::4]`` as rows, and the midpoints between their neighbours."""
    m = alphabet.size // 4
    sub = np.empty((4, m), np.float64)
    mids = np.empty((4, max(m - 1, 0)), np.float64)
    for j in range(4):
        for i in range(m):
            sub[j, i] = alphabet[4 * i + j]
        for i in range(m - 1):
            mids[j, i] = (sub[j, i + 1] + sub[j, i]) / 2
    return sub, mids


@njit(nogil=True, inline="always")
def _nearest(x, sub, mids, m):
    """numpy's ``searchsorted(mids, x)`` (side left: the number of midpoints below `x`, NaN after all of
    them) by a branch-free search of the ``m - 1`` sorted midpoints (``m`` a power of two), and the
    squared error of that level of `sub`."""
    lo = 0
    step = m >> 1
    while step:
        lo += step * (mids[lo + step - 1] < x)
        step >>= 1
    if x != x:
        lo = m - 1
    e = x - sub[lo]
    return e * e, lo


@njit(nogil=True, inline="always")
def _pick(c0, c1):
    """``np.minimum(c0, c1)`` (NaN from either side) and whether the second won (strictly smaller)."""
    take = c1 < c0
    c = c1 if take else c0
    return (c1 if c1 != c1 else c), np.int64(take)


@njit(nogil=True)
def _path(u, sub, mids, best, back, br, lv):
    """The Viterbi path of the row `u` into `br` and `lv`. Scratch: `best` [4, d], the nearest level of
    each subset; `back` [d], bit ``ns`` set where next state ``ns`` came from its second predecessor."""
    d = u.size
    m = sub.shape[1]
    inf = np.inf
    c0, c1, c2, c3, c4, c5, c6, c7 = 0.0, inf, inf, inf, inf, inf, inf, inf
    s0, s1, s2, s3 = sub[0], sub[1], sub[2], sub[3]
    m0, m1, m2, m3 = mids[0], mids[1], mids[2], mids[3]
    b0, b1, b2, b3 = best[0], best[1], best[2], best[3]
    for t in range(d):
        x = u[t]
        e0, b0[t] = _nearest(x, s0, m0, m)
        e1, b1[t] = _nearest(x, s1, m1, m)
        e2, b2[t] = _nearest(x, s2, m2, m)
        e3, b3[t] = _nearest(x, s3, m3, m)
        # next state ns from its predecessors ns >> 1 and (ns >> 1) + 4, through the subsets PRED_SUB[ns]
        n0, k0 = _pick(c0 + e0, c4 + e2)
        n1, k1 = _pick(c0 + e2, c4 + e0)
        n2, k2 = _pick(c1 + e1, c5 + e3)
        n3, k3 = _pick(c1 + e3, c5 + e1)
        n4, k4 = _pick(c2 + e2, c6 + e0)
        n5, k5 = _pick(c2 + e0, c6 + e2)
        n6, k6 = _pick(c3 + e3, c7 + e1)
        n7, k7 = _pick(c3 + e1, c7 + e3)
        back[t] = k0 | (k1 << 1) | (k2 << 2) | (k3 << 3) | (k4 << 4) | (k5 << 5) | (k6 << 6) | (k7 << 7)
        c0, c1, c2, c3, c4, c5, c6, c7 = n0, n1, n2, n3, n4, n5, n6, n7
    cost = np.array([c0, c1, c2, c3, c4, c5, c6, c7])
    state = 0  # argmin: the first minimum, or the first NaN
    low = cost[0]
    if low == low:
        for s in range(1, STATES):
            c = cost[s]
            if c != c:
                state = s
                break
            if c < low:
                low = c
                state = s
    for t in range(d - 1, -1, -1):
        prev = (state >> 1) + 4 * ((np.int64(back[t]) >> state) & 1)
        b = state & 1
        br[t] = b
        lv[t] = best[SUBSET[prev, b], t]
        state = prev


def _viterbi(u, alphabet, branches, levels):
    n, d = u.shape
    sub, mids = _subsets(alphabet)
    best = np.empty((4, d), np.int64)
    back = np.empty(d, np.uint8)
    for r in range(n):
        _path(u[r], sub, mids, best, back, branches[r], levels[r])


def _encode(u, alphabet, bits, v, packed):
    n, d = u.shape
    sub, mids = _subsets(alphabet)
    best = np.empty((4, d), np.int64)
    back = np.empty(d, np.uint8)
    br = np.empty(d, np.int64)
    lv = np.empty(d, np.int64)
    acc = np.uint64(0)  # the bit stream not yet written, least significant bit first
    held = 0
    k = 0
    for r in range(n):
        _path(u[r], sub, mids, best, back, br, lv)
        state = 0
        vr = v[r]
        for t in range(d):
            b = br[t]
            vr[t] = alphabet[4 * lv[t] + SUBSET[state, b]]  # tcq.replay
            state = (2 * state + b) & (STATES - 1)
            acc |= np.uint64((b << (bits - 1)) | lv[t]) << np.uint64(held)
            held += bits
            while held >= 8:
                packed[k] = np.uint8(acc & np.uint64(0xFF))
                acc >>= np.uint64(8)
                held -= 8
                k += 1
    if held:
        packed[k] = np.uint8(acc & np.uint64(0xFF))


def _decode(raw, alphabet, bits, out):
    n, d = out.shape
    mask = np.uint64((1 << (bits - 1)) - 1)
    acc = np.uint64(0)
    held = 0
    k = 0
    for r in range(n):
        state = 0
        o = out[r]
        for t in range(d):
            while held < bits:
                acc |= np.uint64(raw[k]) << np.uint64(held)
                held += 8
                k += 1
            sym = acc & np.uint64((1 << bits) - 1)
            acc >>= np.uint64(bits)
            held -= bits
            b = np.int64(sym >> np.uint64(bits - 1))
            o[t] = np.float32(alphabet[4 * np.int64(sym & mask) + SUBSET[state, b]])
            state = (2 * state + b) & (STATES - 1)


viterbi = _njit(_SIG_VITERBI)(_viterbi)
encode = _njit(_SIG_ENC)(_encode)
decode = _njit(_SIG_DEC)(_decode)
