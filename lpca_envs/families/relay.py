"""Secret relay: A holds one or more secret words, B must say them.

The simplest split-information task: nothing to compute, only to carry. It is the
family where even a 135M-parameter model's text ceiling sits clearly above its
no-communication floor, so every channel can be told apart from chance on it.

info_bits: the secrets are drawn uniformly and independently from a public list
of V candidate words per slot, so what must cross is ``n * log2(V)`` bits.

| level | secrets | candidates per secret | chance |
|-------|---------|-----------------------|--------|
| 0     | 1 colour | 8                    | 1/8    |
| 1     | colour + animal | 8 each        | 1/64   |
| 2     | colour + animal + fruit | 8 each | 1/512 |
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lpca_envs._records import fast_init
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance, Verdict

SLOTS = (
    ("colour", ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")),
    ("animal", ("cat", "dog", "horse", "rabbit", "fox", "owl", "frog", "goat")),
    ("fruit", ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum")),
)
_WORD = re.compile(r"[a-z]+")
_SLOTS = dict(SLOTS)
_CANDIDATES = {slot: frozenset(cands) for slot, cands in SLOTS}
_CORRECT = Verdict(True, 1.0, "correct")
_ANSWERERS = ("B",)
# Per level n-1: the slots said, B's view and info_bits (what does not depend on the draw).
_SLOT_TEXT = [" and the ".join(f"secret {slot}" for slot, _ in SLOTS[:n]) for n in (1, 2, 3)]
_VIEW_B = [
    f"Your partner knows the {slots}. What is the {slots}? Reply with the word only." for slots in _SLOT_TEXT
]
_INFO_BITS = [n * math.log2(8) for n in (1, 2, 3)]


@fast_init
@dataclass(frozen=True, slots=True)
class RelayVerifier:
    """Every slot's word must appear, and no other candidate of that slot."""

    secrets: tuple[tuple[str, str], ...]  # (slot, word)

    def check(self, answer: str) -> Verdict:
        words = set(_WORD.findall(answer.lower()))
        wrong = []
        for slot, word in self.secrets:
            said = words & _CANDIDATES[slot]
            if said != {word}:
                wrong.append(f"{slot}: {sorted(said) or 'none'}")
        if not wrong:
            return _CORRECT
        return Verdict(False, 0.0, "wrong " + ", ".join(wrong))


class SecretRelay(TaskFamily):
    name = "SecretRelay"
    description = "A holds secret words (a colour, an animal, a fruit); B must say them."
    info_bits_doc = "n*log2(8): n secret words, each uniform over 8 public candidates"
    levels = (0, 1, 2)

    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=1)

    def sample(self, rng: random.Random, level: int) -> Task:
        n = self.check_level(level) + 1
        below = rng._randbelow  # rng.choice(cands) is cands[below(len(cands))]
        secrets = tuple([(slot, cands[below(len(cands))]) for slot, cands in SLOTS[:n]])
        said = ", ".join([f"the secret {slot} is {w}" for slot, w in secrets])
        # The candidate lists are public (module docstring) but not repeated in the view:
        # small models copy lists they are shown instead of answering.
        views = {
            "A": f"You know: {said}.\nYour partner must say it but does not know it.",
            "B": _VIEW_B[n - 1],
        }
        oracle_text = "; ".join([f"{slot}: {w}" for slot, w in secrets])
        return Task(
            self.name,
            level,
            views,
            _ANSWERERS,
            _INFO_BITS[n - 1],
            RelayVerifier(secrets),
            (Utterance(1, "A", _ANSWERERS, oracle_text),),
            " ".join([w for _, w in secrets]),
            {"secrets": n, "candidates": 8},
            secrets,
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        words = set(_WORD.findall(" ".join(received).lower()))
        out = []
        slots = _SLOTS
        for slot, _ in task.state:
            cands = slots[slot]
            heard = [c for c in cands if c in words]
            out.append(heard[0] if len(heard) == 1 else rng.choice(cands))
        return " ".join(out)

    def skyline_answer(self, task: Task) -> str:
        return " ".join(w for _, w in task.state)
