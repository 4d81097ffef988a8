"""Plain float codecs: fp32, fp16, bf16 (little-endian, row-major)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_protocols.codecs.base import Codec, as_float_array, check_shape
from lpca_protocols.codecs.errors import CodecError


class FP32(Codec):
    """IEEE float32, 32 bits per element; lossless for float32 input."""

    codec_id = 0x0001
    name = "fp32"

    def encode(self, array: Any) -> bytes:
        return as_float_array(array, self.name, finite=False).astype("<f4", copy=False).tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        return np.frombuffer(data, "<f4").astype(np.float32).reshape(shp)

    def bits(self, shape: Sequence[int]) -> int:
        return 32 * math.prod(check_shape(shape))


class FP16(Codec):
    """IEEE float16 (round to nearest even), 16 bits per element. Values beyond ±65504 are refused."""

    codec_id = 0x0002
    name = "fp16"

    def encode(self, array: Any) -> bytes:
        a = as_float_array(array, self.name, finite=False)
        if a.size and not np.abs(a).max() < 65520:  # at and above 65520 fp16 rounds to inf; NaN lands here
            finite = np.isfinite(a)
            big = np.abs(a[finite]).max(initial=0)
            if big >= 65520:
                raise CodecError(f"fp16 cannot hold {big:g}: finite values must stay within ±65504")
            with np.errstate(over="ignore", invalid="ignore"):
                return a.astype("<f2").tobytes()
        return a.astype("<f2").tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        return np.frombuffer(data, "<f2").astype(np.float32).reshape(shp)

    def bits(self, shape: Sequence[int]) -> int:
        return 16 * math.prod(check_shape(shape))


class BF16(Codec):
    """bfloat16 (the high half of float32, rounded to nearest even), 16 bits per element."""

    codec_id = 0x0003
    name = "bf16"

    def encode(self, array: Any) -> bytes:
        a = as_float_array(array, self.name, finite=False)
        u = a.view(np.uint32)
        rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16
        # NaN must stay NaN (rounding could carry it into infinity): keep a quiet NaN.
        nan = np.isnan(a)
        if nan.any():
            rounded = np.where(nan, (u >> 16) | np.uint32(0x40), rounded)
        return rounded.astype("<u2").tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        u = np.frombuffer(data, "<u2").astype(np.uint32) << 16
        return u.view(np.float32).reshape(shp)

    def bits(self, shape: Sequence[int]) -> int:
        return 16 * math.prod(check_shape(shape))
