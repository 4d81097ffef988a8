"""ggml and rotq-tcq codecs: the compiled (numba) kernels give the numpy code's bytes, arrays and errors."""

from __future__ import annotations

import numpy as np
import pytest

from lpca_protocols import codecs
from lpca_protocols.codecs import ggml, tcq

pytest.importorskip("numba", reason="numba is not installed (the `fast` extra): only the numpy path exists")

TINY = np.finfo(np.float32).tiny
NAMES = ["q8_0", "q4_0"]


@pytest.fixture(scope="module", autouse=True)
def kernels():
    ggml._jit.cache_clear()  # LPCA_NO_JIT may be set in the environment running the tests
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LPCA_NO_JIT", raising=False)
        k = ggml._jit()
        assert k is not None, "numba is installed, but the ggml kernels did not load"
        yield k
    ggml._jit.cache_clear()


def same(name: str, x: np.ndarray) -> bytes:
    """Encode with both paths, assert identical bytes and bit-identical decodes; the bytes."""
    jit, ref = codecs.get(name), codecs.get(name, jit=False)
    data = jit.encode(x)
    assert data == ref.encode(x)
    shape = np.shape(x)
    a, b = jit.decode(data, shape), ref.decode(data, shape)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    return data


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 576, 64 * 32 + 5, (1 << 17) + 3])
def test_random_vectors_of_every_size(name, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3
    same(name, x)


@pytest.mark.parametrize("name", NAMES)
def test_magnitudes_from_1e_minus_40_to_1e4(name):
    rng = np.random.default_rng(1)
    per_block = 10.0 ** rng.uniform(-40, 4, (3000, 1))  # one magnitude per block
    per_value = 10.0 ** rng.uniform(-40, 4, (3000, 32))  # mixed magnitudes inside blocks
    for scale in (per_block, per_value):
        x = (rng.standard_normal((3000, 32)) * scale).astype(np.float32)
        with np.errstate(all="ignore"):  # numpy's q4_0 casts inf to int on subnormal scales
            same(name, x)


@pytest.mark.parametrize("name", NAMES)
def test_zero_negative_zero_and_subnormal_blocks(name):
    edge = np.float32(127) * TINY  # q8_0: the block maximum whose scale is exactly the smallest normal
    rows = [
        np.zeros(32, np.float32),
        np.full(32, -0.0, np.float32),
        np.linspace(-1, 1, 32, dtype=np.float32) * np.float32(1e-40),  # subnormal values
        np.linspace(-1, 1, 32, dtype=np.float32) * edge,
        np.linspace(-1, 1, 32, dtype=np.float32) * np.nextafter(edge, np.float32(0)),
        np.linspace(-1, 1, 32, dtype=np.float32) * np.nextafter(edge, np.float32(1)),
        np.linspace(-1, 1, 32, dtype=np.float32) * TINY,
        np.full(32, np.float32(1e-45)),  # the smallest subnormal
    ]
    x = np.stack(rows)
    with np.errstate(all="ignore"):
        same(name, x)
        for r in rows:
            same(name, r[:17])  # as a partial, zero-padded block


def test_q8_0_rounds_halves_away_from_zero_like_numpy():
    halves = np.arange(0, 127, dtype=np.float32) + np.float32(0.5)
    near = [halves, -halves, np.nextafter(halves, 0), np.nextafter(halves, 200), -np.nextafter(halves, 0)]
    x = np.zeros((2 * len(near), 32), np.float32)
    x[:, 0] = 127.0  # d = 1: q = roundf(x)
    for i, v in enumerate(near):
        x[2 * i, 1:], x[2 * i + 1, 1:] = v[:31], v[-31:]
    data = same("q8_0", x)
    q = np.frombuffer(data, ggml.Q8_0_BLOCK)["qs"]
    assert q[0, 1:4].tolist() == [1, 2, 3] and q[2, 1:4].tolist() == [-1, -2, -3]
    assert q[4, 1:4].tolist() == [0, 1, 2] and q[6, 1:4].tolist() == [1, 2, 3]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_layouts_of_input(name):
    rng = np.random.default_rng(2)
    x64 = rng.standard_normal((3, 5, 67))
    same(name, x64)  # float64 input
    same(name, np.asfortranarray(x64.astype(np.float32)))
    same(name, x64.astype(np.float16))
    same(name, x64[:, ::2, 1:].astype(np.float32))  # not contiguous


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [32, 45, 576])
def test_decode_of_arbitrary_bytes_including_inf_and_nan_scales(name, n):
    c, ref = codecs.get(name), codecs.get(name, jit=False)
    size = c.nbytes((n,))
    rng = np.random.default_rng(n)
    for _ in range(20):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        for buf in (data, bytearray(data), memoryview(data)):
            with np.errstate(invalid="ignore"):  # 0 * an inf scale
                a, b = c.decode(buf, (n,)), ref.decode(buf, (n,))
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e10, -3e38])
@pytest.mark.parametrize("n", [32, 40, 576, 64 * 32 + 5, (1 << 17) + 3])
def test_same_typed_error_for_nan_inf_and_huge_values(name, bad, n):
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    x[n - 3] = bad
    errors = []
    for c in (codecs.get(name), codecs.get(name, jit=False)):
        with pytest.raises(codecs.CodecError) as info:
            c.encode(x)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_scales_just_below_and_above_the_fp16_limit():
    x = np.zeros((2, 32), np.float32)
    x[0, 3] = np.float32(65504) * np.float32(127)  # d = 65504 exactly: accepted
    same("q8_0", x[:1])
    x[1, 3] = np.nextafter(x[0, 3], np.float32(np.inf))
    for c in (codecs.get("q8_0"), codecs.get("q8_0", jit=False)):
        with pytest.raises(codecs.CodecError):
            c.encode(x)


def test_fp16_conversion_of_the_scale_on_every_rounding_boundary(kernels):
    from numba import njit

    f16_bits = kernels._f16_bits

    @njit
    def convert(bits):
        out = np.empty(bits.size, np.uint16)
        for i in range(bits.size):
            out[i] = f16_bits(np.int64(bits[i]))
        return out

    # every finite fp16 value up to 65504, the midpoints to the next one, and their float32 neighbours
    h = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    mid = (h[:-1] + h[1:]) / 2
    f32 = np.concatenate([h, mid]).astype(np.float32)
    f32 = np.concatenate([f32, np.nextafter(f32, np.float32(0)), np.nextafter(f32, np.float32(1e9))])
    f32 = f32[f32 <= 65504]
    ours = convert(f32.view(np.uint32))
    assert np.array_equal(ours, f32.astype(np.float16).view(np.uint16))


def test_no_jit_environment_variable_forces_numpy(monkeypatch):
    monkeypatch.setenv("LPCA_NO_JIT", "1")
    ggml._jit.cache_clear()
    try:
        assert ggml._jit() is None
        x = np.linspace(-3, 3, 100, dtype=np.float32)
        assert codecs.get("q8_0").encode(x) == codecs.get("q8_0", jit=False).encode(x)
    finally:
        monkeypatch.delenv("LPCA_NO_JIT")
        ggml._jit.cache_clear()
    assert ggml._jit() is not None


def test_jit_is_a_local_choice_not_a_wire_parameter():
    assert codecs.get("q8_0", jit=False) == codecs.get("q8_0")
    assert codecs.get("q4_0", jit=False).params() == b"" and codecs.get("q8_0", jit=False).spec == "q8_0"


# ------------------------------------------------------------------------------ rotq-tcq

TCQ_BITS = range(1, 9)
ROTATIONS = ("auto", "dense", "hadamard")


@pytest.fixture(scope="module")
def tcq_kernels(kernels):
    tcq._jit.cache_clear()  # `kernels` has removed LPCA_NO_JIT for this module
    k = tcq._jit()
    assert k is not None, "numba is installed, but the rotq-tcq kernels did not load"
    yield k
    tcq._jit.cache_clear()


def same_tcq(spec: str, x: np.ndarray) -> bytes | None:
    """Encode with both paths: identical bytes and bit-identical decodes, or the same typed error."""
    jit, ref = codecs.get(spec), codecs.get(spec, jit=False)
    out = []
    for c in (jit, ref):
        try:
            out.append(c.encode(x))
        except codecs.CodecError as exc:
            out.append((type(exc), str(exc)))
    assert out[0] == out[1]
    data = out[0]
    if not isinstance(data, bytes):
        return None
    shape = np.shape(x)
    a, b = jit.decode(data, shape), ref.decode(data, shape)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    return data


def same_viterbi(u: np.ndarray, alphabet: np.ndarray) -> None:
    br, lv = tcq.viterbi(u, alphabet)
    br_ref, lv_ref = tcq.viterbi(u, alphabet, jit=False)
    assert br.dtype == br_ref.dtype and lv.dtype == lv_ref.dtype
    assert np.array_equal(br, br_ref) and np.array_equal(lv, lv_ref)


@pytest.mark.parametrize("bits", TCQ_BITS)
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_tcq_random_rows_every_bits_and_rotation(tcq_kernels, bits, rotation):
    rng = np.random.default_rng(bits)
    spec = f"rotq-tcq:bits={bits},seed={bits * 7},rotation={rotation}"
    for shape in [(576,), (3, 576), (0, 576), (2, 512), (2, 3, 64), (7, 2), (4, 3)]:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        same_tcq(spec, x)  # hadamard on a width that is not a power of two: the same error


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_tcq_adversarial_rows_ties_constants_and_magnitudes(tcq_kernels, bits):
    rng = np.random.default_rng(10 + bits)
    d = 64
    onehot = np.zeros((3, d), np.float32)
    onehot[[0, 1, 2], [0, 5, 63]] = 1.0  # hadamard: every rotated coordinate is +-1, the trellis ties
    rows = [
        np.zeros((2, d), np.float32),  # u = 0: every path ties
        np.full((2, d), 0.5, np.float32),
        np.full((1, d), -1e-3, np.float32),
        onehot,
        np.resize(np.array([1, -1], np.float32), (2, d)),
        (np.round(rng.standard_normal((4, d)) * 4) / 2).astype(np.float32),  # a coarse grid
        (rng.standard_normal((40, d)) * 10.0 ** rng.uniform(-40, 3, (40, 1))).astype(
            np.float32
        ),  # gains < 65504
        (rng.standard_normal((4, d)) * 1e-40).astype(np.float32),  # subnormal values
    ]
    x = np.concatenate(rows)
    for rotation in ROTATIONS:
        spec = f"rotq-tcq:bits={bits},rotation={rotation}"
        assert same_tcq(spec, x) is not None
        for r in x:
            same_tcq(spec, r)
        same_tcq(spec, x.astype(np.float64) * 3)  # another input dtype
        same_tcq(spec, np.asfortranarray(x))  # and layout


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e19, -1e30, 3e38])
@pytest.mark.parametrize("shape", [(576,), (4, 576), (3, 64)])
def test_tcq_same_typed_error_for_nan_inf_and_huge_values(tcq_kernels, bad, shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[-3] = bad
    for bits in (1, 4):
        with np.errstate(all="ignore"):
            assert same_tcq(f"rotq-tcq:bits={bits}", x) is None  # both raise CodecError
    with np.errstate(all="ignore"):
        assert same_tcq("rotq-tcq:bits=3", np.full(shape, 3e38, np.float32)) is None


@pytest.mark.parametrize("bits", TCQ_BITS)
def test_tcq_viterbi_on_midpoints_levels_nan_and_inf(tcq_kernels, bits):
    # u straight into the search: exact midpoints between levels (numpy's searchsorted picks the
    # lower level), exact levels, zeros (every path ties), NaN (np.minimum and argmin propagate it)
    alphabet = tcq.tcq_alphabet(8, bits)
    mids = [(alphabet[j::4][1:] + alphabet[j::4][:-1]) / 2 for j in range(4)]
    pool = np.concatenate([alphabet, -alphabet, *mids, (alphabet[1:] + alphabet[:-1]) / 2, [0.0, -0.0]])
    rng = np.random.default_rng(bits)
    with np.errstate(all="ignore"):
        for d in (1, 2, 9, 64):
            same_viterbi(rng.choice(pool, (60, d)), alphabet)
            same_viterbi(rng.choice(alphabet, (20, d)), alphabet)
            same_viterbi(np.zeros((3, d)), alphabet)
            same_viterbi(np.zeros((0, d)), alphabet)
            for scale in (1e-300, 1e6, 1e300):
                same_viterbi(rng.standard_normal((4, d)) * scale, alphabet)
            for bad in (np.nan, np.inf, -np.inf):
                u = rng.standard_normal((6, d))
                u[rng.integers(0, 6, 4), rng.integers(0, d, 4)] = bad
                same_viterbi(u, alphabet)
            same_viterbi(np.full((2, d), np.nan), alphabet)


@pytest.mark.parametrize("d", [2, 7, 64])
def test_tcq_alphabet_training_is_the_same_with_the_kernel(tcq_kernels, d, monkeypatch):
    # The alphabet is derived by each host from (d, b): a process without numba must get the same bits.
    trained = {b: tcq.tcq_alphabet.__wrapped__(d, b) for b in TCQ_BITS}
    monkeypatch.setattr(tcq, "_jit", lambda: None)
    for b in TCQ_BITS:
        assert tcq.tcq_alphabet.__wrapped__(d, b).tobytes() == trained[b].tobytes()


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_tcq_decode_of_arbitrary_bytes(tcq_kernels, bits):
    c, ref = codecs.get(f"rotq-tcq:bits={bits}"), codecs.get(f"rotq-tcq:bits={bits}", jit=False)
    rng = np.random.default_rng(bits)
    for shape in [(576,), (3, 576), (5, 7), (0, 64)]:
        data = rng.integers(0, 256, c.nbytes(shape), dtype=np.uint8).tobytes()
        for buf in (data, bytearray(data), memoryview(data)):
            with np.errstate(all="ignore"):  # inf or NaN gains
                a, b = c.decode(buf, shape), ref.decode(buf, shape)
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_tcq_no_jit_environment_variable_and_local_choice(tcq_kernels, monkeypatch):
    assert codecs.get("rotq-tcq:bits=3", jit=False) == codecs.get("rotq-tcq:bits=3")
    assert codecs.get("rotq-tcq:bits=3", jit=False).spec == codecs.get("rotq-tcq:bits=3").spec
    monkeypatch.setenv("LPCA_NO_JIT", "1")
    tcq._jit.cache_clear()
    try:
        assert tcq._jit() is None and not tcq.jit_enabled()
        x = np.linspace(-3, 3, 96, dtype=np.float32)
        assert codecs.get("rotq-tcq").encode(x) == codecs.get("rotq-tcq", jit=False).encode(x)
    finally:
        monkeypatch.delenv("LPCA_NO_JIT")
        tcq._jit.cache_clear()
    assert tcq._jit() is not None


def test_tcq_a_failed_kernel_load_warns_and_falls_back_to_numpy(tcq_kernels, monkeypatch):
    import sys

    import lpca_protocols.codecs as package

    class Broken:  # numba installed but unusable: the import of the kernels fails with a non-ImportError
        def find_spec(self, name, path=None, target=None):
            if name == "lpca_protocols.codecs._tcq_jit":
                raise RuntimeError("LLVM is broken")
            return None

    x = np.random.default_rng(5).standard_normal((2, 96)).astype(np.float32)
    expected = codecs.get("rotq-tcq", jit=False).encode(x)
    monkeypatch.delitem(sys.modules, "lpca_protocols.codecs._tcq_jit")
    monkeypatch.delattr(package, "_tcq_jit")
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    tcq._jit.cache_clear()
    try:
        with pytest.warns(UserWarning, match="rotq-tcq: numba kernels unavailable"):
            assert not tcq.jit_enabled()
        assert codecs.get("rotq-tcq").encode(x) == expected
    finally:
        tcq._jit.cache_clear()
