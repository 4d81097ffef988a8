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

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import field_validator

from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels.latent_prefix import LatentPrefixChannel, LatentPrefixOptions
from lpca_protocols.codecs.index import IndexCodec


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
        return [self.runner.quantize(p).astype(np.float32) for p in self.packets(ctxs)]

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
