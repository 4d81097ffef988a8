"""`rotq`: random rotation + per-coordinate Lloyd-Max quantization (TurboQuant-style).

Each row ``x`` (the last axis, ``d`` values) is sent as its norm in fp16 and ``d``
indices of ``b`` bits. The receiver rebuilds the same rotation from the seed in the
packet (never the matrix):

    u = R x / |x| * sqrt(d)          # coordinates of a random rotation of the unit vector
    i_k = cell of alpha * u_k        # Lloyd-Max boundaries for the law of u_k, b bits
    x^ = g * R^T c[i] / sqrt(d)      # c = Lloyd-Max centroids

After a uniformly random rotation every coordinate of ``u`` follows the same law,
whatever ``x`` was: density proportional to ``(1 - t^2/d)^((d-3)/2)`` on
``|t| < sqrt(d)`` (close to N(0, 1) for large d). The quantizer is optimal for that
law, so no per-vector calibration is needed. ``g`` is the gain that minimizes the
squared error given the indices (``<x, v> / |v|^2`` for ``v = R^T c[i] / sqrt(d)``);
it is close to ``|x|`` and costs the same 16 bits. Because the gain is refitted, the encoder
picks per row the scale ``alpha`` (near 1) whose cells give the smallest error (`best_cells`).

Rotations (``rotation`` parameter): ``dense`` is a Haar-random orthogonal matrix
(QR of a seeded Gaussian matrix, signs fixed), ``hadamard`` is a Walsh-Hadamard
matrix times seeded random signs (needs a power-of-two ``d``; exactly reproducible
anywhere), ``auto`` picks hadamard for powers of two and dense otherwise.

Bits per row: ``16 + d * b``. The fp16 gains of all rows come first, then the
indices packed at ``b`` bits (see `bitpack`).
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_protocols.codecs.base import Codec, as_float_array, check_shape
from lpca_protocols.codecs.bitpack import pack, unpack
from lpca_protocols.codecs.errors import CodecError

ROTATIONS = ("auto", "dense", "hadamard")
MAX_DIM = 8192
_PARAMS = struct.Struct("<BBQ")  # bits, rotation, seed
_GRID = 1 << 15
#: Scales the encoder tries per row (1 first), then the refinement steps around each row's best.
_ALPHAS = (1.0, 0.88, 0.94, 1.06, 1.12)
_REFINE = (0.03, 0.015)


@functools.lru_cache(maxsize=64)
def lloyd_max(d: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [2^b], inner boundaries [2^b - 1]) of the Lloyd-Max quantizer for one coordinate
    of ``sqrt(d)`` times a uniformly random unit vector in R^d (float64, symmetric, increasing)."""
    lim = min(math.sqrt(d), 12.0)
    t = (np.arange(_GRID) + 0.5) / _GRID * 2 * lim - lim  # cell midpoints avoid the d=2 poles
    if d >= 3:
        logf = (d - 3) / 2 * np.log1p(-(t * t) / d)
    else:
        logf = -0.5 * np.log1p(-(t * t) / d)
    f = np.exp(logf - logf.max())
    cf, ctf = np.concatenate([[0], np.cumsum(f)]), np.concatenate([[0], np.cumsum(t * f)])
    k = 1 << b
    # Start from the high-rate optimum (point density ~ f^(1/3)), then alternate the centroid and
    # midpoint conditions until they agree.
    g = np.cumsum(np.cbrt(f))
    c = t[np.searchsorted(g / g[-1], (np.arange(k) + 0.5) / k).clip(0, _GRID - 1)]
    for _ in range(2000):
        edges = np.searchsorted(t, (c[1:] + c[:-1]) / 2)
        lo, hi = np.concatenate([[0], edges]), np.concatenate([edges, [_GRID]])
        mass = cf[hi] - cf[lo]
        new = np.where(mass > 0, (ctf[hi] - ctf[lo]) / np.maximum(mass, 1e-300), c)
        new = (new - new[::-1]) / 2  # keep it exactly symmetric
        if np.abs(new - c).max() < 1e-12:
            c = new
            break
        c = new
    return c, (c[1:] + c[:-1]) / 2


def best_cells(u: np.ndarray, c: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per row of `u`, the quantizer cells of ``alpha * u`` for the ``alpha`` that maximizes the
    cosine between ``u`` and ``c[cells]``.

    The decoder rescales every row by its least-squares gain, so the relative error of a row is
    ``1 - cos^2(u, c[cells])`` whatever ``alpha`` was: the encoder may pick it freely, at no cost in
    bits, and the decoder is unchanged. A row's 576 coordinates are one sample of the rotated law,
    and the best scale for that sample is seldom exactly 1 (on SmolLM2 states it spans about
    0.75..1.27 at 4 bits). A coarse grid, then two refinements around each row's best, reaches the
    accuracy of a 41-point grid.
    """
    scales = np.array(_ALPHAS, np.float32)[:, None]  # [k, 1]: the same grid for every row
    cells, best, alpha = _trial(u, c, edges, scales)
    for step in _REFINE:
        around = np.stack([alpha - step, alpha + step])  # [2, n]: each row's own neighbours
        i, score, a = _trial(u, c, edges, around)
        win = score > best  # strict: ties keep the earlier choice (alpha = 1 comes first of all)
        np.copyto(cells, i, where=win[:, None])
        np.copyto(best, score, where=win)
        np.copyto(alpha, a, where=win)
    return cells


def _trial(
    u: np.ndarray, c: np.ndarray, edges: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells, score ``cos^2 * d`` and scale of the best of the ``k`` candidate scales per row
    (`scales` is ``[k, 1]`` or ``[k, n]``); all candidates in one batch of numpy calls."""
    i = np.searchsorted(edges, u[None] * scales[..., None])  # [k, n, d]
    v = c[i]
    uv = np.einsum("knd,nd->kn", v, u)
    score = uv * uv / np.maximum(np.einsum("knd,knd->kn", v, v), 1e-30)
    k = score.argmax(axis=0)  # the first best: ties go to the earlier candidate
    rows = np.arange(len(u))
    return i[k, rows], score[k, rows], np.broadcast_to(scales, score.shape)[k, rows]


#: Rotation matrices kept in memory, in bytes (least recently used first out). A matrix larger
#: than this is rebuilt on every use; receivers admit only the rotations they will cache.
ROTATION_CACHE_BYTES = 128 << 20
_ROTATIONS: OrderedDict[tuple[int, int, str], np.ndarray] = OrderedDict()
_ROTATIONS_LOCK = threading.Lock()


def rotation_matrix(d: int, seed: int, kind: str) -> np.ndarray:
    """The ``[d, d]`` float32 orthogonal matrix R of a `rotq` codec (rows are output coordinates).

    Cached by (d, seed, kind) within `ROTATION_CACHE_BYTES` in all (read-only arrays)."""
    key = (d, seed, kind)
    with _ROTATIONS_LOCK:
        m = _ROTATIONS.get(key)
        if m is not None:
            _ROTATIONS.move_to_end(key)
            return m
    m = _build_rotation(d, seed, kind)
    m.flags.writeable = False
    if m.nbytes <= ROTATION_CACHE_BYTES:
        with _ROTATIONS_LOCK:
            _ROTATIONS[key] = m
            while sum(a.nbytes for a in _ROTATIONS.values()) > ROTATION_CACHE_BYTES:
                _ROTATIONS.popitem(last=False)
    return m


def rotation_cached(d: int, seed: int, kind: str) -> bool:
    """Whether `rotation_matrix(d, seed, kind)` would come from the cache (no QR)."""
    with _ROTATIONS_LOCK:
        return (d, seed, kind) in _ROTATIONS


def _build_rotation(d: int, seed: int, kind: str) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(seed))
    if kind == "hadamard":
        if d & (d - 1):
            raise CodecError(f"the hadamard rotation needs a power-of-two dimension, got {d}")
        h = np.ones((1, 1))
        while len(h) < d:
            h = np.block([[h, h], [h, -h]])
        signs = rng.integers(0, 2, d) * 2 - 1
        return (h * signs[None, :] / math.sqrt(d)).astype(np.float32)
    g = rng.standard_normal((d, d))
    q, r = np.linalg.qr(g)
    q *= np.sign(np.diag(r))[None, :]
    return q.astype(np.float32)


class RotQ(Codec):
    """Seeded random rotation + Lloyd-Max at `bits` in 1..8 per coordinate, fp16 gain per row."""

    codec_id = 0x0020
    name = "rotq"

    def __init__(self, bits: int = 3, seed: int = 0, rotation: str = "auto", search: int = 0):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise CodecError(f"rotq bits must be an int in 1..8, got {bits!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
            raise CodecError(f"rotq seed must be an int in [0, 2**64), got {seed!r}")
        if rotation not in ROTATIONS:
            raise CodecError(f"rotq rotation must be one of {ROTATIONS}, got {rotation!r}")
        if search not in (0, 1):
            raise CodecError(f"rotq search must be 0 (fast) or 1 (per-row scale search), got {search!r}")
        self.b, self.seed, self.rotation = bits, seed, rotation
        #: Encoder-only: search the per-row scale (`best_cells`), ~4-10x slower, ~0.04 bit closer to
        #: the bound at 4 bits. Decoding and the packet are the same either way, so it is not a param.
        self.search = bool(search)

    @property
    def spec(self) -> str:
        return f"rotq:bits={self.b},seed={self.seed},rotation={self.rotation}"

    def params(self) -> bytes:
        return _PARAMS.pack(self.b, ROTATIONS.index(self.rotation), self.seed)

    @classmethod
    def from_params(cls, params: bytes, **context: Any) -> RotQ:
        if len(params) != _PARAMS.size:
            raise CodecError(f"rotq params are {_PARAMS.size} bytes, got {len(params)}")
        b, rot, seed = _PARAMS.unpack(params)
        if rot >= len(ROTATIONS):
            raise CodecError(f"rotq rotation code must be < {len(ROTATIONS)}, got {rot}")
        return cls(b, seed, ROTATIONS[rot])

    def matrix(self, d: int) -> np.ndarray:
        kind = self.rotation
        if kind == "auto":
            kind = "dense" if d & (d - 1) else "hadamard"
        return rotation_matrix(d, self.seed, kind)

    def _rows(self, shape: Sequence[int]) -> tuple[int, int]:
        shp = check_shape(shape)
        if not shp or not 2 <= shp[-1] <= MAX_DIM:
            raise CodecError(f"rotq quantizes rows of 2..{MAX_DIM} values along the last axis, got {shp}")
        d = shp[-1]
        return math.prod(shp) // d, d

    def bits(self, shape: Sequence[int]) -> int:
        n, d = self._rows(shape)
        return n * (16 + d * self.b)

    def encode(self, array: Any) -> bytes:
        a = as_float_array(array, self.name)
        n, d = self._rows(a.shape)
        x = a.reshape(n, d)
        y = x @ self.matrix(d).T
        norm = np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64)).astype(np.float32)
        c, edges = lloyd_max(d, self.b)
        u = y * (math.sqrt(d) / np.where(norm > 0, norm, 1))[:, None]
        if self.search:
            idx = best_cells(u, c.astype(np.float32), edges.astype(np.float32))
        else:
            idx = np.searchsorted(edges.astype(np.float32), u)
        # The gain minimizing |x - g v|^2 for v = R^T c[idx] / sqrt(d), R orthogonal: sqrt(d) <Rx, c> / |c|^2.
        cv = c.astype(np.float32)[idx]
        gain = math.sqrt(d) * np.einsum("ij,ij->i", y, cv) / np.maximum(np.einsum("ij,ij->i", cv, cv), 1e-30)
        if n and not np.abs(gain).max() <= 65504:
            raise CodecError(f"rotq stores row norms in fp16: a row norm of {norm.max():g} exceeds 65504")
        return gain.astype("<f2").tobytes() + pack(idx, self.b)

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        n, d = self._rows(shp)
        gain = np.frombuffer(data, "<f2", count=n).astype(np.float32)
        idx = unpack(memoryview(data)[2 * n :], self.b, n * d)
        c, _ = lloyd_max(d, self.b)
        v = c.astype(np.float32)[idx].reshape(n, d) @ self.matrix(d)
        v *= (gain / math.sqrt(d))[:, None]
        return v.reshape(shp)
