"""`first-line`: the holder sends the first line of its private view, capped in bytes. No model needed."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from lpca_envs import Message
from lpca_protocols import AgentContext, Channel, ChannelOptions, hookimpl
from lpca_protocols.channel import truncate_utf8


class FirstLineOptions(ChannelOptions):
    cap_bytes: int = Field(256, ge=0)


class FirstLineChannel(Channel):
    name = "first-line"
    description = "Example plugin: the holder sends the first line of its view (capped)."
    Options = FirstLineOptions

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = []
        for c in ctxs:
            if c.is_answerer:
                out.append(None)
                continue
            line = c.view.splitlines()[0] if c.view else ""
            out.append(Message(c.name, (c.peer,), truncate_utf8(line, self.options.cap_bytes)))
        return out


@hookimpl
def register_channels(register):
    register(FirstLineChannel)
