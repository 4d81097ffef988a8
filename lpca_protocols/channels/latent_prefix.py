"""`latent-prefix`: a learned continuous packet, read by the receiver as k prefix embeddings.

The sender reads its view (role ``latent_sender``) and a trained resampler turns its
hidden states at the codec's source layer into a packet of k vectors of width m.
The packet crosses as bytes through a training-free codec (``codec``: fp16, q8_0,
rotq...) with an exact bit count, ``k x m`` floats. The receiver's copy of the codec
decodes it into k input embeddings placed at the prefix marker of its prompt.

The codec is trained by ``lpca train codec`` (`lpca_protocols.training`) and loaded
from its checkpoint directory (option ``checkpoint``); it runs on torch and MLX
backends alike. A checkpoint trained on another base model is refused
(`CheckpointMismatchError`). Controls (null, shuffle, random) act on the packet
before it is encoded, as for every latent channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from lpca_models import Conditioning
from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels._codec_nets import CheckpointError, CodecRunner, load_checkpoint
from lpca_protocols.channels._latent import LatentChannel, LatentOptions, check_layer, lm, sender_prompt


class LatentPrefixOptions(LatentOptions):
    checkpoint: str = ""
    """Directory of a trained codec (``codec.json`` + ``codec.safetensors``); required."""


class LatentPrefixChannel(LatentChannel):
    name = "latent-prefix"
    description = "A learned k x m continuous packet (resampler over hidden states) read as k prefix vectors."
    Options = LatentPrefixOptions
    kind: ClassVar[str] = "prefix"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        if not self.options.checkpoint:
            raise ChannelError(f"channel {self.name!r} needs option checkpoint=DIR (a trained codec)")
        ckpt = load_checkpoint(self.options.checkpoint)
        if ckpt.spec.kind != self.kind:
            raise CheckpointError(
                f"{self.options.checkpoint} holds a {ckpt.spec.kind!r} codec; channel {self.name!r} "
                f"needs a {self.kind!r} codec"
            )
        self.runner = CodecRunner(ckpt)

    def _backend(self, ctx: AgentContext) -> object:
        backend = lm(ctx).backend
        info = backend.info
        self.runner.ckpt.check_base(info.fingerprint, info.name)
        return backend

    def sender_states(self, ctx: AgentContext) -> np.ndarray:
        """The sender's hidden states [T, d] at the codec's layer over its prompt (the spec's tail)."""
        backend = self._backend(ctx)
        layer = check_layer(ctx, self.runner.spec.source_layer, "the codec's source_layer")
        ids = backend._prompt_ids(sender_prompt(ctx))  # type: ignore[attr-defined]
        tail = self.runner.spec.tail
        positions = list(range(len(ids) - min(tail, len(ids)), len(ids))) if tail else None
        return backend.forward(ids, capture=[layer], positions=positions, logits="none").hidden[layer]  # type: ignore[attr-defined]

    def packet(self, ctx: AgentContext) -> np.ndarray:
        """The k x m continuous packet of one sender."""
        framework = lm(ctx).backend.info.framework
        return self.runner.encode(self.sender_states(ctx), framework)

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        return [self.packet(c) for c in ctxs]

    def prefix(self, ctx: AgentContext, packet: np.ndarray) -> np.ndarray:
        self._backend(ctx)
        framework = lm(ctx).backend.info.framework
        return self.runner.decode(packet.reshape(self.runner.spec.k, self.runner.spec.m), framework)

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        return Conditioning(prefix=self.prefix(ctx, payload))
