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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_protocols.codecs.base import Codec, as_float_array, check_shape
from lpca_protocols.codecs.errors import CodecError

QK = 32
#: Values processed per step: keeps the float32 temporaries inside the L2 cache.
_CHUNK = 1 << 15
F16_MAX = 65504.0
#: Smallest normal float32; scales below it (subnormal blocks) are treated as zero.
_TINY = np.finfo(np.float32).tiny

#: The largest float32 below 0.5. ``trunc(x + copysign(HALF_DOWN, x))`` equals C's ``roundf(x)`` for
#: every float32 with ``|x| < 128`` (checked exhaustively), and q8_0 values never exceed 127.
#: Adding a plain 0.5 would round 0.49999997 up to 1.
HALF_DOWN = np.nextafter(np.float32(0.5), np.float32(0))

_HALF_DOWN_BITS = HALF_DOWN.view(np.uint32)
_ABS, _SIGN = np.uint32(0x7FFFFFFF), np.uint32(0x80000000)

Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_STARTS = np.arange(0, _CHUNK, QK)


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


class Q8_0(Codec):
    """ggml q8_0: 34 bytes per 32 values (8.5 bits per value)."""

    codec_id = 0x0010
    name = "q8_0"

    def encode(self, array: Any) -> bytes:
        a = _flat(array, self.name)
        nb = a.size // QK
        out = np.empty(nb, Q8_0_BLOCK)
        if nb == 0:
            return b""
        if a.size <= _CHUNK:  # one vector: skip the chunking bookkeeping
            self._encode_into(a, nb, out)
        else:
            for s in range(0, a.size, _CHUNK):
                x = a[s : s + _CHUNK]
                self._encode_into(x, x.size // QK, out[s // QK : s // QK + x.size // QK])
        return out.tobytes()

    def _encode_into(self, x: np.ndarray, nb: int, out: np.ndarray) -> None:
        # |x| as the float's bit pattern without its sign: for non-negative floats the integer order
        # is the float order (NaN sorts above inf and stays NaN), and integer max is much faster.
        amax = np.maximum.reduceat(x.view(np.uint32) & _ABS, _STARTS[:nb]).view(np.float32)
        d = amax / np.float32(127)
        _check_scales(d.max(), self.name)
        q = x.reshape(nb, QK) * (np.float32(1) / np.maximum(d, _TINY))[:, None]
        if nb <= 64:  # one call is cheapest on a vector; on bulk data the bit form runs 3x faster
            q += np.copysign(HALF_DOWN, q)
        else:
            q += ((q.view(np.uint32) & _SIGN) | _HALF_DOWN_BITS).view(np.float32)  # copysign(HALF_DOWN, q)
        out["d"] = d
        out["qs"] = q  # the float -> int8 cast truncates toward zero: with HALF_DOWN, roundf

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        raw = np.frombuffer(data, Q8_0_BLOCK)
        out = raw["qs"].astype(np.float32)
        out *= raw["d"].astype(np.float32)[:, None]
        return out.reshape(-1)[: math.prod(shp)].reshape(shp)

    def bits(self, shape: Sequence[int]) -> int:
        return 8 * (QK + 2) * math.ceil(math.prod(check_shape(shape)) / QK)


class Q4_0(Codec):
    """ggml q4_0: 18 bytes per 32 values (4.5 bits per value)."""

    codec_id = 0x0011
    name = "q4_0"

    def encode(self, array: Any) -> bytes:
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
