"""The LPCA packet: binary layout, encoder and bounded parser (layout with byte offsets: docs/wire.md).

    packet = fixed header (48 bytes) | identity | sections | payload | CRC32C (4 bytes)

Everything is little-endian. The parser never trusts a length: each one is checked
against the bytes actually present before anything is sliced or allocated, so a
hostile packet costs at most its own size. Every failure is a `WireError`.
No pickle and no JSON anywhere on this path.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import crc32c
import numpy as np

from lpca_protocols.codecs.base import MAX_NDIM
from lpca_protocols.wire.errors import (
    ChecksumError,
    FrameTooLargeError,
    MalformedPacketError,
    UnsupportedSectionError,
    VersionMismatchError,
)

MAGIC = b"LPCA"
VERSION = (1, 0)
#: magic, major, minor, kind, flags, total_length, header_length, session, seq, timestamp_ns
HEADER = struct.Struct("<4sBBBBII16sQQ")
HEADER_SIZE = HEADER.size  # 48
#: The first 16 bytes are enough to frame a packet on a stream (see `peek_length`).
PREFIX_SIZE = 16
#: model fp, tokenizer fp, span id, layer, codec id, params length, 3 string lengths
IDENTITY = struct.Struct("<32s32sQHHHBBB")
SECTION = struct.Struct("<HHI")  # type, reserved, body length
CHECKSUM_SIZE = 4
MIN_PACKET = HEADER_SIZE + IDENTITY.size + 1 + CHECKSUM_SIZE
DEFAULT_MAX_PACKET = 64 << 20
NO_LAYER = 0xFFFF
CRITICAL = 0x8000

MAX_TENSORS = 8
MAX_FIELDS = 256
MAX_NAME = 64
MAX_PARAMS = 1024

FieldValue = int | float | str | np.ndarray


class Kind(enum.IntEnum):
    """What a packet asks for or answers."""

    RESUME = 1  # hidden state(s) at `layer`: run the remaining blocks and answer with a RESULT
    RESULT = 2  # the answer to a RESUME (same session and sequence number)
    REJECT = 3  # a refusal: a REJECT section with the error code and message
    PING = 4  # echo request: the tensors come back untouched in a PONG
    PONG = 5


class SectionType(enum.IntEnum):
    """Known section types. Types with the 0x8000 bit are critical: a receiver that does not
    know one must reject the packet; unknown non-critical sections are skipped."""

    TRAJECTORY = 0x0001
    VITALITY = 0x0002
    SEMANTIC = 0x0003
    RESULT = 0x0011
    REQUEST = 0x8010
    REJECT = 0x8012


class DType(enum.IntEnum):
    """The dtype the sender held a tensor in (decoding always yields float32; cast back if needed)."""

    FLOAT32 = 0
    FLOAT16 = 1
    BFLOAT16 = 2


_FIELD_I64, _FIELD_F64, _FIELD_F32S, _FIELD_I64S, _FIELD_STR = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Identity:
    """Who produced the state and how it must be read."""

    model_fingerprint: bytes = bytes(32)
    tokenizer_fingerprint: bytes = bytes(32)
    weight_quant: str = ""
    span: int = 0
    source: str = ""
    target: str = ""
    layer: int | None = None
    codec_id: int = 0x0001
    codec_params: bytes = b""


@dataclass(frozen=True)
class Section:
    """A typed section of named int / float / string / 1-D array fields."""

    type: int
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Tensor:
    """One encoded array of the payload: its codec bytes, shape and the sender's dtype."""

    name: str
    shape: tuple[int, ...]
    data: bytes
    dtype: DType = DType.FLOAT32


@dataclass(frozen=True)
class Packet:
    kind: Kind
    session: bytes
    seq: int
    identity: Identity
    sections: tuple[Section, ...] = ()
    tensors: tuple[Tensor, ...] = ()
    timestamp_ns: int = 0
    flags: int = 0
    version: tuple[int, int] = VERSION

    def section(self, type_: int) -> Section | None:
        """The first section of `type_`, or None."""
        return next((s for s in self.sections if s.type == type_), None)

    def tensor(self, name: str) -> Tensor | None:
        return next((t for t in self.tensors if t.name == name), None)


# ------------------------------------------------------------------------------------------ encode


def encode(packet: Packet) -> bytes:
    """The wire bytes of `packet` (lengths and checksum filled in)."""
    ident = _encode_identity(packet.identity)
    sections = b"".join(_encode_section(s) for s in packet.sections)
    payload = _encode_payload(packet.tensors)
    header_length = HEADER_SIZE + len(ident) + len(sections)
    total = header_length + len(payload) + CHECKSUM_SIZE
    if len(packet.session) != 16:
        raise MalformedPacketError(f"session id must be 16 bytes, got {len(packet.session)}")
    if total > 0xFFFFFFFF:
        raise FrameTooLargeError(f"a packet is at most 4 GiB, this one would be {total} bytes")
    head = HEADER.pack(
        MAGIC,
        packet.version[0],
        packet.version[1],
        int(packet.kind),
        packet.flags,
        total,
        header_length,
        packet.session,
        packet.seq,
        packet.timestamp_ns,
    )
    body = b"".join((head, ident, sections, payload))
    return body + struct.pack("<I", crc32c.crc32c(body))


def _str(s: str, what: str, limit: int = 255) -> bytes:
    b = s.encode("utf-8")
    if len(b) > limit:
        raise MalformedPacketError(f"{what} is at most {limit} bytes of UTF-8, got {len(b)}")
    return b


def _encode_identity(i: Identity) -> bytes:
    if len(i.model_fingerprint) != 32 or len(i.tokenizer_fingerprint) != 32:
        raise MalformedPacketError("model and tokenizer fingerprints must be 32 bytes (raw sha256)")
    if len(i.codec_params) > MAX_PARAMS:
        raise MalformedPacketError(f"codec params are at most {MAX_PARAMS} bytes, got {len(i.codec_params)}")
    layer = NO_LAYER if i.layer is None else i.layer
    if not 0 <= layer <= NO_LAYER:
        raise MalformedPacketError(f"layer must be in 0..{NO_LAYER - 1} or None, got {i.layer}")
    wq, src, dst = _str(i.weight_quant, "weight_quant"), _str(i.source, "source"), _str(i.target, "target")
    fixed = IDENTITY.pack(
        i.model_fingerprint,
        i.tokenizer_fingerprint,
        i.span,
        layer,
        i.codec_id,
        len(i.codec_params),
        len(wq),
        len(src),
        len(dst),
    )
    return b"".join((fixed, wq, src, dst, i.codec_params))


def _encode_section(s: Section) -> bytes:
    if len(s.fields) > MAX_FIELDS:
        raise MalformedPacketError(f"a section holds at most {MAX_FIELDS} fields, got {len(s.fields)}")
    parts = [struct.pack("<H", len(s.fields))]
    for name, value in s.fields.items():
        nb = _str(name, "field name", MAX_NAME)
        if not nb:
            raise MalformedPacketError("field names must be non-empty")
        parts.append(struct.pack("<B", len(nb)) + nb)
        if isinstance(value, bool | np.bool_):
            value = int(value)
        if isinstance(value, int | np.integer):
            parts.append(struct.pack("<Bq", _FIELD_I64, int(value)))
        elif isinstance(value, float | np.floating):
            parts.append(struct.pack("<Bd", _FIELD_F64, float(value)))
        elif isinstance(value, str):
            b = _str(value, f"field {name!r}", 0xFFFF)
            parts.append(struct.pack("<BH", _FIELD_STR, len(b)) + b)
        else:
            a = np.asarray(value)
            if a.ndim != 1:
                raise MalformedPacketError(f"array field {name!r} must be 1-D, got shape {a.shape}")
            if a.dtype.kind in "iub":
                parts.append(struct.pack("<BI", _FIELD_I64S, a.size) + a.astype("<i8").tobytes())
            elif a.dtype.kind == "f":
                parts.append(struct.pack("<BI", _FIELD_F32S, a.size) + a.astype("<f4").tobytes())
            else:
                raise MalformedPacketError(f"field {name!r}: unsupported value type {a.dtype}")
    body = b"".join(parts)
    return SECTION.pack(s.type, 0, len(body)) + body


def _encode_payload(tensors: Sequence[Tensor]) -> bytes:
    if len(tensors) > MAX_TENSORS:
        raise MalformedPacketError(f"a packet carries at most {MAX_TENSORS} tensors, got {len(tensors)}")
    parts = [struct.pack("<B", len(tensors))]
    for t in tensors:
        nb = _str(t.name, "tensor name", MAX_NAME)
        if len(t.shape) > MAX_NDIM:
            raise MalformedPacketError(f"tensor {t.name!r} has more than {MAX_NDIM} dimensions")
        parts.append(
            struct.pack(
                f"<B{len(nb)}sBB{len(t.shape)}II",
                len(nb),
                nb,
                int(t.dtype),
                len(t.shape),
                *t.shape,
                len(t.data),
            )
        )
        parts.append(t.data)
    return b"".join(parts)


# ------------------------------------------------------------------------------------------ decode


def peek_length(prefix: bytes, max_packet: int = DEFAULT_MAX_PACKET) -> int:
    """Total packet length announced by the first `PREFIX_SIZE` bytes (magic and bounds checked)."""
    if len(prefix) < PREFIX_SIZE:
        raise MalformedPacketError(f"a packet prefix is {PREFIX_SIZE} bytes, got {len(prefix)}")
    if prefix[:4] != MAGIC:
        raise MalformedPacketError(f"bad magic {bytes(prefix[:4])!r}, expected {MAGIC!r}")
    if prefix[4] != VERSION[0]:
        raise VersionMismatchError(
            f"protocol version {prefix[4]}.{prefix[5]}; this receiver speaks {VERSION[0]}.x"
        )
    total, header_length = struct.unpack_from("<II", prefix, 8)
    if total > max_packet:
        raise FrameTooLargeError(f"packet of {total} bytes exceeds the maximum of {max_packet}")
    if total < MIN_PACKET or not HEADER_SIZE + IDENTITY.size <= header_length <= total - CHECKSUM_SIZE - 1:
        raise MalformedPacketError(f"inconsistent lengths: total {total}, header {header_length}")
    return total


class _Reader:
    """Bounds-checked cursor over a memoryview; every read names what was being read."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: memoryview, pos: int, end: int):
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise MalformedPacketError(
                f"{what}: needs {n} bytes at offset {self.pos}, only {self.end - self.pos} left"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        pos = self.pos
        if pos + st.size > self.end:
            raise MalformedPacketError(
                f"{what}: needs {st.size} bytes at offset {pos}, only {self.end - pos} left"
            )
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)

    def text(self, n: int, what: str) -> str:
        try:
            return str(self.take(n, what), "utf-8")
        except UnicodeDecodeError:
            raise MalformedPacketError(f"{what} is not valid UTF-8") from None


_U8, _U16, _U32, _I64, _F64, _BB = (struct.Struct(f) for f in ("<B", "<H", "<I", "<q", "<d", "<BB"))
_SHAPES = [struct.Struct(f"<{n}I") for n in range(MAX_NDIM + 1)]


def decode(data: bytes | bytearray | memoryview, *, max_packet: int = DEFAULT_MAX_PACKET) -> Packet:
    """Parse and verify one packet: framing, version, checksum, then identity, sections and payload.

    Tensors stay encoded; `Receiver` checks compatibility and replay before decoding them.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if len(buf) < PREFIX_SIZE:
        raise MalformedPacketError(f"a packet is at least {MIN_PACKET} bytes, got {len(buf)}")
    total = peek_length(buf[:PREFIX_SIZE], max_packet)
    if total != len(buf):
        raise MalformedPacketError(f"packet announces {total} bytes but {len(buf)} arrived")
    (stored,) = _U32.unpack_from(buf, total - CHECKSUM_SIZE)
    if crc32c.crc32c(buf[: total - CHECKSUM_SIZE]) != stored:
        raise ChecksumError(f"CRC32C mismatch over {total - CHECKSUM_SIZE} bytes: the packet was corrupted")
    _, major, minor, kind, flags, _, header_length, session, seq, ts = HEADER.unpack_from(buf, 0)
    try:
        kind = Kind(kind)
    except ValueError:
        raise MalformedPacketError(f"unknown packet kind {kind}; known: {[k.name for k in Kind]}") from None
    r = _Reader(buf, HEADER_SIZE, header_length)
    identity = _decode_identity(r)
    sections = []
    while r.pos < header_length:
        stype, _, blen = r.unpack(SECTION, "section header")
        body = _Reader(buf, r.pos, r.pos + blen)
        r.take(blen, "section body")
        if stype in _KNOWN_SECTIONS:
            sections.append(Section(stype, _decode_fields(body, stype)))
        elif stype & CRITICAL:
            raise UnsupportedSectionError(
                f"critical section type 0x{stype:04x} is not understood by protocol {VERSION[0]}.{VERSION[1]}"
            )
    tensors = _decode_payload(_Reader(buf, header_length, total - CHECKSUM_SIZE))
    return Packet(kind, bytes(session), seq, identity, tuple(sections), tensors, ts, flags, (major, minor))


_KNOWN_SECTIONS = frozenset(int(t) for t in SectionType)


def _decode_identity(r: _Reader) -> Identity:
    mfp, tfp, span, layer, codec_id, nparams, nwq, nsrc, ndst = r.unpack(IDENTITY, "identity")
    if nparams > MAX_PARAMS:
        raise MalformedPacketError(f"codec params are at most {MAX_PARAMS} bytes, got {nparams}")
    wq = r.text(nwq, "weight_quant")
    src = r.text(nsrc, "source host")
    dst = r.text(ndst, "target host")
    params = bytes(r.take(nparams, "codec params"))
    return Identity(mfp, tfp, wq, span, src, dst, None if layer == NO_LAYER else layer, codec_id, params)


def _decode_fields(r: _Reader, stype: int) -> dict[str, FieldValue]:
    (count,) = r.unpack(_U16, "section field count")
    if count > MAX_FIELDS:
        raise MalformedPacketError(f"a section holds at most {MAX_FIELDS} fields, got {count}")
    out: dict[str, FieldValue] = {}
    for _ in range(count):
        (n,) = r.unpack(_U8, "field name length")
        if not 1 <= n <= MAX_NAME:
            raise MalformedPacketError(f"field names are 1..{MAX_NAME} bytes, got {n}")
        name = r.text(n, "field name")
        (tag,) = r.unpack(_U8, "field tag")
        if tag == _FIELD_I64:
            out[name] = r.unpack(_I64, name)[0]
        elif tag == _FIELD_F64:
            out[name] = r.unpack(_F64, name)[0]
        elif tag == _FIELD_STR:
            (ln,) = r.unpack(_U16, name)
            out[name] = r.text(ln, name)
        elif tag in (_FIELD_F32S, _FIELD_I64S):
            (cnt,) = r.unpack(_U32, name)
            width = 4 if tag == _FIELD_F32S else 8
            raw = r.take(cnt * width, "array field")  # bounded by the section length
            out[name] = np.frombuffer(raw, "<f4" if tag == _FIELD_F32S else "<i8").copy()
        else:
            raise MalformedPacketError(f"field {name!r} has unknown type tag {tag}")
    if r.pos != r.end:
        raise MalformedPacketError(f"section 0x{stype:04x} has {r.end - r.pos} trailing bytes")
    return out


def _decode_payload(r: _Reader) -> tuple[Tensor, ...]:
    (count,) = r.unpack(_U8, "tensor count")
    if count > MAX_TENSORS:
        raise MalformedPacketError(f"a packet carries at most {MAX_TENSORS} tensors, got {count}")
    tensors = []
    for _ in range(count):
        (n,) = r.unpack(_U8, "tensor name length")
        if n > MAX_NAME:
            raise MalformedPacketError(f"tensor names are at most {MAX_NAME} bytes, got {n}")
        name = r.text(n, "tensor name")
        dtype, ndim = r.unpack(_BB, "tensor dtype and ndim")
        if ndim > MAX_NDIM:
            raise MalformedPacketError(f"tensor {name!r} has {ndim} dimensions, at most {MAX_NDIM}")
        try:
            dt = DType(dtype)
        except ValueError:
            raise MalformedPacketError(f"tensor {name!r} has unknown dtype code {dtype}") from None
        shape = r.unpack(_SHAPES[ndim], "tensor shape")
        (nbytes,) = r.unpack(_U32, "tensor length")
        data = bytes(r.take(nbytes, "tensor data"))
        tensors.append(Tensor(name, tuple(shape), data, dt))
    if r.pos != r.end:
        raise MalformedPacketError(f"payload has {r.end - r.pos} trailing bytes")
    return tuple(tensors)
