"""Typed errors of the wire protocol and transport. Each rejection has a stable code on the wire.

A receiver answers a packet it refuses with a REJECT packet carrying the error's
``code`` and message; the client raises the same class. Codes are part of the
protocol (docs/wire.md) and never change meaning.
"""

from __future__ import annotations

from lpca_envs.errors import LPCAError
from lpca_models.errors import FingerprintMismatchError


class WireError(LPCAError, ValueError):
    """Base class of every packet and transport error."""

    code = 0


class MalformedPacketError(WireError):
    """The bytes are not a well-formed packet (magic, lengths, bounds, field encodings)."""

    code = 1


class ChecksumError(WireError):
    """The CRC32C at the end of the packet does not match its contents."""

    code = 2


class VersionMismatchError(WireError):
    """The packet's protocol major version is not one this receiver speaks."""

    code = 3


class ModelMismatchError(WireError, FingerprintMismatchError):
    """The packet's model fingerprint (or weight quantization) differs from the receiver's model."""

    code = 4


class TokenizerMismatchError(WireError, FingerprintMismatchError):
    """The packet's tokenizer fingerprint differs from the receiver's tokenizer."""

    code = 5


class ReplayError(WireError):
    """Base of the replay-protection rejections."""

    code = 0


class DuplicatePacketError(ReplayError):
    """This (session, sequence number) was already accepted."""

    code = 6


class StalePacketError(ReplayError):
    """The sequence number fell behind the replay window, or the timestamp is too old (or too new)."""

    code = 7


class PacketCodecError(WireError):
    """The packet names an unknown codec, bad codec parameters, or a codebook this host lacks."""

    code = 8


class UnsupportedSectionError(WireError):
    """The packet holds a critical section type this receiver does not understand."""

    code = 9


class FrameTooLargeError(WireError):
    """A frame announces more bytes than the receiver's maximum frame size."""

    code = 10


class OverloadedError(WireError):
    """The receiver is at capacity (request queue or session table full); retry later."""

    code = 11


class RemoteComputeError(WireError):
    """The receiver accepted the packet but could not compute the answer (e.g. a bad layer)."""

    code = 12


class TransportTimeoutError(WireError, TimeoutError):
    """No response arrived within the timeout."""

    code = 13


class ConnectionClosedError(WireError, ConnectionError):
    """The connection closed before the response arrived."""

    code = 14


class PayloadTooLargeError(WireError):
    """A tensor would decode to more elements than the receiver allows."""

    code = 15


class ShapeMismatchError(WireError):
    """A tensor's name, rank or shape is not one the receiver's model takes (e.g. another hidden size)."""

    code = 16


ERRORS: dict[int, type[WireError]] = {
    cls.code: cls
    for cls in (
        MalformedPacketError,
        ChecksumError,
        VersionMismatchError,
        ModelMismatchError,
        TokenizerMismatchError,
        DuplicatePacketError,
        StalePacketError,
        PacketCodecError,
        UnsupportedSectionError,
        FrameTooLargeError,
        OverloadedError,
        RemoteComputeError,
        TransportTimeoutError,
        ConnectionClosedError,
        PayloadTooLargeError,
        ShapeMismatchError,
    )
}


def error_for_code(code: int, message: str) -> WireError:
    """The typed error a REJECT with `code` stands for (a plain `WireError` for unknown codes)."""
    cls = ERRORS.get(code)
    if cls is None:
        err = WireError(f"rejected with unknown code {code}: {message}")
        err.code = code
        return err
    return cls(message)
