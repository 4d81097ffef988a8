"""P0 `none`: no communication at all -- the floor every channel is compared with."""

from __future__ import annotations

from collections.abc import Sequence

from lpca_models import Conditioning
from lpca_protocols.channel import AgentContext, Channel


class NoneChannel(Channel):
    name = "none"
    description = "P0: nothing crosses; the receiver answers from its own view."

    def receive(self, ctxs: Sequence[AgentContext]) -> list[Conditioning]:
        return [Conditioning() for _ in ctxs]
