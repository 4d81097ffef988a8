"""P1 `text` and P2 `text-budget`: the holder writes a free message; P2 truncates it to a byte cap.

With ``ask=True`` the exchange is two-way: the answerer first asks for what it
needs (round 1), the holder replies to that question (round 2).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from lpca_envs import Message
from lpca_protocols.channel import AgentContext, Channel, ChannelOptions
from lpca_protocols.channels._text import cap_from, generate, text_message


class TextOptions(ChannelOptions):
    ask: bool = False
    """Two-way: the answerer asks first, the holder replies."""
    forward_view: bool = False
    """The holder forwards its private view verbatim instead of writing a message."""
    max_new_tokens: int = Field(64, ge=1, le=2048)
    """Longest message the holder may generate, in tokens."""


class TextChannel(Channel):
    name = "text"
    description = "P1: the holder writes a free text message (no cap); forward_view=true sends its view."
    Options = TextOptions

    @property
    def rounds(self) -> int:
        return 2 if self.options.ask else 1

    def _cap(self, ctx: AgentContext) -> int | None:
        return None

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = [None] * len(ctxs)
        if self.options.ask and ctxs and ctxs[0].round == 1:
            idx = [i for i, c in enumerate(ctxs) if c.is_answerer]
            texts = generate([ctxs[i] for i in idx], "asker", max_new_tokens=48)
        elif self.options.ask:
            idx = [i for i, c in enumerate(ctxs) if not c.is_answerer and c.received]
            questions = [{"question": ctxs[i].received[-1].as_text()} for i in idx]
            texts = generate(
                [ctxs[i] for i in idx],
                "replier",
                per_ctx=questions,
                max_new_tokens=self.options.max_new_tokens,
            )
        elif self.options.forward_view:
            idx = [i for i, c in enumerate(ctxs) if not c.is_answerer and c.round == 1]
            texts = [ctxs[i].view for i in idx]
        else:
            idx = [i for i, c in enumerate(ctxs) if not c.is_answerer]
            texts = generate([ctxs[i] for i in idx], "sender", max_new_tokens=self.options.max_new_tokens)
        for i, t in zip(idx, texts):
            out[i] = text_message(ctxs[i], t, self._cap(ctxs[i]))
        return out


class TextBudgetOptions(TextOptions):
    cap_bytes: int | None = Field(None, ge=0)
    """Hard cap per message in bytes (default: the budget's max_bits_per_message / 8)."""


class TextBudgetChannel(TextChannel):
    name = "text-budget"
    description = "P2: free text truncated to a hard byte cap on a UTF-8 boundary."
    Options = TextBudgetOptions

    def _cap(self, ctx: AgentContext) -> int | None:
        return cap_from(ctx, self.options.cap_bytes, self.name)
