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

from collections.abc import Callable, Sequence

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

    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(ctxs)
        groups: dict[int, list[int]] = {}
        for i, ctx in enumerate(ctxs):
            groups.setdefault(id(lm(ctx).backend), []).append(i)
        for idx in groups.values():  # every sender on one backend speaks in one batched decode
            backend = lm(ctxs[idx[0]]).backend
            table = embedding_table(backend)
            stop = np.array(sorted(backend.eos_ids if self.options.stop_at_eos else ()), dtype=np.int64)
            step = self._step(table, stop)
            prompts = [backend.prompt_ids(sender_prompt(ctxs[i], "sender")) for i in idx]
            for i, vecs in zip(idx, backend.decode_embeddings(prompts, self.options.steps, step)):
                out[i] = vecs
        return out  # type: ignore[return-value]

    def _step(self, table: np.ndarray, stop: np.ndarray) -> Callable[[np.ndarray, int], tuple]:
        """The decode step: every row's soft token, and which rows' greedy token ends the turn."""
        temperature, top_k = self.options.temperature, self.options.top_k

        def step(logits: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
            return soft_tokens(logits, table, temperature, top_k), np.isin(logits.argmax(-1), stop)

        return step

    def speak(self, ctx: AgentContext) -> np.ndarray:
        """One sender's soft tokens ``[n, d]``."""
        return self.payloads([ctx])[0]

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        return Conditioning(prefix=payload)


def soft_tokens(logits: np.ndarray, table: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """`soft_token` for every row of ``[B, V]`` logits (one matrix product when no top-k applies)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0.0 or (top_k and top_k < logits.shape[1]):
        return np.stack([soft_token(row, table, temperature, top_k) for row in logits])
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32) @ table


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
