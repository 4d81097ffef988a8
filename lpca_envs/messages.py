"""`Message` and `Budget`: what crosses between agents and how much may cross."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from lpca_envs._records import fast_init
from lpca_envs.errors import BudgetError, MessageError

#: Longest metadata value accepted on a message; metadata is for small labels
#: (codec id, model fingerprint), not for smuggling a payload past the bit count.
MAX_META_ITEMS = 16
MAX_META_CHARS = 256

_EMPTY_META: Mapping[str, str] = MappingProxyType({})


@fast_init
@dataclass(frozen=True, slots=True)
class Message:
    """One message from `sender` to `recipients`.

    ``payload`` is always bytes: text travels as UTF-8, latent vectors as a codec's
    serialization. ``bits`` is the exact cost on the wire: ``8 * len(payload)``
    unless a codec packs tighter (k indices from K entries cost ``k*ceil(log2 K)``),
    in which case ``len(payload) == ceil(bits / 8)`` must still hold.
    """

    sender: str
    recipients: tuple[str, ...]
    payload: bytes
    kind: str = "text"
    bits: int = -1
    meta: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        recipients = self.recipients
        if (  # fast path, the common message: exact types, computed bits, no metadata
            self.bits == -1
            and type(self.payload) is bytes
            and type(recipients) is tuple
            and (self.meta is None or self.meta is _EMPTY_META)
            and type(self.sender) is str
            and self.sender
            and type(self.kind) is str
            and self.kind
            and recipients
        ):
            for r in recipients:
                if type(r) is not str or not r:
                    break
            else:
                object.__setattr__(self, "bits", 8 * len(self.payload))
                object.__setattr__(self, "meta", _EMPTY_META)
                return
        self._check()

    def _check(self) -> None:
        if not isinstance(self.sender, str) or not self.sender:
            raise MessageError(f"Message.sender must be a non-empty str, got {self.sender!r}")
        recipients = self.recipients
        if isinstance(recipients, str):
            recipients = (recipients,)
            object.__setattr__(self, "recipients", recipients)
        elif not isinstance(recipients, tuple):
            try:
                recipients = tuple(recipients)
            except TypeError:
                raise MessageError(
                    f"Message.recipients must be a tuple of agent names, got {recipients!r}"
                ) from None
            object.__setattr__(self, "recipients", recipients)
        if not recipients or not all(isinstance(r, str) and r for r in recipients):
            raise MessageError(
                f"Message.recipients must be a non-empty tuple of agent names, got {recipients!r}"
            )
        if type(self.payload) is not bytes:
            if isinstance(self.payload, bytearray | memoryview):
                object.__setattr__(self, "payload", bytes(self.payload))
            else:
                raise MessageError(
                    "Message.payload must be bytes (encode text as UTF-8, tensors with a "
                    f"codec), got {type(self.payload).__name__}"
                )
        if not isinstance(self.kind, str) or not self.kind:
            raise MessageError(f"Message.kind must be a non-empty str, got {self.kind!r}")
        n = len(self.payload)
        if self.bits == -1:
            object.__setattr__(self, "bits", 8 * n)
        elif not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise MessageError(f"Message.bits must be an int, got {type(self.bits).__name__}")
        elif math.ceil(self.bits / 8) != n or self.bits < 0:
            raise MessageError(
                f"Message.bits={self.bits} does not fit a payload of {n} bytes: "
                f"expected a value in ({8 * n - 8}, {8 * n}]" + (" or 0" if n == 0 else "")
            )
        if self.meta is None or self.meta is _EMPTY_META:
            object.__setattr__(self, "meta", _EMPTY_META)
        else:
            if not isinstance(self.meta, Mapping):
                raise MessageError(f"Message.meta must be a mapping, got {type(self.meta).__name__}")
            if len(self.meta) > MAX_META_ITEMS:
                raise MessageError(f"Message.meta holds at most {MAX_META_ITEMS} items, got {len(self.meta)}")
            for k, v in self.meta.items():
                if not (isinstance(k, str) and isinstance(v, str)):
                    raise MessageError(f"Message.meta must map str to str, got {k!r}: {v!r}")
                if len(k) + len(v) > MAX_META_CHARS:
                    raise MessageError(f"Message.meta item {k!r} is longer than {MAX_META_CHARS} characters")
            object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @classmethod
    def text(cls, sender: str, recipients: str | tuple[str, ...], text: str, **meta: str) -> Message:
        """A text message: `text` encoded as UTF-8, 8 bits per byte."""
        if not isinstance(text, str):
            raise MessageError(f"Message.text expects str text, got {type(text).__name__}")
        payload = text.encode("utf-8")
        if cls is Message and not meta and type(sender) is str and sender and type(recipients) is tuple:
            # What __init__ and __post_init__'s fast path do for these arguments, set directly.
            for r in recipients:
                if type(r) is not str or not r:
                    break
            else:
                if recipients:
                    m = _new_message(Message)
                    _set_sender(m, sender)
                    _set_recipients(m, recipients)
                    _set_payload(m, payload)
                    _set_kind(m, "text")
                    _set_bits(m, 8 * len(payload))
                    _set_meta(m, _EMPTY_META)
                    return m
        return cls(sender, recipients, payload, "text", -1, meta or _EMPTY_META)

    def as_text(self) -> str:
        """The payload decoded as UTF-8 (undecodable bytes replaced)."""
        return self.payload.decode("utf-8", errors="replace")


_new_message = object.__new__
_set_sender = Message.__dict__["sender"].__set__
_set_recipients = Message.__dict__["recipients"].__set__
_set_payload = Message.__dict__["payload"].__set__
_set_kind = Message.__dict__["kind"].__set__
_set_bits = Message.__dict__["bits"].__set__
_set_meta = Message.__dict__["meta"].__set__


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on what may cross in one episode. ``None`` means unlimited.

    ``max_rounds`` is the number of steps in which messages may be sent; the
    environment allows one more, answer-only, step after the last round.
    """

    max_bits_per_message: int | None = None
    max_bits_per_episode: int | None = None
    max_rounds: int = 1

    def __post_init__(self) -> None:
        for name in ("max_bits_per_message", "max_bits_per_episode"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise BudgetError(f"Budget.{name} must be None or an int >= 0, got {v!r}")
        r = self.max_rounds
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise BudgetError(f"Budget.max_rounds must be an int >= 0, got {r!r}")

    def replace(self, **changes: int | None) -> Budget:
        unknown = set(changes) - {"max_bits_per_message", "max_bits_per_episode", "max_rounds"}
        if unknown:
            raise BudgetError(f"unknown Budget field(s) {sorted(unknown)}")
        return Budget(**{**_budget_fields(self), **changes})  # type: ignore[arg-type]


def _budget_fields(b: Budget) -> dict[str, int | None]:
    return {
        "max_bits_per_message": b.max_bits_per_message,
        "max_bits_per_episode": b.max_bits_per_episode,
        "max_rounds": b.max_rounds,
    }
