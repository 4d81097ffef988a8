"""P4 `retrieval`: the answerer sends its need, the holder returns its most relevant units under the cap.

Round 1: the answerer's query (its view, truncated to ``query_bytes``) crosses as
an ordinary, costed message. Round 2: the holder splits its view into units
(lines), ranks them against the query with BM25 (`bm25s`), and packs the best
units, in rank order, until the byte cap. No language model is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from lpca_envs import Message
from lpca_protocols.channel import AgentContext, Channel, ChannelOptions
from lpca_protocols.channels._text import cap_from, text_message


class RetrievalOptions(ChannelOptions):
    cap_bytes: int | None = Field(None, ge=0)
    """Cap of the holder's reply in bytes (default: the budget's max_bits_per_message / 8)."""
    query_bytes: int | None = Field(None, ge=1)
    """Cap of the answerer's query in bytes (default: the same cap)."""


def rank_units(units: list[str], query: str) -> list[int]:
    """Indices of `units` from most to least relevant to `query` (BM25; ties keep view order)."""
    import bm25s

    if not units:
        return []
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(units, stopwords=None, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([query], stopwords=None, show_progress=False)
    if not tokens.vocab:
        return list(range(len(units)))
    res, scores = retriever.retrieve(tokens, k=len(units), show_progress=False)
    order = sorted(range(len(units)), key=lambda j: (-float(scores[0][j]), int(res[0][j])))
    return [int(res[0][j]) for j in order]


def pack(units: list[str], order: list[int], cap: int) -> str:
    out, used = [], 0
    for i in order:
        size = len(units[i].encode("utf-8")) + (1 if out else 0)
        if used + size > cap:
            continue
        out.append(units[i])
        used += size
    return "\n".join(out)


class RetrievalChannel(Channel):
    name = "retrieval"
    description = "P4: the answerer sends its need; the holder sends its BM25-best lines under the cap."
    Options = RetrievalOptions

    @property
    def rounds(self) -> int:
        return 2

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = [None] * len(ctxs)
        for i, c in enumerate(ctxs):
            cap = cap_from(c, self.options.cap_bytes, self.name)
            if c.round == 1 and c.is_answerer:
                out[i] = text_message(c, c.view, self.options.query_bytes or cap, role="query")
            elif c.round == 2 and not c.is_answerer and c.received:
                units = [u.strip() for u in c.view.splitlines() if u.strip()]
                order = rank_units(units, c.received[-1].as_text())
                out[i] = text_message(c, pack(units, order, cap), cap, role="reply")
        return out
