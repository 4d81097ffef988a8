"""`kv-bridge`: a trained cross-model bridge at the level of the attention cache (C2C-style baseline).

In the spirit of Cache-to-Cache (thu-nics/C2C: per-layer gated projectors from one model's KV
cache into another's), adapted to split information, where the two models never read the same
tokens: the sender sends its hidden states at n layers over the last ``tail`` positions of its
view ([n, T, d_src], through any tensor codec: fp16, q8_0, rotq...); the receiver holds T
placeholder positions (zero embeddings, after the primer) and, for each fused layer i, adds
``sigmoid(gate_i) * (U_i V_i standardized(states_i) + b_i)`` to its residual stream after block
``kv_targets[i]`` at those positions. Every later block computes the placeholders' keys and
values with its own projections and position encoding, so the sender's states enter the
receiver's KV cache layer by layer, gated, without the positional mismatch of projecting one
model's rotated keys into another's.

The projectors are trained by `lpca train bridge` with ``codec.kind = "kv"`` (same objective,
run directory, resume and gate as the resampler bridge, `latent-bridge`); the checkpoint records
both models' fingerprints and another pair, a foreign packet or one of another shape is refused
with a typed error. Controls (null, shuffle, random) replace the states before they are encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_envs import Message
from lpca_models import Conditioning, ForwardRequest, Injection
from lpca_protocols.channel import AgentContext, ChannelError, Requirement
from lpca_protocols.channels._latent import (
    LatentChannel,
    LatentMismatchError,
    LatentOptions,
    forward_each,
    lm,
    sender_prompt,
)
from lpca_protocols.channels.latent_bridge import BridgeChecks
from lpca_protocols.channels.latent_prefix import marker_positions
from lpca_protocols.packet_codec import CheckpointError, CodecRunner, load_checkpoint, resolve


class KVBridgeOptions(LatentOptions):
    checkpoint: str = ""
    """A trained kv bridge (``lpca train bridge`` with codec.kind = "kv"): directory or published name."""


class KVBridgeChannel(BridgeChecks, LatentChannel):
    name = "kv-bridge"
    description = (
        "A trained C2C-style bridge: the sender's states at n layers, projected and gated into the "
        "receiver's residual at n layers over placeholder positions (its KV cache), across models."
    )
    Options = KVBridgeOptions
    requires = Requirement.WHITE_BOX_ANY_MODEL
    cross_model = True

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        if not self.options.checkpoint:
            raise ChannelError(f"channel {self.name!r} needs option checkpoint=DIR or checkpoint=NAME")
        ckpt = load_checkpoint(resolve(self.options.checkpoint))
        if ckpt.spec.kind != "kv":
            raise CheckpointError(
                f"{self.options.checkpoint} holds a {ckpt.spec.kind!r} codec; channel {self.name!r} needs "
                "a kv bridge (codec.kind = 'kv'); a resampler bridge runs as 'latent-bridge'"
            )
        self.runner = CodecRunner(ckpt)

    def check_pair(self, sender: Any, receiver: Any) -> None:
        spec = self.runner.spec
        super().check_pair(sender, receiver)
        if max(spec.kv_layers) > sender.n_layers or max(spec.kv_targets) >= receiver.n_layers:
            raise CheckpointError(
                f"kv bridge {self.options.checkpoint}: layers {spec.kv_layers} / targets {spec.kv_targets} "
                f"do not fit {sender.name} ({sender.n_layers} blocks) -> {receiver.name} "
                f"({receiver.n_layers} blocks)"
            )

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        spec = self.runner.spec
        reqs = []
        for ctx in ctxs:
            info = lm(ctx).backend.info
            self.runner.ckpt.check_sender(info.fingerprint, info.name)
            ids = lm(ctx).backend.prompt_ids(sender_prompt(ctx))
            t = min(spec.tail, len(ids))
            reqs.append(
                ForwardRequest(
                    ids,
                    capture=list(spec.kv_layers),
                    positions=list(range(len(ids) - t, len(ids))),
                    logits="none",
                )
            )
        return [np.stack([f.hidden[layer] for layer in spec.kv_layers]) for f in forward_each(ctxs, reqs)]

    def decode(self, ctx: AgentContext, msg: Message) -> np.ndarray:
        spec = self.runner.spec
        self.check_origin(msg)
        shape = str((msg.meta or {}).get("shape", "")).split("x")
        if len(shape) != 3 or shape[0] != str(spec.k) or shape[2] != str(spec.d_src):
            raise LatentMismatchError(
                f"channel {self.name!r}: kv bridge {self.options.checkpoint} takes states of shape "
                f"{spec.k}xTx{spec.d_src}, got {'x'.join(shape)!r}"
            )
        return super().decode(ctx, msg)

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        info = lm(ctx).backend.info
        spec = self.runner.spec
        self.runner.ckpt.check_base(info.fingerprint, info.name)
        vectors = self.runner.kv_decode(payload)  # [n, T, d_out]
        placeholder = np.zeros(vectors.shape[1:], np.float32)
        at = marker_positions(ctx, placeholder, spec.primer)
        inj = tuple(Injection(t, v, at, "add") for t, v in zip(spec.kv_targets, vectors))
        return Conditioning(prefix=placeholder, injections=inj, primer=spec.primer)
