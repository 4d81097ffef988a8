"""Codecs: round trips, exact bit counts, ggml byte layouts, rotq, registry."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpca_envs.messages import Message
from lpca_protocols import codecs
from lpca_protocols.codecs import CodecError, UnknownCodecError
from lpca_protocols.codecs.bitpack import pack, unpack
from lpca_protocols.codecs.rotq import lloyd_max

PLAIN = [
    "fp32",
    "fp16",
    "bf16",
    "q8_0",
    "q4_0",
    "rotq:bits=1",
    "rotq:bits=2",
    "rotq:bits=3",
    "rotq:bits=4",
    "rotq-tcq:bits=1",
    "rotq-tcq:bits=3",
]
SHAPES = [(576,), (3, 576), (2, 5, 64), (1, 64), (7, 40), (0, 64)]
#: Relative error bound (max |x - x^| / max |x|) per codec on Gaussian data.
TOL = {"fp32": 0, "fp16": 1e-3, "bf16": 8e-3, "q8_0": 1e-2, "q4_0": 0.15}


def gaussian(shape, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("spec", PLAIN)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_shape_and_exact_length(spec, shape):
    c = codecs.get(spec)
    x = gaussian(shape)
    data = c.encode(x)
    assert isinstance(data, bytes)
    assert len(data) == math.ceil(c.bits(shape) / 8) == c.nbytes(shape)
    y = c.decode(data, shape)
    assert y.shape == shape and y.dtype == np.float32 and y.flags.writeable
    if x.size and spec in TOL:
        assert np.abs(y - x).max() <= TOL[spec] * np.abs(x).max()


@pytest.mark.parametrize("spec", PLAIN)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_accepts_every_float_dtype(spec, dtype):
    c = codecs.get(spec)
    x = gaussian((2, 64))
    assert c.encode(x.astype(dtype)) == c.encode(x.astype(dtype).astype(np.float32))


@pytest.mark.parametrize("spec", PLAIN)
def test_message_bits_equal_codec_bits(spec):
    c = codecs.get(spec)
    x = gaussian((3, 64))
    m = c.message(x, "alice", "bob")
    assert isinstance(m, Message) and m.kind == "latent"
    assert m.bits == c.bits(x.shape) and len(m.payload) == math.ceil(m.bits / 8)
    assert m.meta["codec"] == c.spec and m.meta["shape"] == "3x64"


def test_exact_bit_counts():
    assert codecs.get("fp32").bits((3, 576)) == 3 * 576 * 32
    assert codecs.get("fp16").bits((3, 576)) == 3 * 576 * 16
    assert codecs.get("bf16").bits((576,)) == 576 * 16
    assert codecs.get("q8_0").bits((576,)) == 18 * 34 * 8  # 18 blocks of 34 bytes
    assert codecs.get("q4_0").bits((576,)) == 18 * 18 * 8
    assert codecs.get("q8_0").bits((33,)) == 2 * 34 * 8  # a partial block is padded
    assert codecs.get("rotq:bits=3").bits((2, 576)) == 2 * (16 + 3 * 576)
    assert codecs.get("rotq:bits=3").bits((1, 7)) == 16 + 21  # not a whole number of bytes
    assert codecs.get("rotq:bits=3").nbytes((1, 7)) == 5


def test_rejects_bad_input():
    with pytest.raises(CodecError, match="float"):
        codecs.get("fp16").encode(np.arange(4))
    with pytest.raises(CodecError, match="NaN"):
        codecs.get("q8_0").encode(np.array([1.0, np.nan] * 16, np.float32))
    with pytest.raises(CodecError, match="NaN"):
        codecs.get("q4_0").encode(np.array([1.0, np.inf] * 16, np.float32))
    with pytest.raises(CodecError, match="65504"):
        codecs.get("fp16").encode(np.array([1e6], np.float32))
    with pytest.raises(CodecError, match="bytes"):
        codecs.get("q8_0").decode(b"\0" * 33, (32,))
    with pytest.raises(CodecError, match="rows"):
        codecs.get("rotq").encode(np.zeros((3, 1), np.float32))
    with pytest.raises(CodecError, match="shape"):
        codecs.get("fp32").bits((1 << 20, 1 << 20))


# ------------------------------------------------------------------------------ fp16 / bf16


def test_fp16_and_bf16_rounding_is_to_nearest_even():
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, 3.0e38, 0.0, -0.0], np.float32)
    b = codecs.get("bf16").decode(codecs.get("bf16").encode(x), x.shape)
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins; 1 + 3*2^-8 rounds up.
    assert b.tolist()[:4] == [1.0, 1.0, 1 + 2**-6, -2.5]
    assert np.signbit(b[-1])
    ref = x[:4].astype(np.float16).astype(np.float32)
    assert np.array_equal(codecs.get("fp16").decode(codecs.get("fp16").encode(x[:4]), (4,)), ref)
    nan = codecs.get("bf16").decode(codecs.get("bf16").encode(np.array([np.nan], np.float32)), (1,))
    assert np.isnan(nan).all()


def test_bf16_matches_torch():
    torch = pytest.importorskip("torch")
    x = gaussian((4, 257), scale=100)
    ours = codecs.get("bf16").decode(codecs.get("bf16").encode(x), x.shape)
    assert np.array_equal(ours, torch.from_numpy(x).to(torch.bfloat16).float().numpy())


# ------------------------------------------------------------------------------ ggml layouts


def test_q8_0_block_layout_on_a_known_vector():
    x = np.arange(32, dtype=np.float32) - 16  # amax 16 -> d = 16/127
    data = codecs.get("q8_0").encode(x)
    assert len(data) == 34
    d = np.frombuffer(data[:2], "<f2")[0]
    assert d == np.float16(np.float32(16) / np.float32(127))
    qs = np.frombuffer(data[2:], np.int8)
    # q = roundf(x * 127/16), half away from zero: x=-16 -> -127, x=-12 -> -95.25 -> -95
    assert qs[0] == -127 and qs[16] == 0 and qs[4] == -95 and qs[31] == 119
    # exact halves round away from zero, like C roundf (numpy's rint would round to even)
    half = np.zeros(32, np.float32)
    half[0], half[1], half[2] = 127.0, 0.5, -2.5  # d = 1 -> q = x
    q = np.frombuffer(codecs.get("q8_0").encode(half)[2:], np.int8)
    assert q[:3].tolist() == [127, 1, -3]


def test_q4_0_block_layout_on_a_known_vector():
    x = np.zeros(32, np.float32)
    x[0], x[1], x[16], x[31] = -8.0, 3.0, 1.0, 7.0  # max |x| is -8 (signed): d = -8 / -8 = 1
    data = codecs.get("q4_0").encode(x)
    assert len(data) == 18
    assert np.frombuffer(data[:2], "<f2")[0] == 1.0
    qs = np.frombuffer(data[2:], np.uint8)
    # value j in the low nibble, value j+16 in the high nibble; q = min(15, trunc(x/d + 8.5))
    assert qs[0] == (0 | (9 << 4))  # x0=-8 -> 0 ; x16=1 -> 9
    assert qs[1] == (11 | (8 << 4))  # x1=3 -> 11 ; x17=0 -> 8
    assert qs[15] == (8 | (15 << 4))  # x15=0 -> 8 ; x31=7 -> 15
    y = codecs.get("q4_0").decode(data, (32,))
    assert y[0] == -8 and y[1] == 3 and y[16] == 1 and y[31] == 7


def test_q4_0_ties_take_the_first_largest_magnitude():
    x = np.zeros(32, np.float32)
    x[3], x[5] = -2.0, 2.0  # equal magnitude: ggml keeps the first (negative) one -> d = 0.25
    assert np.frombuffer(codecs.get("q4_0").encode(x)[:2], "<f2")[0] == 0.25


@pytest.mark.parametrize("name", ["q8_0", "q4_0"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_ggml_bit_compatible_with_gguf_package(name, scale):
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    qtype = {"q8_0": GGMLQuantizationType.Q8_0, "q4_0": GGMLQuantizationType.Q4_0}[name]
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((16, 576)) * scale).astype(np.float32)
    x[0] = 0  # all-zero blocks
    x[1, :64] = np.round(x[1, :64])  # exact integers and halves hit the rounding rules
    x[2, :32] = (np.arange(32) - 15.5) * scale
    c = codecs.get(name)
    ours = c.encode(x)
    theirs = gq.quantize(x, qtype)
    assert ours == theirs.tobytes()
    assert np.array_equal(c.decode(ours, x.shape), gq.dequantize(theirs, qtype).reshape(x.shape))


def test_q8_0_rounds_exactly_like_roundf_near_half():
    # values whose scaled form sits next to .5 (where x + 0.5 in float32 would round up wrongly)
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    x = np.zeros((4, 32), np.float32)
    x[:, 0] = 127.0  # d = 1, so q = round(x) for the other values
    halves = np.array([0.5, 1.5, 2.5, 126.5], np.float32)
    x[0, 1:5] = np.nextafter(halves, 0)
    x[1, 1:5] = halves
    x[2, 1:5] = -np.nextafter(halves, 0)
    x[3, 1:5] = np.nextafter(halves, 200)
    assert codecs.get("q8_0").encode(x) == gq.quantize(x, GGMLQuantizationType.Q8_0).tobytes()


@pytest.mark.parametrize("blocks", [1, 18, 64, 65, 2048, 2049, 4100])
def test_q8_0_small_and_bulk_paths_match_gguf(blocks):
    # The encoder takes a one-shot path for short vectors and a chunked one for bulk data; both
    # must give gguf's bytes, also for all-zero blocks and a block at the smallest normal scale.
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    x = gaussian((blocks, 32), seed=blocks, scale=50.0)
    x[0] = 0
    x[-1] *= 1e-3
    if blocks > 2:  # amax 127 * 2^-126: d is exactly the smallest normal float32
        x[1] = np.clip(x[1] / 200, -1, 1) * (np.float32(127) * np.finfo(np.float32).tiny)
        x[1, 5] = np.float32(127) * np.finfo(np.float32).tiny
    expected = gq.quantize(x, GGMLQuantizationType.Q8_0)
    assert codecs.get("q8_0").encode(x) == expected.tobytes()


# ------------------------------------------------------------------------------ rotq


def test_lloyd_max_matches_the_gaussian_tables_for_large_d():
    # Max (1960): 1 bit ±0.7979, 2 bits ±0.4528 ±1.510, 3 bits 0.2451 0.7560 1.344 2.152
    assert np.allclose(lloyd_max(4096, 1)[0][1], 0.7979, atol=2e-3)
    assert np.allclose(lloyd_max(4096, 2)[0][2:], [0.4528, 1.510], atol=3e-3)
    assert np.allclose(lloyd_max(4096, 3)[0][4:], [0.2451, 0.7560, 1.344, 2.152], atol=5e-3)


@pytest.mark.parametrize("bits,max_nmse", [(1, 0.38), (2, 0.125), (3, 0.037), (4, 0.0102)])
def test_rotq_distortion_is_lloyd_max_for_any_input(bits, max_nmse):
    # The rotation makes the law of the coordinates independent of the input: a spiky vector
    # and a Gaussian one are quantized equally well.
    c = codecs.get("rotq", bits=bits, seed=3)
    spiky = np.zeros((64, 576), np.float32)
    spiky[np.arange(64), np.arange(64) * 7] = 1000.0
    spiky += gaussian((64, 576), scale=0.5)
    for x in (gaussian((64, 576)), spiky):
        y = c.decode(c.encode(x), x.shape)
        assert ((y - x) ** 2).sum() / (x**2).sum() <= max_nmse


@pytest.mark.parametrize("bits", [2, 4])
def test_rotq_scale_search_never_loses_to_plain_rounding(bits):
    # The encoder may pick each row's quantizer scale freely (the decoder applies the least-squares
    # gain): per row, the error is never above that of rounding the unscaled coordinates.
    from lpca_protocols.codecs.rotq import best_cells

    c, edges = (t.astype(np.float32) for t in lloyd_max(576, bits))
    u = gaussian((200, 576), seed=bits, scale=1.0)
    u *= np.sqrt(576) / np.linalg.norm(u, axis=1, keepdims=True)

    def cos2(i):
        v = c[i]
        return (u * v).sum(1) ** 2 / ((v * v).sum(1) * (u * u).sum(1))

    searched, plain = cos2(best_cells(u, c, edges)), cos2(np.searchsorted(edges, u))
    assert (searched >= plain).all() and searched.mean() > plain.mean()


def test_rotq_seed_travels_in_params_never_the_matrix():
    c = codecs.get("rotq:bits=3,seed=12345")
    assert len(c.params()) == 10
    twin = codecs.from_wire(c.codec_id, c.params())
    assert twin == c and twin.spec == c.spec
    x = gaussian((4, 96))
    data = c.encode(x)
    assert np.array_equal(twin.decode(data, x.shape), c.decode(data, x.shape))
    other = codecs.get("rotq:bits=3,seed=12346")
    assert other.encode(x) != data


@pytest.mark.parametrize("rotation", ["dense", "hadamard", "auto"])
def test_rotq_rotations_are_orthogonal(rotation):
    c = codecs.get("rotq", bits=2, rotation=rotation)
    r = c.matrix(64)
    assert np.allclose(r @ r.T, np.eye(64), atol=1e-5)
    assert not np.allclose(np.abs(r), np.eye(64), atol=1e-3)


def test_rotq_zero_rows_and_huge_norms():
    c = codecs.get("rotq:bits=2")
    x = np.zeros((2, 64), np.float32)
    assert np.array_equal(c.decode(c.encode(x), x.shape), x)
    with pytest.raises(CodecError, match="65504"):
        c.encode(np.full((1, 64), 1e5, np.float32))
    with pytest.raises(CodecError, match="hadamard"):
        codecs.get("rotq", rotation="hadamard").encode(np.ones((1, 576), np.float32))


# ------------------------------------------------------------------------------ bit packing


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 24), st.lists(st.integers(0, (1 << 24) - 1), max_size=70))
def test_bitpack_round_trip_any_width(b, values):
    v = np.array(values, np.int64) & ((1 << b) - 1)
    data = pack(v, b)
    assert len(data) == math.ceil(len(v) * b / 8)
    assert unpack(data, b, len(v)).tolist() == v.tolist()


def test_bitpack_layout_is_lsb_first():
    assert pack(np.array([1, 2, 3]), 3) == bytes([0b11010001, 0b0])
    assert pack(np.array([1, 0, 1, 1]), 1) == bytes([0b1101])
    assert pack(np.array([0xA, 0x5]), 4) == bytes([0x5A])


# ------------------------------------------------------------------------------ registry


def test_registry_names_ids_and_specs():
    assert {"fp32", "fp16", "bf16", "q8_0", "q4_0", "rotq", "vq", "rvq", "fsq", "pq"} <= set(codecs.names())
    ids = [codecs.get(n).codec_id for n in ("fp32", "fp16", "bf16", "q8_0", "q4_0", "rotq")]
    assert ids == [0x0001, 0x0002, 0x0003, 0x0010, 0x0011, 0x0020]  # stable wire ids
    assert codecs.get("rotq:bits=4,seed=9,rotation=dense").spec == "rotq:bits=4,seed=9,rotation=dense"
    with pytest.raises(UnknownCodecError, match="known codecs"):
        codecs.get("zstd")
    with pytest.raises(UnknownCodecError, match="0x7777"):
        codecs.from_wire(0x7777, b"")
    with pytest.raises(CodecError):
        codecs.get("rotq:bits=9")
    with pytest.raises(CodecError):
        codecs.from_wire(0x0001, b"x")


def test_third_party_codec_registers_by_id():
    class Identity8(codecs.Codec):
        codec_id = 0x8123
        name = "test-u8"

        def encode(self, array):
            return np.asarray(array, np.float32).astype(np.uint8).tobytes()

        def decode(self, data, shape):
            return np.frombuffer(data, np.uint8).astype(np.float32).reshape(shape)

        def bits(self, shape):
            return 8 * math.prod(shape)

    codecs.register(Identity8)
    assert codecs.from_wire(0x8123, b"").encode(np.array([3.0])) == b"\x03"
    with pytest.raises(CodecError, match="already registered"):
        codecs.register(type("Clash", (Identity8,), {"name": "other", "codec_id": 0x0010}))


def test_rotq_search_is_encoder_only():
    # search=1 changes which cells the encoder picks, not the packet: the plain codec decodes it,
    # with no more error than the fast encoder's own packet.
    x = gaussian((16, 576), seed=4, scale=3.0)
    fast, searched = codecs.get("rotq:bits=4"), codecs.get("rotq:bits=4,search=1")
    assert searched.params() == fast.params() and searched.bits(x.shape) == fast.bits(x.shape)
    err_fast, err_searched = (((fast.decode(c.encode(x), x.shape) - x) ** 2).sum() for c in (fast, searched))
    assert err_searched < err_fast
    with pytest.raises(codecs.CodecError, match="search"):
        codecs.get("rotq:bits=4,search=2")


# ------------------------------------------------------------------------------ rotq-tcq


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_tcq_beats_scalar_rotq_at_the_same_bits(bits):
    # Trellis-coded quantization: same packet size as rotq, about 1 dB less error (>= 0.15 bit).
    x = gaussian((48, 576), seed=bits)
    tcq, rotq = codecs.get("rotq-tcq", bits=bits, seed=5), codecs.get("rotq", bits=bits, seed=5, search=1)
    assert tcq.bits(x.shape) == rotq.bits(x.shape) == 48 * (16 + 576 * bits)

    def nmse(c):
        y = c.decode(c.encode(x), x.shape)
        return float(np.mean(((y - x) ** 2).sum(1) / (x**2).sum(1)))

    assert 0.5 * math.log2(nmse(rotq) / nmse(tcq)) >= 0.15
    # within 0.45 bit of the Gaussian bound D(R) = 2^(-2R), norm bits included
    r = tcq.bits(x.shape) / x.size
    assert r + 0.5 * math.log2(nmse(tcq)) <= 0.45


def test_tcq_viterbi_finds_the_best_trellis_path():
    # Brute force over every branch sequence of a short row (the level within a subset is then the
    # nearest one): the Viterbi path's error is the minimum, and the decoder's replay rebuilds it.
    import itertools

    from lpca_protocols.codecs.tcq import SUBSET, replay, tcq_alphabet, viterbi

    alphabet = tcq_alphabet(8, 2)
    u = gaussian((6, 7), seed=8, scale=1.0).astype(np.float64)
    branches, levels = viterbi(u, alphabet)
    got = ((replay(branches, levels, alphabet) - u) ** 2).sum(1)
    for row in range(len(u)):
        best = np.inf
        for path in itertools.product((0, 1), repeat=u.shape[1]):
            state, err = 0, 0.0
            for t, br in enumerate(path):
                sub = alphabet[SUBSET[state, br] :: 4]
                err += ((sub - u[row, t]) ** 2).min()
                state = (2 * state + br) % 8
            best = min(best, err)
        assert got[row] == pytest.approx(best, rel=1e-12)


def test_tcq_packet_parameters_and_bad_input():
    c = codecs.get("rotq-tcq:bits=4,seed=77,rotation=dense")
    assert c.spec == "rotq-tcq:bits=4,seed=77,rotation=dense" and c.codec_id == 0x0021
    again = codecs.from_wire(c.codec_id, c.params())
    x = gaussian((3, 96), seed=2)
    assert again.spec == c.spec and again.decode(c.encode(x), x.shape).tobytes() == c.decode(
        c.encode(x), x.shape
    ).tobytes()
    assert c.encode(x) == codecs.get("rotq-tcq:bits=4,seed=77,rotation=dense").encode(x)  # deterministic
    with pytest.raises(CodecError, match=r"bits must be an int in 1\.\.8"):
        codecs.get("rotq-tcq:bits=0")
    with pytest.raises(CodecError, match="fp16"):
        c.encode(np.full((1, 96), 1e30, np.float32))
    with pytest.raises(CodecError):
        c.decode(c.encode(x)[:-1], x.shape)
