"""Gymnasium spaces of the split-information environments.

Text fields use an explicit printable ASCII charset. `MessageSpace` holds
`Message` objects (or ``None`` for "no message"); its ``contains`` checks type,
sender, recipients and the per-message bit cap.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from lpca_envs.messages import Message

#: The charset of every `Text` space: printable ASCII including space, tab and newline.
PRINTABLE: frozenset[str] = frozenset(string.printable)
#: How many bytes a sampled message has at most when the budget sets no cap.
_SAMPLE_MAX_BYTES = 64


class MessageSpace(spaces.Space):
    """Messages from any of `senders` to a subset of `recipients`, at most `max_bits` each.

    ``None`` is a member: it means "no message". Sampling draws printable-text
    messages within the cap, so random policies stay inside the space.
    """

    def __init__(
        self,
        senders: Sequence[str],
        recipients: Sequence[str],
        max_bits: int | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.senders = tuple(senders)
        self.recipients = tuple(recipients)
        self.max_bits = max_bits
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        if x is None:
            return True
        if not isinstance(x, Message):
            return False
        if x.sender not in self.senders:
            return False
        if any(r not in self.recipients or r == x.sender for r in x.recipients):
            return False
        return self.max_bits is None or x.bits <= self.max_bits

    def sample(self, mask: Any = None, probability: Any = None) -> Message | None:
        rng = self.np_random
        if rng.random() < 0.25:
            return None
        sender = self.senders[int(rng.integers(len(self.senders)))]
        targets = [r for r in self.recipients if r != sender]
        if not targets:
            return None
        recipient = targets[int(rng.integers(len(targets)))]
        cap = (
            _SAMPLE_MAX_BYTES
            if self.max_bits is None
            else min(_SAMPLE_MAX_BYTES, self.max_bits // 8)
        )
        n = int(rng.integers(cap + 1))
        alphabet = np.frombuffer(string.ascii_letters.encode() + b" ", dtype=np.uint8)
        payload = bytes(alphabet[rng.integers(len(alphabet), size=n)].tolist())
        return Message(sender, (recipient,), payload)

    def __repr__(self) -> str:
        return f"MessageSpace(senders={self.senders}, recipients={self.recipients}, max_bits={self.max_bits})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MessageSpace)
            and self.senders == other.senders
            and self.recipients == other.recipients
            and self.max_bits == other.max_bits
        )

    __hash__ = None  # type: ignore[assignment]


def text_space(max_length: int) -> spaces.Text:
    return spaces.Text(max_length, min_length=0, charset=PRINTABLE)
