"""`activation-graft`: the sender's layer-k activation combined into the receiver's layer j.

After "Communicating Activations Between Language Model Agents" (Ramesh & Li,
2025): the sender reads its view (role ``latent_sender``) and exports the
residual stream after block ``source_layer`` at its last token (or the mean over
the tokens of its view); the receiver reads its own prompt and, at block
``target_layer``, combines that vector into its residual stream with ``mode``
(replace, add, mean) at its last prompt position (or every position). The
payload is one vector of the hidden size: ``d`` floats through the codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from lpca_models import Conditioning, ForwardRequest, Injection
from lpca_protocols.channel import AgentContext
from lpca_protocols.channels._latent import (
    LatentChannel,
    LatentOptions,
    check_layer,
    forward_each,
    lm,
    sender_prompt,
)


class GraftOptions(LatentOptions):
    source_layer: int = -1
    """k: the sender's layer (0 = embeddings, L = last block; negative counts from the end)."""
    target_layer: int = -1
    """j: the receiver's layer the vector is combined into."""
    mode: Literal["replace", "add", "mean"] = "replace"
    """f: how the vector combines with the receiver's residual stream."""
    source: Literal["last", "mean"] = "last"
    """The sender's last token, or the mean over the tokens of its view."""
    positions: Literal["last", "all"] = "last"
    """Combine at the receiver's last prompt position, or at every position."""


class GraftChannel(LatentChannel):
    name = "activation-graft"
    description = "The sender's layer-k activation combined into the receiver's layer j (replace/add/mean)."
    Options = GraftOptions

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        reqs = []
        for ctx in ctxs:
            k = check_layer(ctx, self.options.source_layer, "source_layer")
            backend = lm(ctx).backend
            prompt = sender_prompt(ctx)
            ids = backend.prompt_ids(prompt)
            if self.options.source == "last":
                positions = [-1]
            else:
                lo, hi = view_span(backend, prompt, ctx.view, len(ids))
                positions = list(range(lo, hi))
            reqs.append(ForwardRequest(ids, capture=[k], positions=positions, logits="none"))
        outs = forward_each(ctxs, reqs)  # every sender of the batch in one pass
        return [f.hidden[r.capture[0]].mean(axis=0) for f, r in zip(outs, reqs)]

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        j = check_layer(ctx, self.options.target_layer, "target_layer")
        positions = (-1,) if self.options.positions == "last" else None
        return Conditioning(injections=(Injection(j, payload, positions=positions, mode=self.options.mode),))


def view_span(backend: object, prompt: str, view: str, n_ids: int) -> tuple[int, int]:
    """Token positions [lo, hi) of `view` inside `prompt` (the whole prompt if it is not found)."""
    start = prompt.find(view)
    if start < 0 or not view:
        return 0, n_ids
    lo = len(backend.prompt_ids(prompt[:start]))
    hi = len(backend.prompt_ids(prompt[: start + len(view)]))
    return min(lo, n_ids - 1), max(min(hi, n_ids), min(lo, n_ids - 1) + 1)
