"""`LMAgent`: a backend plus role prompts. It writes messages and answers tasks.

Prompts live in data (``prompts.toml``), per role and per task family, so they
can be read, diffed and swept without touching code. One backend serves any
number of agents; an agent holds no model state of its own.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lpca_models.backend import Backend
from lpca_models.errors import ModelError
from lpca_models.types import GREEDY, PREFIX_MARKER, Conditioning, Generation, Sampling

ROLES = (
    "system",
    "sender",
    "latent_sender",
    "latent_reply",
    "summary",
    "asker",
    "replier",
    "structured",
    "receiver",
    "received_item",
    "received_latent",
    "received_view",
)


class PromptBook:
    """Role prompts with per-family overrides, loaded from TOML."""

    def __init__(self, data: dict[str, Any]) -> None:
        default = data.get("default", {})
        missing = [r for r in ROLES if r not in default]
        if missing:
            raise ModelError(f"prompt book lacks default prompts for roles {missing}")
        self.default = default
        self.families: dict[str, dict[str, str]] = data.get("families", {})
        for fam, roles in self.families.items():
            unknown = set(roles) - set(ROLES)
            if unknown:
                raise ModelError(
                    f"prompt book: unknown role(s) {sorted(unknown)} for family {fam!r}; roles: {ROLES}"
                )

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromptBook:
        if path is None:
            text = resources.files("lpca_models").joinpath("prompts.toml").read_text()
        else:
            text = Path(path).read_text()
        return cls(tomllib.loads(text))

    def get(self, family: str, role: str) -> str:
        if role not in ROLES:
            raise ModelError(f"unknown prompt role {role!r}; roles: {ROLES}")
        return self.families.get(family, {}).get(role, self.default[role])


@dataclass(frozen=True)
class Turn:
    """One generation request: a role prompt filled for one agent in one episode."""

    family: str
    role: str
    fields: dict[str, str]
    conditioning: Conditioning = field(default_factory=Conditioning)


class LMAgent:
    """Writes messages and answers with a `Backend`. Every method is batched over turns."""

    def __init__(
        self,
        backend: Backend,
        prompts: PromptBook | None = None,
        *,
        max_new_tokens: int = 96,
        sampling: Sampling = GREEDY,
    ) -> None:
        self.backend = backend
        self.prompts = prompts or PromptBook.load()
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling

    def prompt(self, turn: Turn, add_generation_prompt: bool = True) -> str:
        """The chat prompt of a turn (system + user message; open for the reply unless told not to)."""
        template = self.prompts.get(turn.family, turn.role)
        try:
            user = template.format(**turn.fields)
        except KeyError as e:
            raise ModelError(f"prompt for {turn.family}/{turn.role} needs field {e.args[0]!r}") from None
        system = self.prompts.get(turn.family, "system")
        return self.backend.chat(
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            add_generation_prompt=add_generation_prompt,
        )

    def sender_prompt(self, family: str, view: str, role: str = "latent_sender") -> str:
        """The chat prompt of a sender role for a family and view.

        For ``latent_sender`` the family's ``latent_reply`` starts the assistant's turn, so
        the last position is about to state the information.
        """
        text = self.prompt(Turn(family, role, {"view": view}))
        if role == "latent_sender":
            text += self.prompts.get(family, "latent_reply")
        return text

    def sender_states_batch(
        self, items: Sequence[tuple[str, str]], layer: int, tail: int = 0
    ) -> list[np.ndarray]:
        """`sender_states` for many ``(family, view)`` pairs in one batched forward."""
        prompts = [self.sender_prompt(family, view) for family, view in items]
        return self.backend.sender_states_batch(prompts, layer, tail)

    def sender_states(self, family: str, view: str, layer: int, tail: int = 0) -> np.ndarray:
        """The sender's hidden states ``[T, d]`` after block `layer` over its ``latent_sender`` prompt
        (the last `tail` positions; 0: all). The one place serving (the latent channels) and
        training (episode datasets) read a sender from, so the two cannot drift apart."""
        return self.backend.sender_states(self.sender_prompt(family, view), layer, tail)

    def run(
        self, turns: Sequence[Turn], max_new_tokens: int | None = None, stop: Sequence[str] = ("\n\n",)
    ) -> list[Generation]:
        """Generate for every turn in one batched call (KV caches included: each row continues its own).

        Generation stops at a blank line by default: every role asks for one short piece of text.
        """
        if not turns:
            return []
        prompts = [self.prompt(t) for t in turns]
        conds = [replace(t.conditioning, text="") for t in turns]
        n = max_new_tokens or self.max_new_tokens
        return self.backend.generate(prompts, conds, max_new_tokens=n, sampling=self.sampling)

    def received_text(self, family: str, texts: Sequence[str], latent: bool = False) -> str:
        """The {received} block of a receiver prompt."""
        item = self.prompts.get(family, "received_item")
        out = "".join(item.format(text=t) for t in texts)
        if latent:
            out += self.prompts.get(family, "received_latent").format(marker=PREFIX_MARKER)
        return out

    def answer_turn(self, family: str, view: str, conditioning: Conditioning) -> Turn:
        """A receiver turn: text conditioning goes into the prompt, latent conditioning to the backend."""
        latent = ""
        if conditioning.prefix is not None:
            primer = conditioning.primer
            line = self.prompts.get(family, "received_latent") if primer is None else primer + "{marker}\n"
            latent = line.format(marker=PREFIX_MARKER)
        received = conditioning.text + latent
        return Turn(family, "receiver", {"view": view, "received": received}, conditioning)


_LEAD = re.compile(r"^\s*(?:\*\*)?(?:final\s+)?answer\s*(?:is)?\s*[:=-]?\s*(?:\*\*)?\s*", re.IGNORECASE)


def extract_answer(text: str, max_chars: int = 400) -> str:
    """The answer part of a model's reply: the first paragraph, without a leading "Answer:"."""
    body = text.strip().split("\n\n", 1)[0].strip()
    body = _LEAD.sub("", body, count=1)
    return body[:max_chars]
