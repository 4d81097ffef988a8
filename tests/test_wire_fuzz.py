"""Fuzzing the packet parser: random and mutated packets never crash, hang or over-allocate.

Every failure must be a `WireError`. Hypothesis runs here; the same target runs
coverage-guided under atheris in test_wire_fuzz_atheris.py.
"""

import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpca_protocols import wire
from lpca_protocols.wire.session import Endpoint

EP = Endpoint(b"M" * 32, b"T" * 32, "float32", "alice")


def _seeds() -> list[bytes]:
    s = wire.Sender(EP, "bob")
    h = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    secs = [
        wire.Section(wire.SectionType.TRAJECTORY, {"a": 1, "b": 2.5, "c": np.arange(3.0), "d": "x"}),
        wire.ResumeRequest().section(),
    ]
    out = []
    for codec in ("fp16", "q8_0", "q4_0", "rotq:bits=3", "bf16"):
        out.append(s.packet(wire.Kind.RESUME, {"hidden": h}, codec=codec, layer=3, sections=secs)[1])
    out.append(s.packet(wire.Kind.PING, {"echo": np.zeros(8, np.float32)})[1])
    return out


SEEDS = _seeds()


def _fix_checksum(data: bytes) -> bytes:
    if len(data) < 8:
        return data
    return data[:-4] + struct.pack("<I", __import__("crc32c").crc32c(data[:-4]))


def parse_all_the_way(data: bytes) -> None:
    """The whole receive path: parse, admit, decode every tensor. Only WireError may escape."""
    rx = wire.Receiver(EP, guard=wire.ReplayGuard(max_age_s=None), max_elements=1 << 16)
    try:
        p = rx.receive(data)
        for t in p.tensors:
            rx.array(p, t.name)
    except wire.WireError:
        pass


def mutate(seed: bytes, ops: list[tuple[int, int, int]], fix: bool) -> bytes:
    b = bytearray(seed)
    for kind, pos, val in ops:
        if not b:
            break
        i = pos % len(b)
        if kind == 0:
            b[i] ^= 1 << (val % 8)
        elif kind == 1:
            b[i] = val % 256
        elif kind == 2:
            del b[i : i + 1 + val % 8]
        elif kind == 3:
            b[i:i] = bytes([val % 256]) * (1 + val % 5)
        else:  # overwrite a 32-bit little-endian field: lengths, counts, shapes
            b[i : i + 4] = struct.pack("<I", [0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, val][val % 6])
    if fix and len(b) >= 16:  # keep the announced length honest so the parser goes past framing
        struct.pack_into("<I", b, 8, len(b))
    return _fix_checksum(bytes(b)) if fix else bytes(b)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes(data):
    parse_all_the_way(data)
    parse_all_the_way(b"LPCA\x01\x00" + data)


OPS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 1 << 31)), min_size=1, max_size=6
)


@settings(max_examples=600, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), OPS, st.booleans())
def test_mutated_packets(seed, ops, fix):
    data = mutate(seed, ops, fix)
    tracemalloc.start()
    t = time.perf_counter()
    try:
        parse_all_the_way(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t < 1.0
    # decoding may expand a tensor (<= 64K float32 here) but never allocates from a hostile length
    assert peak < 40 * len(data) + (1 << 20) + 4 * (1 << 16)


@settings(max_examples=200, deadline=2000)
@given(st.sampled_from(SEEDS), OPS)
def test_service_always_answers_with_bytes(seed, ops):
    svc = wire.ResumeService(None, host="echo")
    reply = svc.handle(mutate(seed, ops, True))
    p = wire.decode(reply)
    assert p.kind in (wire.Kind.REJECT, wire.Kind.PONG)


def test_every_truncation_of_every_seed():
    for seed in SEEDS:
        for n in range(len(seed)):
            with pytest.raises(wire.WireError):
                wire.decode(seed[:n])
