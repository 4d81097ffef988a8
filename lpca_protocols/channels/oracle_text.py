"""`oracle-text`: the scripted oracle's message, read by the model: can the answerer use perfect text?

Not a protocol (the sender is the task's oracle transcript, not a model): it is the
reference between P1 and the skyline. P1 fails when the model writes a bad message
or reads a good one badly; `oracle-text` removes the first cause, so together with the
skyline it tells whether a family is fair for a model (the answerer can do the task
from what a perfect partner would say). Each holder sends, in one round, the lines the
task's oracle transcript has it say to the answerer, joined by newlines, as a costed
text message (a two-way oracle such as KVLookup's "Name?" / "Name = pet" is sent as its
answer line: the reference measures reading, not asking).
"""

from __future__ import annotations

from collections.abc import Sequence

from lpca_envs import Message
from lpca_protocols.channel import AgentContext, Channel
from lpca_protocols.channels._text import text_message


class OracleTextChannel(Channel):
    name = "oracle-text"
    description = "Reference: each holder sends the task's oracle lines as text; the model answers."

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = [None] * len(ctxs)
        for i, c in enumerate(ctxs):
            if c.is_answerer or c.round != 1:
                continue
            lines = [u.text for u in c.task.oracle if u.sender == c.name and c.peer in u.recipients]
            if lines:
                out[i] = text_message(c, "\n".join(lines))
        return out
