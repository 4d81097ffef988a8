"""`latent-prefix`: a learned continuous packet, read by the receiver as k prefix embeddings.

The sender reads its view (role ``latent_sender``) and a trained resampler turns its
hidden states at the codec's source layer into a packet of k vectors of width m.
The packet crosses as bytes through a training-free codec (``codec``: fp16, q8_0,
rotq...) with an exact bit count, ``k x m`` floats. The receiver's copy of the codec
decodes it into k input embeddings placed at the prefix marker of its prompt.

With a codec trained for mid-layer injection (``inject_layer`` l), the receiver's
prompt holds k placeholder positions (zero embeddings) at the marker instead, and
the decoded vectors replace (or are added to) its residual stream there after
block l (a backend `Injection`, as `activation-graft` uses).

The codec is trained by ``lpca train codec`` (`lpca_protocols.training`) and loaded
from its checkpoint directory or by the name it was published under (option
``checkpoint``; `lpca_protocols.packet_codec`); it runs on torch and MLX
backends alike. A checkpoint trained on another base model is refused
(`CheckpointMismatchError`). Controls (null, shuffle, random) act on the packet
before it is encoded, as for every latent channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from lpca_models import Conditioning, Injection
from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels._latent import LatentChannel, LatentOptions, check_layer, lm
from lpca_protocols.packet_codec import CheckpointError, CodecRunner, load_checkpoint, resolve


class LatentPrefixOptions(LatentOptions):
    checkpoint: str = ""
    """A trained codec: its directory (``codec.json`` + ``codec.safetensors``) or its published name."""


class LatentPrefixChannel(LatentChannel):
    name = "latent-prefix"
    description = "A learned k x m continuous packet (resampler over hidden states) read as k prefix vectors."
    Options = LatentPrefixOptions
    kind: ClassVar[str] = "prefix"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        if not self.options.checkpoint:
            raise ChannelError(
                f"channel {self.name!r} needs option checkpoint=DIR or checkpoint=NAME (a trained codec)"
            )
        ckpt = load_checkpoint(resolve(self.options.checkpoint))
        if ckpt.spec.kind != self.kind:
            raise CheckpointError(
                f"{self.options.checkpoint} holds a {ckpt.spec.kind!r} codec; channel {self.name!r} "
                f"needs a {self.kind!r} codec"
            )
        self.runner = CodecRunner(ckpt)

    def _backend(self, ctx: AgentContext) -> object:
        """The receiver's backend, after checking the decoder was trained for its model."""
        backend = lm(ctx).backend
        info = backend.info
        self.runner.ckpt.check_base(info.fingerprint, info.name)
        return backend

    def _sender(self, ctx: AgentContext) -> object:
        """The sender's backend, after checking the encoder was trained on its model's states."""
        backend = lm(ctx).backend
        info = backend.info
        self.runner.ckpt.check_sender(info.fingerprint, info.name)
        return backend

    def sender_states(self, ctx: AgentContext) -> np.ndarray:
        """The sender's hidden states [T, d] at the codec's layer over its prompt (the spec's tail)."""
        self._sender(ctx)
        layer = check_layer(ctx, self.runner.spec.source_layer, "the codec's source_layer")
        return lm(ctx).sender_states(ctx.family, ctx.view, layer, self.runner.spec.tail)

    def packet(self, ctx: AgentContext) -> np.ndarray:
        """The k x m continuous packet of one sender."""
        return self.packets([ctx])[0]

    def packets(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        """The k x m packets of many senders: their states read in one batched forward per agent."""
        out: list[np.ndarray | None] = [None] * len(ctxs)
        groups: dict[int, list[int]] = {}
        for i, ctx in enumerate(ctxs):
            self._sender(ctx)
            groups.setdefault(id(lm(ctx)), []).append(i)
        for idx in groups.values():
            agent = lm(ctxs[idx[0]])
            layer = check_layer(ctxs[idx[0]], self.runner.spec.source_layer, "the codec's source_layer")
            items = [(ctxs[i].family, ctxs[i].view) for i in idx]
            states = agent.sender_states_batch(items, layer, self.runner.spec.tail)
            for i, h in zip(idx, states):
                out[i] = self.runner.encode(h, agent.backend.info.framework)
        return out  # type: ignore[return-value]

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        return self.packets(ctxs)

    def prefix(self, ctx: AgentContext, packet: np.ndarray) -> np.ndarray:
        """The decoded receiver vectors [k, d] (prefix embeddings, or the injected states)."""
        self._backend(ctx)
        framework = lm(ctx).backend.info.framework
        return self.runner.decode(packet.reshape(self.runner.spec.k, self.runner.spec.m), framework)

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        vectors = self.prefix(ctx, payload)
        spec = self.runner.spec
        if spec.inject_layer is None:
            return Conditioning(prefix=vectors, primer=spec.primer)
        n = lm(ctx).backend.info.n_layers
        if spec.inject_layer >= n:
            raise ChannelError(
                f"codec {self.options.checkpoint} injects after block {spec.inject_layer}; "
                f"{lm(ctx).backend.info.name} has blocks 1..{n} and an injection must precede the last"
            )
        placeholder = np.zeros_like(vectors)
        at = marker_positions(ctx, placeholder, spec.primer)
        return Conditioning(
            prefix=placeholder,
            injections=(Injection(spec.inject_layer, vectors, at, spec.inject_mode),),
            primer=spec.primer,
        )


def marker_positions(ctx: AgentContext, prefix: np.ndarray, primer: str | None = None) -> tuple[int, ...]:
    """Positions of `prefix`'s rows in the receiver's answer prompt (at the marker, else first),
    counted as the backend's forward counts them (BOS included)."""
    agent = lm(ctx)
    cond = Conditioning(prefix=prefix, primer=primer)
    prompt = agent.prompt(agent.answer_turn(ctx.family, ctx.view, cond))
    start = agent.backend.marker_position(prompt)
    return tuple(range(start, start + len(prefix)))
