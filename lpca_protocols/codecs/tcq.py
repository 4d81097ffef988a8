"""`rotq-tcq`: random rotation + trellis-coded quantization (TCQ) at a fixed rate.

The same packet shape and rotation as `rotq` (fp16 gain per row, then ``d`` symbols of ``b``
bits), but the ``d`` rotated coordinates of a row are quantized jointly by an 8-state trellis
(Marcellin & Fischer, 1990; the trellis of JPEG 2000 Part 2) instead of one Lloyd-Max cell each:

- The reconstruction alphabet has ``2^(b+1)`` levels (twice a scalar quantizer's), dealt
  round-robin into four subsets ``D0, D1, D2, D3`` of ``2^(b-1)`` levels each.
- The trellis state (3 bits) allows two branches; each branch draws from one subset and moves
  to state ``(2 * state + branch) mod 8``. Even states use ``D0``/``D2``, odd states ``D1``/``D3``.
- A symbol is ``branch * 2^(b-1) + level within the subset``: still ``b`` bits per coordinate.
  The encoder runs the Viterbi algorithm over the row for the path of least squared error; the
  decoder replays the branches from state 0 (no search, fully vectorized).

On Gaussian rows of 576 at 2-4 bits this is 0.23-0.26 bit closer to the rate-distortion
bound than the best fixed-rate scalar quantizer (rotq with its scale search), at the same bit
count. The alphabet is trained once per ``(d, b)`` (Lloyd iterations of the TCQ encoder on
seeded samples of the rotated law, cached), so sender and receiver derive the same levels from
``d`` and ``b`` alone.

Compiled fast path: with numba installed (the ``fast`` extra), the Viterbi search, the replay
and the bit packing run compiled kernels (`_tcq_jit`) that give the numpy code's bytes, arrays
and errors exactly: ~60 us to encode one 576-float row instead of ~6-12 ms (the 576x576
rotation is ~18 us of it), and the first use of a ``(d, b)`` trains its alphabet in ~0.2 s
instead of ~2 s. numba loads on the first encode, decode or `viterbi` call, not at import
(~1 s, or several seconds the very first time while the kernels compile and are cached under
``__pycache__``). Set ``LPCA_NO_JIT=1`` to always use numpy; ``RotTCQ(jit=False)`` does so for
one codec object. Without numba, encoding is a Python loop over the ``d`` coordinates
(vectorized over rows and states).

Bits per row: ``16 + d * b``, exactly as `rotq`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_protocols.codecs._kernels import load_kernels
from lpca_protocols.codecs.base import as_float_array
from lpca_protocols.codecs.bitpack import pack, unpack
from lpca_protocols.codecs.errors import CodecError
from lpca_protocols.codecs.rotq import RotQ, lloyd_max

STATES = 8
#: SUBSET[state, branch]: the subset a branch draws from; the next state is (2 * state + branch) % 8.
SUBSET = np.array([[0, 2], [1, 3], [2, 0], [3, 1], [2, 0], [3, 1], [0, 2], [1, 3]], np.int64)
_NEXT = np.array([[(2 * s + br) % STATES for br in (0, 1)] for s in range(STATES)], np.int64)
#: For each next state: its two predecessor states, and the subset each of them used to reach it.
_PRED = np.array([[ns >> 1, (ns >> 1) + 4] for ns in range(STATES)], np.int64)
_PRED_SUB = np.array([[SUBSET[p, ns & 1] for p in _PRED[ns]] for ns in range(STATES)], np.int64)
_TRAIN_SAMPLES = 1 << 17
_TRAIN_ITERS = 12


@functools.cache
def _jit() -> Any:
    """The compiled kernels' module, or None: numba missing, ``LPCA_NO_JIT`` set, or a failed load."""
    return load_kernels("_tcq_jit", "rotq-tcq")


def jit_enabled() -> bool:
    """Whether rotq-tcq runs the compiled kernels (loads numba on the first call)."""
    return _jit() is not None


def _nearest(x: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into sorted `levels` of the nearest level to each value of `x`, and the squared error."""
    mid = (levels[1:] + levels[:-1]) / 2
    j = np.searchsorted(mid, x)
    return j, (x - levels[j]) ** 2


def viterbi(u: np.ndarray, alphabet: np.ndarray, jit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The least-squared-error trellis path for each row of `u` ``[n, d]``: (branches, levels) as
    ``[n, d]`` int arrays (level = index within the branch's subset). With `jit` and numba, the
    compiled kernel computes the same arrays."""
    k = jit and _jit()
    size = alphabet.size
    if k and u.ndim == 2 and u.dtype == alphabet.dtype == np.float64 and size >= 4 and not size & (size - 1):
        branches = np.empty(u.shape, np.int64)
        levels = np.empty(u.shape, np.int64)
        k.viterbi(np.ascontiguousarray(u), np.ascontiguousarray(alphabet), branches, levels)
        return branches, levels
    n, d = u.shape
    # nearest level and its squared error in each subset, for every coordinate at once: [4, n, d]
    near = [_nearest(u, alphabet[j::4]) for j in range(4)]
    best_level = np.stack([j for j, _ in near])
    err = np.stack([e for _, e in near])
    # the error of reaching each next state from its first / second predecessor: [d, n, 8]
    e0 = np.ascontiguousarray(err[_PRED_SUB[:, 0]].transpose(2, 1, 0))
    e1 = np.ascontiguousarray(err[_PRED_SUB[:, 1]].transpose(2, 1, 0))
    cost = np.full((n, STATES), np.inf, np.float64)
    cost[:, 0] = 0.0
    back = np.empty((d, n, STATES), bool)  # True: the path came from the second predecessor
    p0, p1 = _PRED[:, 0], _PRED[:, 1]
    for t in range(d):
        c0 = cost[:, p0]
        c0 += e0[t]
        c1 = cost[:, p1]
        c1 += e1[t]
        np.less(c1, c0, out=back[t])
        cost = np.minimum(c0, c1)
    state = cost.argmin(axis=1)
    rows = np.arange(n)
    branches = np.empty((n, d), np.int64)
    levels = np.empty((n, d), np.int64)
    for t in range(d - 1, -1, -1):
        prev = _PRED[state, back[t, rows, state].astype(np.int64)]
        branches[:, t] = state & 1
        levels[:, t] = best_level[SUBSET[prev, state & 1], rows, t]
        state = prev
    return branches, levels


def replay(branches: np.ndarray, levels: np.ndarray, alphabet: np.ndarray) -> np.ndarray:
    """The reconstruction of a trellis path: states from the branch bits, then one table lookup."""
    return alphabet[4 * levels + SUBSET[_states(branches), branches]]


@functools.lru_cache(maxsize=32)
def tcq_alphabet(d: int, b: int) -> np.ndarray:
    """The ``2^(b+1)`` sorted reconstruction levels for rows of ``d`` rotated coordinates at ``b`` bits:
    Lloyd-Max for ``2^(b+1)`` levels of the rotated law, refined by Lloyd iterations of the TCQ
    encoder on seeded samples of that law (deterministic, float64)."""
    alphabet, _ = lloyd_max(d, b + 1)
    rows = max(2, _TRAIN_SAMPLES // d)
    g = np.random.Generator(np.random.PCG64(0x7C9)).standard_normal((rows, d))
    u = g / np.linalg.norm(g, axis=1, keepdims=True) * math.sqrt(d)  # exactly the rotated law
    for _ in range(_TRAIN_ITERS):
        br, lv = viterbi(u, alphabet)
        flat = (4 * lv + SUBSET[_states(br), br]).ravel()
        sums = np.bincount(flat, u.ravel(), minlength=alphabet.size)
        counts = np.bincount(flat, minlength=alphabet.size)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), alphabet)
        new = (new - new[::-1]) / 2  # keep it symmetric
        if not np.all(np.diff(new) > 0):
            break
        alphabet = new
    return alphabet


def _states(branches: np.ndarray) -> np.ndarray:
    """The state before each step: the last three branch bits (state 0 before the first)."""
    n, d = branches.shape
    state = np.zeros((n, d), np.int64)
    for lag, weight in ((1, 1), (2, 2), (3, 4)):
        state[:, lag:] += weight * branches[:, : d - lag]
    return state & (STATES - 1)


class RotTCQ(RotQ):
    """Seeded random rotation + 8-state trellis-coded quantization at `bits` in 1..8, fp16 gain per row."""

    codec_id = 0x0021
    name = "rotq-tcq"

    def __init__(self, bits: int = 3, seed: int = 0, rotation: str = "auto", jit: bool = True):
        super().__init__(bits, seed, rotation)
        #: Use the compiled kernels when they are available (a local choice: not a parameter on the wire).
        self.jit = bool(jit)

    @property
    def spec(self) -> str:
        return f"rotq-tcq:bits={self.b},seed={self.seed},rotation={self.rotation}"

    def encode(self, array: Any) -> bytes:
        a = as_float_array(array, self.name)
        n, d = self._rows(a.shape)
        y = (a.reshape(n, d) @ self.matrix(d).T).astype(np.float64)
        norm = np.sqrt(np.einsum("ij,ij->i", y, y))
        u = y * (math.sqrt(d) / np.where(norm > 0, norm, 1))[:, None]
        alphabet = tcq_alphabet(d, self.b)
        k = self.jit and _jit()
        if k:
            v = np.empty((n, d), np.float64)
            packed = np.empty(-(-n * d * self.b // 8), np.uint8)
            k.encode(u, alphabet, self.b, v, packed)
        else:
            branches, levels = viterbi(u, alphabet, jit=False)
            v = replay(branches, levels, alphabet)
        # least-squares gain of the decoded direction, as rotq: sqrt(d) <Rx, v> / |v|^2
        gain = math.sqrt(d) * np.einsum("ij,ij->i", y, v) / np.maximum(np.einsum("ij,ij->i", v, v), 1e-30)
        if n and not np.abs(gain).max() <= 65504:
            raise CodecError(f"rotq-tcq stores row gains in fp16: a row norm of {norm.max():g} exceeds 65504")
        if k:
            return gain.astype("<f2").tobytes() + packed.tobytes()
        sym = (branches << (self.b - 1)) | levels
        return gain.astype("<f2").tobytes() + pack(sym, self.b)

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        n, d = self._rows(shp)
        gain = np.frombuffer(data, "<f2", count=n).astype(np.float32)
        k = self.jit and _jit()
        if k:
            w = np.empty((n, d), np.float32)
            k.decode(np.frombuffer(data, np.uint8, offset=2 * n), tcq_alphabet(d, self.b), self.b, w)
        else:
            sym = unpack(memoryview(data)[2 * n :], self.b, n * d).reshape(n, d).astype(np.int64)
            branches, levels = sym >> (self.b - 1), sym & ((1 << (self.b - 1)) - 1)
            w = replay(branches, levels, tcq_alphabet(d, self.b)).astype(np.float32)
        v = w @ self.matrix(d)
        v *= (gain / math.sqrt(d))[:, None]
        return v.reshape(shp)
