"""Typed errors of the codecs; each names what was expected and what arrived."""

from __future__ import annotations

from lpca_envs.errors import LPCAError


class CodecError(LPCAError, ValueError):
    """An array or byte string does not fit a codec (wrong shape, length, range or parameters)."""


class UnknownCodecError(CodecError, KeyError):
    """A codec name or id is not registered; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CodebookError(CodecError):
    """A learned codec's codebook is missing, malformed, or has another fingerprint."""
