"""q8_0 and q4_0 in ggml's exact block layouts, bit-compatible with llama.cpp / GGUF.

The array is flattened (row-major) and cut into blocks of 32 values; a last,
partial block is zero-padded (ggml itself needs rows that are multiples of 32,
and then the blocks coincide with ggml's row by row).

- q8_0 block, 34 bytes: fp16 scale ``d = amax / 127``, then 32 int8 ``q = round(x / d)``
  (round half away from zero, like C's ``roundf``). ``x ~= d * q``.
- q4_0 block, 18 bytes: fp16 scale ``d = max / -8`` where ``max`` is the signed value of
  largest magnitude, then 16 bytes of nibbles ``q = min(15, trunc(x / d + 8.5))``: byte
  ``j`` holds value ``j`` in its low nibble and value ``j + 16`` in its high nibble.
  ``x ~= d * (q - 8)``.

The scale is computed and applied in float32 and only stored as fp16, as ggml does.

Compiled fast path: with numba installed (the ``fast`` extra), encode and decode run
compiled kernels (`_ggml_jit`) that give the same bytes and the same arrays as the numpy
code below, and the same `CodecError` for NaN, infinite or huge values. numba loads on the
first encode or decode, not at import: that call takes ~1 s (numba's import and its cached
kernels), or several seconds the very first time while the kernels compile and are cached
under ``__pycache__``. Time codecs after a warm-up call. Set ``LPCA_NO_JIT=1`` to always use
numpy; ``Q8_0(jit=False)`` and ``Q4_0(jit=False)`` do so for one codec object.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_protocols.codecs._kernels import load_kernels
from lpca_protocols.codecs.base import Codec, as_float_array, check_shape
from lpca_protocols.codecs.errors import CodecError

QK = 32
#: Values processed per step: keeps the float32 temporaries inside the L2 cache.
_CHUNK = 1 << 15
#: Bulk q8_0 works in bigger steps: its scratch buffers are reused, so only the call overhead scales.
_Q8_CHUNK = 1 << 16
F16_MAX = 65504.0
#: Smallest normal float32; scales below it (subnormal blocks) are treated as zero.
_TINY = np.finfo(np.float32).tiny

#: The largest float32 below 0.5. ``trunc(x + copysign(HALF_DOWN, x))`` equals C's ``roundf(x)`` for
#: every float32 with ``|x| < 128`` (checked exhaustively), and q8_0 values never exceed 127.
#: Adding a plain 0.5 would round 0.49999997 up to 1.
HALF_DOWN = np.nextafter(np.float32(0.5), np.float32(0))

_HALF_DOWN_BITS = HALF_DOWN.view(np.uint32)
_ABS, _SIGN = np.uint32(0x7FFFFFFF), np.uint32(0x80000000)
#: A 0-d array, not a numpy scalar: numpy's ufuncs take it with less per-call overhead.
_ABS_ARRAY = np.array(_ABS)
#: Bit pattern of 127 * 2^-126, the block maximum whose scale is exactly `_TINY`. Raising smaller
#: maxima to it is the same as raising their scales to `_TINY` (division rounds monotonically, and
#: such scales are 0 in fp16 either way), and folds that clamp into the max reduction.
_MIN_AMAX_BITS = np.uint32((np.float32(127) * _TINY).view(np.uint32))
#: Vectors up to this many blocks take the one-shot path (SmolLM2's 576 floats are 18 blocks).
_SMALL_BLOCKS = 64

Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_STARTS = np.arange(0, _Q8_CHUNK, QK)


@functools.cache
def _jit() -> Any:
    """The compiled kernels' module, or None: numba missing, ``LPCA_NO_JIT`` set, or a failed load."""
    return load_kernels("_ggml_jit", "ggml codecs")


def jit_enabled() -> bool:
    """Whether q8_0 and q4_0 run the compiled kernels (loads numba on the first call)."""
    return _jit() is not None


def _flat(array: Any, name: str) -> np.ndarray:
    a = as_float_array(array, name, finite=False).reshape(-1)
    pad = (-a.size) % QK
    if pad:
        a = np.concatenate([a, np.zeros(pad, np.float32)])
    return a


def _check_scales(scale_max: Any, name: str) -> None:
    # A block's max is NaN or inf exactly when the block holds one: one check per block, not per value.
    if not scale_max <= F16_MAX:
        raise CodecError(f"{name} cannot encode NaN, infinite or huge values (block scale {scale_max})")


def _q8_0_small(a: np.ndarray) -> bytes:
    """q8_0 of a few blocks: each step is one numpy call, since per-call overhead dominates here."""
    nb = a.size // QK
    # |x| as the float's bit pattern without its sign: for non-negative floats the integer order is
    # the float order (NaN sorts above inf and stays NaN), and integer max is much faster.
    u = (a.view(np.uint32) & _ABS_ARRAY).reshape(nb, QK)
    d = np.maximum.reduce(u, axis=1, initial=_MIN_AMAX_BITS).view(np.float32) / 127.0
    # A Python sum of a few scales is cheaper than a numpy reduction; it is <= F16_MAX only if every
    # scale is (they are >= 0, and NaN or inf poison the sum), else the exact check decides.
    if not sum(d.tolist()) <= F16_MAX:
        _check_scales(np.maximum.reduce(d), "q8_0")
    q = a.reshape(nb, QK) * np.reciprocal(d)[:, None]  # np.reciprocal is 1 / d, rounded identically
    q += np.copysign(HALF_DOWN, q)
    out = np.empty(nb, Q8_0_BLOCK)
    out["d"] = d
    out["qs"] = q  # the float -> int8 cast truncates toward zero: with HALF_DOWN, roundf
    return out.tobytes()


def _q8_0_bulk(a: np.ndarray) -> bytes:
    """q8_0 of a large array in L2-sized steps, all temporaries preallocated and reused."""
    nb = a.size // QK
    out = np.empty(nb, Q8_0_BLOCK)
    out_d, out_qs = out["d"], out["qs"]
    step = min(_Q8_CHUNK, a.size)
    au = a.view(np.uint32)
    bits_buf = np.empty(step, np.uint32)
    q_buf = np.empty(step, np.float32)
    amax_buf = np.empty(step // QK, np.uint32)
    for s in range(0, a.size, step):
        n = min(step, a.size - s)
        k, b = n // QK, s // QK
        u, q, amax = bits_buf[:n], q_buf[:n], amax_buf[:k]
        np.bitwise_and(au[s : s + n], _ABS, out=u)
        np.maximum.reduceat(u, _STARTS[:k], out=amax)
        np.maximum(amax, _MIN_AMAX_BITS, out=amax)
        d = amax.view(np.float32) / 127.0
        _check_scales(np.maximum.reduce(d), "q8_0")
        # One scale per value and a contiguous multiply: faster than broadcasting [k, 1] over rows of 32.
        np.multiply(a[s : s + n], np.reciprocal(d).repeat(QK), out=q)
        np.bitwise_and(q.view(np.uint32), _SIGN, out=u)
        u |= _HALF_DOWN_BITS
        q += u.view(np.float32)  # q + copysign(HALF_DOWN, q), 3x faster than np.copysign on bulk data
        out_d[b : b + k] = d
        out_qs[b : b + k] = q.reshape(k, QK)  # the float -> int8 cast truncates: with HALF_DOWN, roundf
    return out.tobytes()


class Q8_0(Codec):
    """ggml q8_0: 34 bytes per 32 values (8.5 bits per value)."""

    codec_id = 0x0010
    name = "q8_0"

    def __init__(self, jit: bool = True) -> None:
        #: Use the compiled kernels when they are available (a local choice: not a parameter on the wire).
        self.jit = bool(jit)

    def encode(self, array: Any) -> bytes:
        k = self.jit and _jit()
        if k:
            x = as_float_array(array, self.name, finite=False).reshape(-1)
            out = np.empty((QK + 2) * -(-x.size // QK), np.uint8)
            if k.q8_0_encode(x, out) < 0:
                return out.tobytes()
            # a block the kernel refused: the numpy code below raises the typed error
        a = _flat(array, self.name)
        if a.size == 0:
            return b""
        if a.size <= _SMALL_BLOCKS * QK:
            return _q8_0_small(a)
        return _q8_0_bulk(a)

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = check_shape(shape)
        n = math.prod(shp)
        if len(data) != (QK + 2) * -(-n // QK):
            self._check_data(data, shp)  # raises the typed error
        k = self.jit and _jit()
        if k:
            out = np.empty(n, np.float32)
            k.q8_0_decode(np.frombuffer(data, np.uint8), k.F16_TO_F32, out)
            return out.reshape(shp)
        raw = np.frombuffer(data, Q8_0_BLOCK)
        # int8 * float32 is computed in float32, exactly as casting qs first: one call instead of three.
        out = np.multiply(raw["qs"], raw["d"].astype(np.float32)[:, None]).reshape(-1)
        return (out if out.size == n else out[:n]).reshape(shp)

    def bits(self, shape: Sequence[int]) -> int:
        return 8 * (QK + 2) * math.ceil(math.prod(check_shape(shape)) / QK)


class Q4_0(Codec):
    """ggml q4_0: 18 bytes per 32 values (4.5 bits per value)."""

    codec_id = 0x0011
    name = "q4_0"

    def __init__(self, jit: bool = True) -> None:
        #: Use the compiled kernels when they are available (a local choice: not a parameter on the wire).
        self.jit = bool(jit)

    def encode(self, array: Any) -> bytes:
        k = self.jit and _jit()
        if k:
            x = as_float_array(array, self.name, finite=False).reshape(-1)
            out = np.empty((QK // 2 + 2) * -(-x.size // QK), np.uint8)
            if k.q4_0_encode(x, out) < 0:
                return out.tobytes()
            # a block the kernel refused: numpy raises the typed error, or codes a subnormal scale itself
        a = _flat(array, self.name)
        out = np.empty(a.size // QK, Q4_0_BLOCK)
        if a.size == 0:
            return b""
        for s in range(0, a.size, _CHUNK):
            x = a[s : s + _CHUNK].reshape(-1, QK)
            # ggml takes the first value of largest magnitude, sign included: argmax keeps the first.
            imax = np.abs(x).argmax(axis=1)
            d = np.take_along_axis(x, imax[:, None], axis=1)[:, 0] / np.float32(-8)
            _check_scales(np.abs(d).max(), self.name)
            q = x * (np.float32(1) / np.where(d == 0, np.float32(np.inf), d))[:, None]
            q += np.float32(8.5)
            q = q.astype(np.uint8)  # truncation, as ggml's (int8_t) cast; q >= 0 here
            np.minimum(q, 15, out=q)
            o = out[s // QK : s // QK + len(x)]
            o["d"] = d
            o["qs"] = q[:, : QK // 2] | (q[:, QK // 2 :] << 4)
        return out.tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        k = self.jit and _jit()
        if k:
            out = np.empty(math.prod(shp), np.float32)
            k.q4_0_decode(np.frombuffer(data, np.uint8), k.F16_TO_F32, out)
            return out.reshape(shp)
        raw = np.frombuffer(data, Q4_0_BLOCK)
        qs = raw["qs"]
        q = np.empty((len(raw), QK), np.int8)
        np.bitwise_and(qs, 0x0F, out=q[:, : QK // 2], casting="unsafe")
        np.right_shift(qs, 4, out=q[:, QK // 2 :], casting="unsafe")
        q -= 8
        out = q.astype(np.float32)
        out *= raw["d"].astype(np.float32)[:, None]
        return out.reshape(-1)[: math.prod(shp)].reshape(shp)

    def bits(self, shape: Sequence[int]) -> int:
        return 8 * (QK // 2 + 2) * math.ceil(math.prod(check_shape(shape)) / QK)
