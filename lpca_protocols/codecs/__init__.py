"""Codecs: float arrays <-> bytes, each with an exact bit count and a stable wire id.

    from lpca_protocols import codecs
    c = codecs.get("q8_0")                  # or codecs.get("rotq:bits=3,seed=7")
    data = c.encode(hidden)                 # bytes, len == ceil(c.bits(hidden.shape) / 8)
    back = c.decode(data, hidden.shape)     # float32
    msg = c.message(hidden, "alice", "bob") # a Message whose bits == c.bits(shape)

Built-ins: fp32, fp16, bf16, q8_0, q4_0 (ggml layouts), rotq (rotation + Lloyd-Max),
rotq-tcq (rotation + trellis-coded quantization: the same bits, ~0.25 bit closer to the
bound), and the learned vq, rvq, fsq (vector-quantize-pytorch) and pq (faiss), which need a
trained `Codebook`. Importing this package is light: numpy only; torch and faiss load
inside the learned codecs when they train.
"""

from __future__ import annotations

from typing import Any

from lpca_protocols.codecs.base import MAX_ELEMENTS, MAX_NDIM, MAX_PARAMS_BYTES, Codec, check_shape
from lpca_protocols.codecs.errors import CodebookError, CodecError, UnknownCodecError
from lpca_protocols.codecs.floats import BF16, FP16, FP32
from lpca_protocols.codecs.ggml import Q4_0, Q8_0
from lpca_protocols.codecs.index import IndexCodec
from lpca_protocols.codecs.learned import FSQ, PQ, RVQ, VQ, Codebook, CodebookStore
from lpca_protocols.codecs.rotq import RotQ
from lpca_protocols.codecs.tcq import RotTCQ

_BY_NAME: dict[str, type[Codec]] = {}
_BY_ID: dict[int, type[Codec]] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Make a codec class known by name and wire id (third-party ids: 0x8000..0xffff)."""
    cid = cls.codec_id
    if not isinstance(cid, int) or not 0 < cid <= 0xFFFF:
        raise CodecError(f"codec_id must be an int in 1..0xffff, got {cid!r}")
    for table, key in ((_BY_NAME, cls.name), (_BY_ID, cid)):
        other = table.get(key)  # type: ignore[arg-type]
        if other is not None and other is not cls:
            raise CodecError(f"codec {key!r} is already registered by {other.__module__}.{other.__name__}")
    _BY_NAME[cls.name] = cls
    _BY_ID[cid] = cls
    return cls


for _cls in (FP32, FP16, BF16, Q8_0, Q4_0, RotQ, RotTCQ, VQ, RVQ, FSQ, PQ, IndexCodec):
    register(_cls)


def names() -> list[str]:
    """Names of the registered codecs."""
    return sorted(_BY_NAME)


def get(spec: str | Codec, **params: Any) -> Codec:
    """A codec from a name or spec (``"rotq:bits=3,seed=7"``); keyword `params` override the spec's.

    Learned codecs take ``codebook=`` (a `Codebook`) instead of spec parameters.
    """
    if isinstance(spec, Codec):
        return spec
    name, _, rest = str(spec).partition(":")
    cls = _BY_NAME.get(name)
    if cls is None:
        raise UnknownCodecError(f"unknown codec {name!r}; known codecs: {names()}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise CodecError(f"codec spec items are key=value, got {item!r} in {spec!r}")
        kwargs[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    kwargs.update(params)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CodecError(f"bad parameters for codec {name!r}: {exc}") from None


def from_wire(codec_id: int, params: bytes, *, codebooks: CodebookStore | None = None) -> Codec:
    """The codec a packet names by id and parameter bytes; learned codecs look up `codebooks`."""
    cls = _BY_ID.get(codec_id)
    if cls is None:
        known = ", ".join(f"0x{i:04x}={c.name}" for i, c in sorted(_BY_ID.items()))
        raise UnknownCodecError(f"unknown codec id 0x{codec_id:04x}; known: {known}")
    if len(params) > MAX_PARAMS_BYTES:
        raise CodecError(f"codec parameters are at most {MAX_PARAMS_BYTES} bytes, got {len(params)}")
    return cls.from_params(bytes(params), codebooks=codebooks)


__all__ = [
    "BF16",
    "FP16",
    "FP32",
    "FSQ",
    "MAX_ELEMENTS",
    "MAX_NDIM",
    "PQ",
    "Q4_0",
    "Q8_0",
    "RVQ",
    "VQ",
    "Codebook",
    "CodebookError",
    "CodebookStore",
    "Codec",
    "CodecError",
    "IndexCodec",
    "RotQ",
    "UnknownCodecError",
    "check_shape",
    "from_wire",
    "get",
    "names",
    "register",
]
