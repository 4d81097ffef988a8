"""``index``: integers in 0..size-1 bit-packed at ceil(log2 size) bits each (codebook messages).

The wire form of a discrete packet (`latent-codebook`): k indices into codebooks of K rows
cost exactly ``k * ceil(log2 K)`` bits. Wire id 0x0040; its 4 parameter bytes are the size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_protocols.codecs.base import Codec, check_shape
from lpca_protocols.codecs.bitpack import pack, unpack
from lpca_protocols.codecs.errors import CodecError


class IndexCodec(Codec):
    """Integers in 0..size-1 (carried as a float array), packed at ceil(log2 size) bits each."""

    codec_id = 0x0040
    name = "index"

    def __init__(self, size: int = 256) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 1 << 24:
            raise CodecError(f"index codec size must be an int in 2..2**24, got {size!r}")
        self.size = size
        self.b = max(1, math.ceil(math.log2(size)))

    @property
    def spec(self) -> str:
        return f"index:size={self.size}"

    def params(self) -> bytes:
        return self.size.to_bytes(4, "little")

    @classmethod
    def from_params(cls, params: bytes, **context: Any) -> Codec:
        if len(params) != 4:
            raise CodecError(f"index codec parameters are 4 bytes, got {len(params)}")
        return cls(int.from_bytes(params, "little"))

    def bits(self, shape: Sequence[int]) -> int:
        return math.prod(check_shape(shape)) * self.b

    def encode(self, array: Any) -> bytes:
        a = np.asarray(array, dtype=np.float64).reshape(-1)
        idx = np.rint(a)
        if a.size and (
            not np.isfinite(a).all() or (idx != a).any() or idx.min() < 0 or idx.max() >= self.size
        ):
            raise CodecError(f"{self.spec} encodes integers in 0..{self.size - 1}, got {a[:8]}")
        return pack(idx.astype(np.int64), self.b)

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        idx = unpack(data, self.b, math.prod(shp)).astype(np.float32)
        if idx.size and idx.max() >= self.size:
            raise CodecError(f"{self.spec}: decoded index {int(idx.max())} is outside 0..{self.size - 1}")
        return idx.reshape(shp)
