"""`skyline`: the reference ceiling: the answerer sees every agent's view itself; nothing crosses.

Not a protocol (no message, zero bits): it is what the same model scores when the
information split is removed, on the same episodes as every channel. The partners'
views are shown with the prompt book's ``received_view`` wording ("You also know
this: ...") where a P1 message would appear.
"""

from __future__ import annotations

from collections.abc import Sequence

from lpca_models import Conditioning
from lpca_models.agents import LMAgent
from lpca_protocols.channel import AgentContext, Channel


class SkylineChannel(Channel):
    name = "skyline"
    description = "Ceiling reference: the answerer also reads its partners' views; zero bits cross."

    def receive(self, ctxs: Sequence[AgentContext]) -> list[Conditioning]:
        out = []
        for ctx in ctxs:
            others = [v for a, v in ctx.task.views.items() if a != ctx.name]
            agent = ctx.agent
            item = "You also know this: {text}\n"
            if isinstance(agent, LMAgent):  # the prompt book's wording (role received_view)
                item = agent.prompts.get(ctx.family, "received_view")
            text = "".join(item.format(text=v) for v in others)
            out.append(Conditioning(text=text))
        return out
