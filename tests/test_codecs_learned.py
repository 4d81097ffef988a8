"""Learned codecs: VQ / RVQ / FSQ (vector-quantize-pytorch) and PQ (faiss), codebook files and stores."""

import math

import numpy as np
import pytest

from lpca_protocols import codecs
from lpca_protocols.codecs import Codebook, CodebookError, CodebookStore, CodecError
from lpca_protocols.codecs import learned as L

pytest.importorskip("torch")
vqp = pytest.importorskip("vector_quantize_pytorch")
faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((64, 64)) / 8
    return (rng.standard_normal((512, 64)) @ mix * rng.uniform(0.5, 50, (512, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def books(data):
    return {
        "vq": L.train_vq(data, group=8, size=32, epochs=3, meta={"layer": "2"}),
        "rvq": L.train_vq(data, group=8, size=16, stages=2, epochs=3),
        "fsq": L.train_fsq(data, group=8, levels=(5, 5, 3), steps=150, batch=1024),
        "pq": L.train_pq(data, subspaces=16, nbits=5),
    }


@pytest.mark.parametrize(
    "kind,bits_per_row",
    [("vq", 16 + 8 * 5), ("rvq", 16 + 8 * 2 * 4), ("fsq", 16 + 8 * 7), ("pq", 16 + 16 * 5)],
)
def test_round_trip_exact_bits_and_message(books, data, kind, bits_per_row):
    c = codecs.get(kind, codebook=books[kind])
    x = data[:10].reshape(2, 5, 64)
    enc = c.encode(x)
    assert c.bits(x.shape) == 10 * bits_per_row
    assert len(enc) == math.ceil(c.bits(x.shape) / 8)
    y = c.decode(enc, x.shape)
    assert y.shape == x.shape and y.dtype == np.float32
    nmse = ((y - x) ** 2).sum() / (x**2).sum()
    assert nmse < 0.9  # better than sending nothing, on a codebook trained for seconds
    m = c.message(x, "a", "b")
    assert m.bits == c.bits(x.shape)


def test_more_bits_less_distortion(data):
    small = codecs.get("pq", codebook=L.train_pq(data, subspaces=8, nbits=4))
    large = codecs.get("pq", codebook=L.train_pq(data, subspaces=32, nbits=6))
    x = data[:200]
    err = [((c.decode(c.encode(x), x.shape) - x) ** 2).sum() for c in (small, large)]
    assert err[1] < err[0]


def test_vq_indices_match_the_library(data):
    import torch

    torch.manual_seed(0)
    lib = vqp.VectorQuantize(dim=8, codebook_size=16, kmeans_init=True, kmeans_iters=5)
    pts = torch.from_numpy(L._prepare(data, True).reshape(-1, 8))
    lib.train()
    with torch.no_grad():
        lib(pts[None])
    lib.eval()
    with torch.no_grad():
        _, lib_idx, _ = lib(pts[None])
    cb = Codebook("vq", 64, 8, {"codebook": lib.codebook.numpy()})
    ours = codecs.VQ(cb)._indices(L._prepare(data, True))
    assert (ours == lib_idx[0].numpy()).mean() > 0.999


def test_fsq_indices_match_the_library(data):
    import torch

    torch.manual_seed(0)
    lib = vqp.FSQ(levels=[5, 5, 3], dim=8).eval()
    arrays = {
        "levels": np.array([5, 5, 3]),
        "w_in": lib.project_in.weight.detach().numpy(),
        "b_in": lib.project_in.bias.detach().numpy(),
        "w_out": lib.project_out.weight.detach().numpy(),
        "b_out": lib.project_out.bias.detach().numpy(),
    }
    fsq = codecs.FSQ(Codebook("fsq", 64, 8, arrays))
    x = L._prepare(data, True)
    with torch.no_grad():
        out, idx = lib(torch.from_numpy(x.reshape(-1, 8))[None])
    ours = fsq._indices(x)
    assert (ours == idx[0].numpy()).mean() > 0.999
    rec = fsq._reconstruct(ours, len(x)).reshape(-1, 8)
    same = ours == idx[0].numpy()
    assert np.allclose(rec[same], out[0].numpy()[same], atol=1e-5)


def test_rvq_indices_match_the_library(data):
    import torch

    torch.manual_seed(0)
    lib = vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, kmeans_init=True, kmeans_iters=5)
    pts = torch.from_numpy(L._prepare(data, True).reshape(-1, 8))
    with torch.no_grad():
        lib.train()
        lib(pts[None])
        lib.eval()
        _, lib_idx, _ = lib(pts[None])
    cb = Codebook("rvq", 64, 8, {"codebooks": lib.codebooks.numpy()})
    ours = codecs.RVQ(cb)._indices(L._prepare(data, True)).reshape(-1, 2)
    assert (ours == lib_idx[0].numpy()).all(axis=1).mean() > 0.999


def test_pq_faiss_and_numpy_paths_agree(books, data, monkeypatch):
    c = codecs.get("pq", codebook=books["pq"])
    with_faiss = c.encode(data[:50])
    monkeypatch.setattr(L, "_optional_faiss", lambda: None)
    assert c.encode(data[:50]) == with_faiss


def test_save_load_fingerprint_and_store(books, tmp_path):
    store = CodebookStore(tmp_path / "books")
    for cb in books.values():
        store.add(cb, save=True)
    assert len(list((tmp_path / "books").glob("*.npz"))) == 4
    again = CodebookStore(tmp_path / "books")
    assert len(again) == 4
    for kind, cb in books.items():
        c = codecs.get(kind, codebook=cb)
        twin = codecs.from_wire(c.codec_id, c.params(), codebooks=again)
        assert twin.codebook.fingerprint == cb.fingerprint
        x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
        assert twin.encode(x) == c.encode(x)
    assert Codebook.load(cb.save(tmp_path / "x.npz")).meta == cb.meta
    assert books["vq"].meta == {"layer": "2"}


def test_codebook_errors(books, tmp_path):
    c = codecs.get("vq", codebook=books["vq"])
    with pytest.raises(CodebookError, match="no CodebookStore"):
        codecs.from_wire(c.codec_id, c.params())
    with pytest.raises(CodebookError, match="no codebook with fingerprint"):
        codecs.from_wire(c.codec_id, c.params(), codebooks=CodebookStore())
    path = books["vq"].save(tmp_path / "vq.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["codebook"] = arrays["codebook"] + 1  # tamper with the numbers, keep the header
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CodebookError, match="does not match"):
        Codebook.load(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CodebookError, match="not a readable codebook"):
        Codebook.load(tmp_path / "junk.npz")
    with pytest.raises(CodecError, match="rows of 64"):
        c.encode(np.zeros((2, 32), np.float32))
    with pytest.raises(CodebookError, match="needs a 'pq'"):
        codecs.PQ(books["vq"])
    with pytest.raises(CodebookError, match="divide"):
        Codebook("vq", 64, 7, {"codebook": np.zeros((4, 7))})
