"""`latent-codebook`: a learned discrete packet of codebook indices, read as k prefix embeddings.

The same resampler and decoder as `latent-prefix`, with a quantization bottleneck
(trained with `vector-quantize-pytorch`; the checkpoint carries its exported tables),
and only the indices cross, bit-packed (codec ``index``), exactly:

- ``vq`` (EMA, k-means init): each packet vector's nearest of its slot's K rows, ``k * ceil(log2 K)`` bits;
- ``rvq``: Q residual stages of K rows per slot, ``k * Q * ceil(log2 K)`` bits;
- ``fsq``: each slot's vector rounded on a grid of ``prod(levels)`` points,
  ``k * ceil(log2 prod(levels))`` bits.

Controls act on the indices before they are packed, so they cost the same bits:

- ``null``: every index 0 (a valid, constant message: "always say symbol 0");
- ``shuffle``: another episode's indices (a derangement of the batch, as for every latent channel);
- ``random``: indices drawn uniformly from the alphabet (seeded per task).

Each episode records the symbols it sent (``diagnostics.symbols``, slot-major) and the
alphabet size (``diagnostics.alphabet``); `lpca_protocols.training.metrics` turns them
into histograms, perplexity and dead-code counts, overall and per symbol position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import field_validator

from lpca_protocols import codecs
from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels.latent_prefix import LatentPrefixChannel, LatentPrefixOptions
from lpca_protocols.codecs import Codec, CodecError
from lpca_protocols.codecs.bitpack import pack, unpack


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
        return math.prod(codecs.check_shape(shape)) * self.b

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


codecs.register(IndexCodec)


class LatentCodebookOptions(LatentPrefixOptions):
    codec: str = "index"
    """Always ``index`` (k indices, ceil(log2 K) bits each); set by the checkpoint's K."""

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        if v.partition(":")[0] != "index":
            raise ValueError(f"latent-codebook sends codebook indices (codec 'index'), got {v!r}")
        return "index"


class LatentCodebookChannel(LatentPrefixChannel):
    name = "latent-codebook"
    description = "A learned packet of codebook indices (VQ / RVQ / FSQ): k*ceil(log2 K) bits (x Q for RVQ)."
    Options = LatentCodebookOptions
    kind: ClassVar[str] = "codebook"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.codec = IndexCodec(self.runner.spec.codebook_size)

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        out = []
        for c in ctxs:
            idx = self.runner.quantize(self.packet(c))
            out.append(idx.astype(np.float32))
        return out

    def apply_control(self, ctxs: Sequence[AgentContext], arrays: list[np.ndarray]) -> list[np.ndarray]:
        size = self.runner.spec.codebook_size
        if self.options.control == "random":
            self._previous = list(arrays)
            sent = [
                self._rng(c, "random").integers(0, size, a.shape).astype(np.float32)
                for c, a in zip(ctxs, arrays)
            ]
        else:
            sent = super().apply_control(ctxs, arrays)  # null: all index 0; shuffle: another episode's
        for c, a in zip(ctxs, sent):
            c.diagnostics["symbols"] = [int(x) for x in a.reshape(-1)]
            c.diagnostics["alphabet"] = size
        return sent

    def condition(self, ctx: AgentContext, payload: Any) -> Any:
        spec = self.runner.spec
        idx = np.clip(np.rint(np.asarray(payload, np.float64)), 0, spec.codebook_size - 1).astype(np.int64)
        if idx.size != spec.symbols_per_message:
            raise ChannelError(
                f"channel {self.name!r}: a message of this codec holds {spec.symbols_per_message} "
                f"indices, got {idx.size}"
            )
        return super().condition(ctx, self.runner.rows(idx.reshape(-1)))
