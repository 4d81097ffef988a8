"""`Channel`: how one agent's information reaches another, as `Message` bytes and `Conditioning`.

A channel is batch-native: `send` and `receive` take one context per episode of a
batch, so a model serves every episode of the batch in one generate call.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from lpca_envs import Budget, Message, Task
from lpca_envs.errors import LPCAError
from lpca_models import Conditioning


class ChannelError(LPCAError, ValueError):
    """A channel was misconfigured or used with an incompatible model/agent."""


class Requirement(enum.Enum):
    """What a channel needs from the agents' models."""

    TEXT = "text"  # any agent that reads and writes text
    WHITE_BOX_SAME_MODEL = "white-box-same-model"  # sender and receiver are the same weights
    WHITE_BOX_ANY_MODEL = "white-box-any-model"  # white-box backends, possibly different models


class ChannelOptions(BaseModel):
    """Base of every channel's options; unknown keys are errors naming the known ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class AgentContext:
    """What a channel may use for one agent in one episode of a batch.

    ``agent`` is the LMAgent (or None for scripted runs), ``received`` the messages
    delivered to this agent so far, ``sent`` the ones it sent, ``diagnostics``
    what the channel wants recorded for this episode.
    """

    name: str
    view: str
    task: Task
    family: str
    round: int
    budget: Budget
    agent: Any
    peer: str
    received: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    is_answerer: bool = False
    diagnostics: dict[str, Any] = field(default_factory=dict)
    """Per-episode numbers a channel logs (e.g. payload sensitivity); the runner records them."""


class Channel:
    """Base class of every channel. Subclasses set `name`, `requires`, `Options` and override methods.

    The runner drives a channel through ``rounds`` message rounds: in each round it
    calls `send` for every live agent of every episode (returning None means "say
    nothing"), steps the environment, then calls `receive` for the answerers, whose
    `Conditioning` the answering agent generates with.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[Requirement] = Requirement.TEXT
    Options: ClassVar[type[ChannelOptions]] = ChannelOptions
    #: True when `send` serves the whole batch in shared backend calls (a batched generate): every
    #: sender's episode took part in each forward pass. False when it runs one sequence per sender,
    #: so an episode's forward passes are the batch's divided by the number of senders.
    batched_send: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        try:
            self.options = self.Options(**options)
        except ValidationError as e:
            known = ", ".join(self.Options.model_fields) or "(none)"
            raise ChannelError(
                f"bad options for channel {self.name!r}: {e.errors()[0]['msg']} "
                f"({_loc(e)}); known options: {known}"
            ) from None

    @property
    def rounds(self) -> int:
        """Message rounds this channel uses (the env budget must allow them)."""
        return 1

    def check_pair(self, sender: Any, receiver: Any) -> None:
        """Refuse a (sender, receiver) pair of models this channel cannot serve (`ModelInfo`s).

        Called by the runner before any episode runs, beside the `requires` check; the default
        accepts every pair `requires` allows. A cross-model channel (a trained bridge) accepts
        only the pair it was trained for and raises a `ChannelError` naming it otherwise.
        """

    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        """One message (or None) per context: what each agent says this round."""
        return [None] * len(ctxs)

    def receive(self, ctxs: Sequence[AgentContext]) -> list[Conditioning]:
        """How each answerer is conditioned by what it received (default: the texts, prepended)."""
        out = []
        for ctx in ctxs:
            texts = [m.as_text() for m in ctx.received if m.kind == "text"]
            out.append(Conditioning(text="".join(f"Message from your partner: {t}\n" for t in texts)))
        return out

    def describe(self) -> str:
        opts = self.options.model_dump()
        return self.name + ("(" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")" if opts else "")


def _loc(e: ValidationError) -> str:
    err = e.errors()[0]
    return ".".join(str(x) for x in err.get("loc", ())) or "options"


def truncate_utf8(text: str, max_bytes: int) -> bytes:
    """The longest prefix of `text` whose UTF-8 encoding fits `max_bytes`, never splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return data
    cut = data[:max_bytes]
    return cut.decode("utf-8", errors="ignore").encode("utf-8")
