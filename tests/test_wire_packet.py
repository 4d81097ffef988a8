"""The packet format: documented offsets, round trips, forward compatibility, and each typed rejection."""

import struct

import crc32c
import numpy as np
import pytest

from lpca_protocols import codecs, wire
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.session import Endpoint

EP = Endpoint(b"M" * 32, b"T" * 32, "float32", "alice")
OTHER_MODEL = Endpoint(b"N" * 32, b"T" * 32, "float32", "mallory")
OTHER_TOKENIZER = Endpoint(b"M" * 32, b"U" * 32, "float32", "mallory")


def refresh_checksum(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", crc32c.crc32c(data[:-4]))


def state_packet(sender=None, codec="q8_0", sections=(), **kw):
    s = sender or wire.Sender(EP, "bob")
    h = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    return s.packet(wire.Kind.RESUME, {"hidden": h}, codec=codec, layer=24, sections=sections, **kw)[1]


def test_documented_fixed_header_offsets():
    s = wire.Sender(EP, "bob", session=bytes(range(16)))
    data = state_packet(s, span=77)
    assert data[0:4] == b"LPCA"
    assert data[4] == 1 and data[5] == 0  # version 1.0
    assert data[6] == wire.Kind.RESUME
    total, header_len = struct.unpack_from("<II", data, 8)
    assert total == len(data)
    assert data[16:32] == bytes(range(16))  # session id
    assert struct.unpack_from("<Q", data, 32)[0] == 1  # first sequence number
    assert struct.unpack_from("<Q", data, 40)[0] > 0  # timestamp, ns
    assert data[48:80] == b"M" * 32 and data[80:112] == b"T" * 32  # identity starts at 48
    span, layer, codec_id = struct.unpack_from("<QHH", data, 112)
    assert (span, layer, codec_id) == (77, 24, 0x0010)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == crc32c.crc32c(data[:-4])
    assert data[header_len] == 1  # payload: one tensor


def test_round_trip_every_field():
    sec = [
        wire.Section(
            wire.SectionType.TRAJECTORY, {"step": 3, "entropy": np.array([0.5, 0.25]), "note": "hé"}
        ),
        wire.Section(wire.SectionType.VITALITY, {"alive": 1.0, "ids": np.array([1, 2, 3])}),
        wire.Section(wire.SectionType.SEMANTIC, {"topic": "colours", "confidence": 0.75}),
    ]
    s = wire.Sender(EP, "bob")
    seq, data = s.packet(
        wire.Kind.RESUME,
        {"hidden": np.ones((2, 64), np.float16)},
        codec="rotq:bits=3,seed=5",
        layer=7,
        sections=sec,
        span=9,
    )
    p = wire.decode(data)
    assert (p.kind, p.seq, p.session, p.version) == (wire.Kind.RESUME, seq, s.session, wire.VERSION)
    i = p.identity
    assert (i.source, i.target, i.layer, i.span, i.weight_quant) == ("alice", "bob", 7, 9, "float32")
    assert codecs.from_wire(i.codec_id, i.codec_params).spec == "rotq:bits=3,seed=5,rotation=auto"
    t = p.tensor("hidden")
    assert t.shape == (2, 64) and t.dtype == wire.DType.FLOAT16
    assert p.section(wire.SectionType.TRAJECTORY).fields["note"] == "hé"
    assert p.section(wire.SectionType.TRAJECTORY).fields["entropy"].tolist() == [0.5, 0.25]
    assert p.section(wire.SectionType.VITALITY).fields["ids"].tolist() == [1, 2, 3]
    assert p.section(wire.SectionType.SEMANTIC).fields["confidence"] == 0.75
    a = wire.Receiver(EP).array(p, "hidden")
    assert a.dtype == np.float16 and ((a.astype(np.float32) - 1) ** 2).mean() < 0.04  # 3-bit rotq
    assert wire.encode(p) == data  # re-encoding an admitted packet gives the same bytes


def test_unknown_sections_are_skipped_unless_critical():
    ok = state_packet(
        sections=[wire.Section(0x0777, {"future": 1}), wire.Section(wire.SectionType.SEMANTIC, {})]
    )
    p = wire.decode(ok)
    assert [s.type for s in p.sections] == [wire.SectionType.SEMANTIC]
    bad = state_packet(sections=[wire.Section(0x8777, {"must_understand": 1})])
    with pytest.raises(wire.UnsupportedSectionError, match="0x8777"):
        wire.decode(bad)


def test_newer_minor_version_is_accepted_other_major_is_not():
    data = bytearray(state_packet())
    data[5] = 9  # 1.9: same layout, maybe more non-critical sections
    assert wire.decode(refresh_checksum(bytes(data))).version == (1, 9)
    data[4] = 2
    with pytest.raises(wire.VersionMismatchError, match=r"2\.9"):
        wire.decode(refresh_checksum(bytes(data)))


def test_corrupted_checksum_and_corrupted_body():
    data = bytearray(state_packet())
    data[-1] ^= 0xFF
    with pytest.raises(wire.ChecksumError):
        wire.decode(bytes(data))
    data = bytearray(state_packet())
    data[200] ^= 0x01
    with pytest.raises(wire.ChecksumError):
        wire.decode(bytes(data))


def test_fingerprint_mismatches_are_rejected_before_the_payload():
    rx = wire.Receiver(EP)
    with pytest.raises(wire.ModelMismatchError, match="mallory"):
        rx.receive(state_packet(wire.Sender(OTHER_MODEL)))
    with pytest.raises(wire.TokenizerMismatchError):
        rx.receive(state_packet(wire.Sender(OTHER_TOKENIZER)))
    bf16 = Endpoint(b"M" * 32, b"T" * 32, "bfloat16", "alice")
    with pytest.raises(wire.ModelMismatchError, match="bfloat16"):
        rx.receive(state_packet(wire.Sender(bf16)))
    # ModelMismatchError is also the model layer's FingerprintMismatchError
    from lpca_models import FingerprintMismatchError

    assert issubclass(wire.ModelMismatchError, FingerprintMismatchError)
    assert len(rx.guard) == 0  # refused packets leave no replay state behind


def test_duplicate_and_stale_packets():
    rx = wire.Receiver(EP, guard=wire.ReplayGuard(window=8))
    s = wire.Sender(EP)
    first = state_packet(s)
    rx.receive(first)
    with pytest.raises(wire.DuplicatePacketError):
        rx.receive(first)
    later = [state_packet(s) for _ in range(10)]
    for d in later[::-1][:8]:  # out of order within the window is fine
        rx.receive(d)
    with pytest.raises(wire.StalePacketError, match="window"):
        rx.receive(later[0])  # seq 2, the window now covers 4..11
    old = state_packet(s)
    p = wire.decode(old)
    with pytest.raises(wire.StalePacketError, match="timestamp"):
        rx.guard.check(p.session, p.seq, p.timestamp_ns - int(400e9))
    # another session is independent
    rx.receive(state_packet(wire.Sender(EP)))


def test_replay_guard_memory_is_bounded():
    g = wire.ReplayGuard(window=64, max_sessions=3, max_age_s=10)
    now = 10**18
    for i in range(3):
        g.check(bytes([i]) * 16, 1, now, now)
    with pytest.raises(wire.OverloadedError):
        g.check(b"x" * 16, 1, now, now)
    later = now + int(11e9)  # the three sessions expired: their packets would be stale anyway
    g.check(b"x" * 16, 1, later, later)
    assert len(g) == 1


def test_unknown_codec_and_missing_codebook_are_packet_codec_errors():
    rx = wire.Receiver(EP)
    p = wire.decode(state_packet())
    bad = pk.Packet(
        p.kind,
        p.session,
        p.seq,
        pk.Identity(**{**p.identity.__dict__, "codec_id": 0x7777}),
        p.sections,
        p.tensors,
        p.timestamp_ns,
    )
    with pytest.raises(wire.PacketCodecError, match="0x7777"):
        rx.receive(wire.encode(bad))
    vq = pk.Packet(
        p.kind,
        p.session,
        p.seq + 1,
        pk.Identity(**{**p.identity.__dict__, "codec_id": 0x0030, "codec_params": b"\1" * 16}),
        p.sections,
        p.tensors,
        p.timestamp_ns,
    )
    with pytest.raises(wire.PacketCodecError, match="CodebookStore"):
        rx.receive(wire.encode(vq))


def test_payload_limits():
    rx = wire.Receiver(EP, max_elements=100)
    p = rx.receive(state_packet())
    with pytest.raises(wire.PayloadTooLargeError, match="192 elements"):
        rx.array(p, "hidden")
    with pytest.raises(wire.FrameTooLargeError):
        wire.decode(state_packet(), max_packet=100)
    t = p.tensor("hidden")
    lying = pk.Packet(p.kind, p.session, p.seq, p.identity, (), (pk.Tensor("hidden", (4, 64), t.data),))
    with pytest.raises(wire.PacketCodecError, match="bytes"):
        wire.Receiver(EP).array(wire.decode(wire.encode(lying)), "hidden")


def test_hostile_lengths_never_allocate():
    data = bytearray(state_packet())
    struct.pack_into("<I", data, 8, 0xFFFFFFF0)  # total length: 4 GiB
    with pytest.raises(wire.FrameTooLargeError):
        wire.decode(bytes(data))
    data = bytearray(state_packet())
    struct.pack_into("<I", data, 12, len(data) + 5)  # header longer than the packet
    with pytest.raises(wire.MalformedPacketError, match="inconsistent"):
        wire.decode(refresh_checksum(bytes(data)))
    # a tensor that claims 4 GiB of data inside a 1 KB packet
    p = wire.decode(state_packet())
    raw = bytearray(wire.encode(p))
    hl = struct.unpack_from("<I", raw, 12)[0]
    name_len = raw[hl + 1]
    off = hl + 2 + name_len + 2 + 4 * 2  # count, name length, name, dtype, ndim, 2 dims
    struct.pack_into("<I", raw, off, 0xFFFFFFFF)
    with pytest.raises(wire.MalformedPacketError, match="only"):
        wire.decode(refresh_checksum(bytes(raw)))


def test_encoder_refuses_what_the_decoder_would():
    s = wire.Sender(EP)
    with pytest.raises(wire.MalformedPacketError, match="255"):
        wire.Sender(Endpoint(b"M" * 32, b"T" * 32, "f", "h" * 300)).packet(wire.Kind.PING)
    with pytest.raises(wire.MalformedPacketError, match="1-D"):
        s.packet(wire.Kind.PING, sections=[wire.Section(1, {"m": np.zeros((2, 2))})])
    with pytest.raises(wire.MalformedPacketError, match="tensors"):
        s.packet(wire.Kind.PING, {str(i): np.zeros(4, np.float32) for i in range(9)})
