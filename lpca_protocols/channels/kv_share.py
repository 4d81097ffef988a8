"""`kv-share`: the sender's attention cache over its view becomes the receiver's past.

After LatentMAS / KVComm: the sender reads its view (a closed chat turn, no
generation) and exports its KV cache; the receiver continues from that cache and
reads its own prompt. The payload is the cache of the selected ``layers``, shape
``[n_layers, 2, kv_heads, T, head_dim]`` (keys then values) through the codec.
As in KVComm, ``layers`` may select a subset: the receiver fills the other layers
with its own cache of ``T`` filler tokens (no bits cross for them), so the
sender's information reaches it only through the selected layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from lpca_models import Conditioning, ForwardRequest, KVCache
from lpca_models.agents import Turn
from lpca_protocols.channel import AgentContext, ChannelError
from lpca_protocols.channels._latent import (
    LatentChannel,
    LatentMismatchError,
    LatentOptions,
    forward_each,
    lm,
)


class KVShareOptions(LatentOptions):
    layers: list[int] | None = Field(None, min_length=1)
    """Transformer blocks (0-based) whose cache is shared; None: all of them."""


class KVShareChannel(LatentChannel):
    name = "kv-share"
    description = "The sender's KV cache over its view becomes the receiver's past (all or selected layers)."
    Options = KVShareOptions

    def _layers(self, ctx: AgentContext) -> list[int]:
        n = lm(ctx).backend.info.n_layers
        sel = self.options.layers if self.options.layers is not None else list(range(n))
        bad = [x for x in sel if not 0 <= x < n]
        if bad or len(set(sel)) != len(sel):
            raise ChannelError(
                f"kv-share layers must be distinct transformer blocks in 0..{n - 1}, "
                f"got {self.options.layers}"
            )
        return sorted(sel)

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        reqs = []
        for ctx in ctxs:
            agent = lm(ctx)
            turn = Turn(ctx.family, "latent_sender", {"view": ctx.view})
            text = agent.prompt(turn, add_generation_prompt=False)
            reqs.append(ForwardRequest(agent.backend.prompt_ids(text), return_past=True, logits="none"))
        out = []
        for ctx, fwd in zip(ctxs, forward_each(ctxs, reqs)):  # every sender's cache from one pass
            layers = self._layers(ctx)
            past = fwd.past
            assert past is not None
            lengths = {past.keys[i].shape[1] for i in layers}
            if len(lengths) != 1:
                raise ChannelError(
                    f"kv-share: the sender's cache holds layers of different lengths {sorted(lengths)} "
                    "(a sliding-window model over a view longer than its window)"
                )
            out.append(np.stack([np.stack([past.keys[i], past.values[i]]) for i in layers]))
        return out

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        backend = lm(ctx).backend
        layers = self._layers(ctx)
        if payload.ndim != 5 or payload.shape[0] != len(layers) or payload.shape[1] != 2:
            raise LatentMismatchError(
                f"kv-share payload must be [{len(layers)}, 2, kv_heads, T, head_dim], got {payload.shape}"
            )
        length = payload.shape[3]
        n = backend.info.n_layers
        if len(layers) == n:
            keys, values = [payload[i, 0] for i in range(n)], [payload[i, 1] for i in range(n)]
        else:
            filler = backend.forward([_filler_id(backend)] * length, return_past=True, logits="none").past
            assert filler is not None
            keys, values = list(filler.keys), list(filler.values)
            for row, layer in enumerate(layers):
                keys[layer], values[layer] = payload[row, 0], payload[row, 1]
        past = KVCache(tuple(keys), tuple(values), backend.info.fingerprint, length, tuple(range(n)))
        return Conditioning(past=past)


def _filler_id(backend: object) -> int:
    ids = backend.tokenize(" ")  # type: ignore[attr-defined]
    return ids[0] if ids else 0
