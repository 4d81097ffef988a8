"""Shared machinery of the text channels: LM turns for holders, askers and repliers."""

from __future__ import annotations

from collections.abc import Sequence

from lpca_envs import Message
from lpca_models.agents import LMAgent, Turn, extract_answer
from lpca_protocols.channel import AgentContext, ChannelError, truncate_utf8


def lm(ctx: AgentContext) -> LMAgent:
    if not isinstance(ctx.agent, LMAgent):
        raise ChannelError(
            f"this channel needs an LMAgent for agent {ctx.name!r}, got {type(ctx.agent).__name__}"
        )
    return ctx.agent


def generate(
    ctxs: Sequence[AgentContext],
    role: str,
    extra: dict[str, str] | None = None,
    per_ctx: Sequence[dict[str, str]] | None = None,
    max_new_tokens: int | None = None,
) -> list[str]:
    """One LM generation per context (one batched call per model: agents may use different models)."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(ctxs):
        groups.setdefault(id(lm(c)), []).append(i)
    out = [""] * len(ctxs)
    for idx in groups.values():
        turns = []
        for i in idx:
            c = ctxs[i]
            fields = {"view": c.view, **(extra or {}), **(per_ctx[i] if per_ctx else {})}
            turns.append(Turn(c.family, role, fields))
        for i, g in zip(idx, lm(ctxs[idx[0]]).run(turns, max_new_tokens=max_new_tokens)):
            out[i] = extract_answer(g.text, max_chars=4000)
    return out


def text_message(ctx: AgentContext, text: str, cap_bytes: int | None = None, **meta: str) -> Message:
    payload = text.encode("utf-8") if cap_bytes is None else truncate_utf8(text, cap_bytes)
    return Message(ctx.name, (ctx.peer,), payload, "text", -1, meta or None)


def cap_from(ctx: AgentContext, cap_bytes: int | None, name: str) -> int:
    """The byte cap: the option if set, else the budget's per-message bit cap."""
    if cap_bytes is not None:
        return cap_bytes
    bits = ctx.budget.max_bits_per_message
    if bits is None:
        raise ChannelError(
            f"channel {name!r} needs a cap: set the option cap_bytes or a budget with max_bits_per_message"
        )
    return bits // 8
