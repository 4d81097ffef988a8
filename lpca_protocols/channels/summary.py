"""P3 `summary`: the holder is asked to compress to the cap, then the cap is enforced."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from lpca_envs import Message
from lpca_protocols.channel import AgentContext, Channel, ChannelOptions
from lpca_protocols.channels._text import cap_from, generate, text_message


class SummaryOptions(ChannelOptions):
    cap_bytes: int | None = Field(None, ge=0)
    """Hard cap per message in bytes (default: the budget's max_bits_per_message / 8)."""


class SummaryChannel(Channel):
    name = "summary"
    description = "P3: the holder compresses to the cap itself; the cap is then enforced."
    Options = SummaryOptions

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = [None] * len(ctxs)
        idx = [i for i, c in enumerate(ctxs) if not c.is_answerer]
        caps = [cap_from(ctxs[i], self.options.cap_bytes, self.name) for i in idx]
        texts = generate(
            [ctxs[i] for i in idx],
            "summary",
            per_ctx=[{"max_bytes": str(c)} for c in caps],
            max_new_tokens=max(8, min(256, max(caps, default=8) // 2 + 8)),
        )
        for i, cap, t in zip(idx, caps, texts):
            out[i] = text_message(ctxs[i], t, cap)
        return out
