"""`cipher`: the sender "speaks" soft tokens, expected embeddings instead of sampled words.

After CIPHER (Pham et al., 2024): at each of up to ``steps`` decoding steps the
sender's next-token distribution (temperature, optional top-k) weights the input
embedding matrix; that expected embedding is both fed back as the sender's next
input and sent. The receiver reads the ``n x d`` vectors as input embeddings at
the marker in its prompt. With temperature 0 the distribution is one-hot and a
soft token is exactly the embedding of the greedy token. Same tokenizer only:
the vectors live in the sender's input-embedding space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from lpca_models import Conditioning
from lpca_protocols.channel import AgentContext
from lpca_protocols.channels._latent import LatentChannel, LatentOptions, embedding_table, lm, sender_prompt


class CipherOptions(LatentOptions):
    steps: int = Field(12, ge=1, le=256)
    """Most soft tokens the sender speaks."""
    temperature: float = Field(1.0, ge=0.0, le=10.0)
    """Softmax temperature of the weighting (0: one-hot on the argmax token)."""
    top_k: int = Field(0, ge=0)
    """Weight only the k most likely tokens (0: the whole vocabulary)."""
    stop_at_eos: bool = True
    """Stop speaking when the most likely token ends the turn (the stop vector is not sent)."""


class CipherChannel(LatentChannel):
    name = "cipher"
    description = (
        "CIPHER: the sender speaks expected embeddings (soft tokens); the receiver reads them as input."
    )
    Options = CipherOptions
    batched_send = False  # one forward sequence per sender

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        return [self.speak(ctx) for ctx in ctxs]

    def speak(self, ctx: AgentContext) -> np.ndarray:
        backend = lm(ctx).backend
        table = embedding_table(backend)
        ids = backend.prompt_ids(sender_prompt(ctx, "sender"))
        stop = backend.eos_ids if self.options.stop_at_eos else frozenset()
        fwd = backend.forward(ids, return_past=True)
        out: list[np.ndarray] = []
        for step in range(self.options.steps):
            logits = np.asarray(fwd.logits, dtype=np.float64)
            if int(np.argmax(logits)) in stop and out:
                break
            vec = soft_token(logits, table, self.options.temperature, self.options.top_k)
            out.append(vec)
            if step + 1 < self.options.steps:
                fwd = backend.forward([], prefix=vec[None], past=fwd.past, return_past=True)
        return np.stack(out)

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        return Conditioning(prefix=payload)


def soft_token(logits: np.ndarray, table: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """The probability-weighted average of the embedding rows: sum_v p(v) E[v]."""
    if temperature == 0.0:
        return np.array(table[int(np.argmax(logits))], dtype=np.float32)
    z = logits / temperature
    if top_k and top_k < len(z):
        keep = np.argpartition(z, -top_k)[-top_k:]
        p = np.exp(z[keep] - z[keep].max())
        return (p / p.sum()).astype(np.float32) @ table[keep]
    p = np.exp(z - z.max())
    return (p / p.sum()).astype(np.float32) @ table
