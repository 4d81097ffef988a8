"""`hidden-packet`: the sender's last-layer hidden states of a short message, read as input embeddings.

After Interlat / LatentMAS: the sender writes a short message (role ``sender``,
greedy, at most ``max_tokens`` tokens); the residual stream after its last block
at the positions that *predicted* each message token is the packet, ``n x d``.
With ``realign`` each vector is rescaled to the mean norm of the input embeddings
(LatentMAS's realignment to the input-embedding scale; the last residual stream
is typically an order of magnitude larger). The receiver reads the vectors as
input embeddings between its prompt's marker tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from lpca_models import Conditioning, ForwardRequest
from lpca_protocols.channel import AgentContext
from lpca_protocols.channels._latent import (
    LatentChannel,
    LatentOptions,
    check_layer,
    embedding_table,
    forward_each,
    lm,
    sender_prompt,
)


class HiddenPacketOptions(LatentOptions):
    max_tokens: int = Field(16, ge=1, le=256)
    """Longest message the sender writes (one vector per token)."""
    layer: int = -1
    """Which residual stream is shipped (default: after the last block)."""
    realign: bool = True
    """Rescale each vector to the mean input-embedding norm."""


class HiddenPacketChannel(LatentChannel):
    name = "hidden-packet"
    description = (
        "The sender's last-layer hidden states over a short message, as the receiver's input embeddings."
    )
    Options = HiddenPacketOptions

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        if not ctxs:
            return []
        backend = lm(ctxs[0]).backend
        layer = check_layer(ctxs[0], self.options.layer, "layer")
        prompts = [sender_prompt(c, "sender") for c in ctxs]
        gens = backend.generate(prompts, max_new_tokens=self.options.max_tokens, stop=("\n\n",))
        scale = (
            float(np.linalg.norm(embedding_table(backend), axis=1).mean()) if self.options.realign else 0.0
        )
        reqs = []
        for prompt, g in zip(prompts, gens):
            ids = backend.prompt_ids(prompt)
            toks = list(g.token_ids) or [next(iter(sorted(backend.eos_ids)), 0)]
            # the states that predicted each message token: the prompt's last position and every
            # message token but the last
            seq = ids + toks[:-1]
            positions = list(range(len(ids) - 1, len(seq)))
            reqs.append(ForwardRequest(seq, capture=[layer], positions=positions, logits="none"))
        out = []
        for fwd in forward_each(ctxs, reqs):  # every message re-read in one pass
            h = fwd.hidden[layer]
            if self.options.realign:
                h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12) * scale
            out.append(h.astype(np.float32))
        return out

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        return Conditioning(prefix=payload if payload.ndim == 2 else payload[None])
