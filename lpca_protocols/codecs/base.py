"""`Codec`: tensor <-> bytes with an exact bit count.

Every codec turns a float array into bytes and back. ``bits(shape)`` is the exact
cost of an encoded array of that shape, and ``len(encode(a)) == ceil(bits / 8)``,
so a `Message` built from the bytes carries ``bits=codec.bits(shape)``. Codecs
are identified on the wire by a stable 16-bit ``codec_id`` plus a small byte
string of parameters (``params()``), from which `from_params` rebuilds an equal
codec on the receiving host.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lpca_envs.messages import Message
from lpca_protocols.codecs.errors import CodecError

#: Upper bounds that keep a hostile shape from allocating gigabytes.
MAX_NDIM = 8
MAX_ELEMENTS = 1 << 28
MAX_PARAMS_BYTES = 1024

Shape = tuple[int, ...]


class Codec(ABC):
    """Serialize float arrays to bytes and back, with an exact bit count."""

    #: Stable wire id (u16). Built-ins use 0x0001..0x00ff; third parties 0x8000 and up.
    codec_id: ClassVar[int]
    #: Short name used in specs (``"q8_0"``, ``"rotq:bits=3"``).
    name: ClassVar[str]

    @abstractmethod
    def encode(self, array: Any) -> bytes:
        """Serialize `array` (any float dtype, any shape the codec accepts)."""

    @abstractmethod
    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        """The float32 array of `shape` that `data` encodes (a new, writable array)."""

    @abstractmethod
    def bits(self, shape: Sequence[int]) -> int:
        """Exact number of bits `encode` produces for an array of `shape`."""

    def params(self) -> bytes:
        """Parameters the receiver needs to rebuild this codec (recorded in packets)."""
        return b""

    @classmethod
    def from_params(cls, params: bytes, **context: Any) -> Codec:
        """Rebuild a codec from `params()`; `context` may carry a codebook store."""
        if params:
            raise CodecError(f"codec {cls.name!r} takes no parameters, got {len(params)} bytes")
        return cls()

    @property
    def spec(self) -> str:
        """Human-readable name with parameters, e.g. ``rotq:bits=3,seed=0``."""
        return self.name

    def nbytes(self, shape: Sequence[int]) -> int:
        """Length of the encoding of an array of `shape`: ``ceil(bits / 8)``."""
        return math.ceil(self.bits(shape) / 8)

    def message(
        self, array: Any, sender: str, recipients: str | tuple[str, ...], kind: str = "latent"
    ) -> Message:
        """`array` encoded into a `Message` whose ``bits`` is this codec's exact count."""
        a = np.asarray(array)
        payload = self.encode(a)
        meta = {"codec": self.spec, "shape": "x".join(map(str, a.shape))}
        return Message(sender, recipients, payload, kind, self.bits(a.shape), meta)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), self.params()))

    def __repr__(self) -> str:
        return f"<codec {self.spec} id=0x{self.codec_id:04x}>"

    # -- helpers for implementations -------------------------------------------------
    def _check_data(self, data: bytes | bytearray | memoryview, shape: Sequence[int]) -> Shape:
        shp = check_shape(shape)
        expected = self.nbytes(shp)
        if len(data) != expected:
            raise CodecError(
                f"{self.spec}: an array of shape {shp} encodes to {expected} bytes, got {len(data)}"
            )
        return shp


def check_shape(shape: Sequence[int]) -> Shape:
    """`shape` as a tuple of ints within `MAX_NDIM` and `MAX_ELEMENTS`."""
    try:
        shp = tuple(map(int, shape))  # map, not a generator: this runs on every decode
    except (TypeError, ValueError):
        raise CodecError(f"shape must be a sequence of ints, got {shape!r}") from None
    if len(shp) > MAX_NDIM or (shp and min(shp) < 0):
        raise CodecError(f"shape must have at most {MAX_NDIM} non-negative sizes, got {shp}")
    if math.prod(shp) > MAX_ELEMENTS:
        raise CodecError(f"shape {shp} has more than {MAX_ELEMENTS} elements")
    return shp


def as_float_array(array: Any, codec: str, *, finite: bool = True) -> np.ndarray:
    """`array` as a C-contiguous float32 array; rejects non-float input and (optionally) NaN/inf."""
    a = array if type(array) is np.ndarray else np.asarray(array)
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        if a.dtype.kind != "f":
            raise CodecError(f"{codec} encodes float arrays, got {a.dtype} {a.shape}")
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim > MAX_NDIM or a.size > MAX_ELEMENTS:
        raise CodecError(f"{codec}: shape {a.shape} exceeds {MAX_NDIM} dims or {MAX_ELEMENTS} elements")
    if finite and a.size and not np.isfinite(a).all():
        raise CodecError(f"{codec} cannot encode NaN or infinite values (array of shape {a.shape})")
    return a
