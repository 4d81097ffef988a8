"""Property: whatever well-framed packet reaches a `ResumeService` (any kind, REQUEST fields of any
type, any layer, tensor names, shapes, dtypes, codecs and codec parameters, right or wrong data
lengths), the service answers with one well-formed packet: a RESULT or PONG, or a REJECT whose code
is a documented typed error. Nothing raises, and no packet costs seconds (admission runs first).
"""

import itertools
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lpca_models
from lpca_protocols import codecs, wire
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import ERRORS, error_for_code


@pytest.fixture(scope="module")
def service():
    svc = wire.ResumeService(lpca_models.load("tiny-random-llama"), host="b")
    svc.warm()
    return svc


SCALARS = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([*codecs.names(), "fp16", "fp32", "q8_0"]),
    st.lists(st.integers(-5, 5), max_size=4).map(lambda v: np.array(v, np.int64)),
    st.lists(st.floats(-1, 1), max_size=4).map(lambda v: np.array(v, np.float32)),
)
VALID_FIELDS = st.fixed_dictionaries(
    {
        "want": st.integers(1, 7),
        "top_k": st.integers(0, 16),
        "reply_codec": st.sampled_from(wire.service.REPLY_CODECS),
    }
)
#: Mostly valid requests (so that packets get past the REQUEST to the tensors), some with one field of any
#: type or value, some arbitrary.
FIELDS = st.one_of(
    VALID_FIELDS,
    VALID_FIELDS,
    VALID_FIELDS,
    VALID_FIELDS.flatmap(
        lambda f: st.sampled_from(sorted(f)).flatmap(lambda k: SCALARS.map(lambda v: {**f, k: v}))
    ),
    st.dictionaries(st.sampled_from(["want", "top_k", "reply_codec", "other"]), SCALARS, max_size=4),
)
CODECS = st.one_of(
    st.sampled_from(["fp32", "fp16", "bf16", "q8_0", "q4_0", "index:size=7", "index:size=16777216"]),
    st.builds(
        lambda name, bits, seed, rot: f"{name}:bits={bits},seed={seed},rotation={rot}",
        st.sampled_from(["rotq", "rotq-tcq"]),
        st.integers(1, 8),
        st.sampled_from([0, 1, 7, (1 << 64) - 1]),
        st.sampled_from(["auto", "dense", "hadamard"]),
    ),
)
DIM = st.one_of(
    st.just(64), st.integers(0, 70), st.sampled_from([2, 63, 65, 1024, 8192, 1 << 20, (1 << 32) - 1])
)
POSITIONS = st.one_of(st.integers(1, 24), st.sampled_from([0, 2049, 4096, 65536, (1 << 32) - 1]))


@st.composite
def tensors(draw):
    name = draw(st.sampled_from(["hidden"] * 8 + ["logits", "x"]))
    ndim = draw(st.sampled_from([2] * 6 + [1, 1, 0, 3]))
    d = draw(DIM)
    shape = {0: (), 1: (d,), 2: (draw(POSITIONS), d), 3: (2, draw(POSITIONS), d)}[ndim]
    dtype = draw(st.sampled_from(list(pk.DType)))
    return name, shape, dtype


_SESSIONS = itertools.count(1)


@st.composite
def packets(draw, endpoint):
    kind = draw(st.sampled_from([pk.Kind.RESUME] * 12 + [pk.Kind.PING, pk.Kind.RESULT, pk.Kind.PONG]))
    codec = codecs.get(draw(CODECS))
    params = codec.params()
    if draw(st.integers(0, 12)) == 12:
        params = draw(st.binary(max_size=12))
    count = draw(st.sampled_from([1] * 8 + [0, 2, 3]))
    out = []
    for _ in range(count):
        name, shape, dtype = draw(tensors())
        try:
            n = codec.nbytes(shape)
        except codecs.CodecError:
            n = None
        if n is None or n > 300_000 or draw(st.integers(0, 9)) == 9:
            n = draw(st.integers(0, 2048))
        data = draw(st.sampled_from([b"\x3c", b"\x00", b"\xff", b"\x55", b"\x7b"])) * n
        out.append(pk.Tensor(name, shape, data, dtype))
    sections = ()
    if kind == pk.Kind.RESUME or draw(st.booleans()):
        sections = (pk.Section(pk.SectionType.REQUEST, draw(FIELDS)),)
    layer = draw(st.sampled_from([0, 1, 2, 3, 4, 2, 3, None, 5, 0xFFFE]))
    ident = pk.Identity(
        endpoint.model_fingerprint,
        endpoint.tokenizer_fingerprint,
        endpoint.weight_quant,
        0,
        "a",
        "b",
        layer,
        codec.codec_id,
        params,
    )
    session = next(_SESSIONS).to_bytes(16, "little")  # fresh per packet: replay is tested elsewhere
    return pk.encode(pk.Packet(kind, session, 1, ident, sections, tuple(out), time.time_ns()))


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_service_answers_every_packet_with_a_typed_outcome(service, data):
    packet = data.draw(packets(service.endpoint))
    t0 = time.process_time()
    reply = service.handle(packet)  # must not raise
    cpu = time.process_time() - t0
    p = wire.decode(reply)
    assert p.kind in (pk.Kind.RESULT, pk.Kind.PONG, pk.Kind.REJECT), p.kind
    if p.kind == pk.Kind.REJECT:
        fields = p.section(pk.SectionType.REJECT).fields
        assert fields["code"] in ERRORS, fields
        assert isinstance(error_for_code(fields["code"], fields["message"]), wire.WireError)
    assert struct.unpack_from("<Q", reply, 32)[0] == struct.unpack_from("<Q", packet, 32)[0]  # correlated
    assert cpu < 5.0, f"one packet of {len(packet)} bytes cost {cpu:.2f} s of CPU"
