"""Learned quantizers: VQ, residual VQ and FSQ (trained with vector-quantize-pytorch), PQ (faiss).

A learned codec needs a `Codebook`: the trained arrays plus the structure that
reads them, saved as an ``.npz`` (no pickle) and named by a sha256 `fingerprint`
of both. Packets carry the first 16 bytes of the fingerprint, never the arrays;
the receiver finds the codebook in its `CodebookStore`.

Each row of the array (its last axis, ``d`` values) is cut into ``d / group``
sub-vectors (PQ: ``subspaces`` of them) that are coded by indices, packed at
``ceil(log2 K)`` bits each. With ``normalize`` (the default) a row is first scaled
to norm ``sqrt(d)`` (unit RMS per coordinate, the scale rotq uses) and an fp16
gain is sent: 16 bits per row. Bits per row:

- vq:  ``16 + (d/group) * ceil(log2 K)``
- rvq: ``16 + (d/group) * stages * ceil(log2 K)``
- fsq: ``16 + (d/group) * ceil(log2 prod(levels))``
- pq:  ``16 + subspaces * nbits``

Training imports torch / vector_quantize_pytorch / faiss lazily; encoding and
decoding are numpy (PQ encodes with faiss when it is installed), so a receiver
needs only numpy and the codebook file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lpca_protocols.codecs import quantize
from lpca_protocols.codecs.base import Codec, as_float_array, check_shape
from lpca_protocols.codecs.bitpack import pack, unpack
from lpca_protocols.codecs.errors import CodebookError, CodecError

KINDS = ("vq", "rvq", "fsq", "pq")
FINGERPRINT_BYTES = 16
_STRUCT_KEYS = ("dim", "group", "normalize")


@dataclass(frozen=True, eq=False)
class Codebook:
    """Trained state of a learned codec. ``arrays`` per kind:

    - vq: ``codebook [K, group]``
    - rvq: ``codebooks [stages, K, group]``
    - fsq: ``levels [L] int``, ``w_in [L, group]``, ``b_in [L]``, ``w_out [group, L]``, ``b_out [group]``
    - pq: ``centroids [subspaces, K, d / subspaces]``
    """

    kind: str
    dim: int
    group: int
    arrays: Mapping[str, np.ndarray]
    normalize: bool = True
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CodebookError(f"codebook kind must be one of {KINDS}, got {self.kind!r}")
        if self.dim < 1 or self.group < 1 or self.dim % self.group:
            raise CodebookError(f"group {self.group} must divide dim {self.dim}")
        need = {"vq": ("codebook",), "rvq": ("codebooks",), "pq": ("centroids",)}.get(
            self.kind, ("levels", "w_in", "b_in", "w_out", "b_out")
        )
        missing = [k for k in need if k not in self.arrays]
        if missing:
            raise CodebookError(f"{self.kind} codebook needs arrays {list(need)}, missing {missing}")
        arrays = {
            k: np.ascontiguousarray(v, np.int64 if k == "levels" else np.float32)
            for k, v in self.arrays.items()
        }
        object.__setattr__(self, "arrays", arrays)
        object.__setattr__(self, "meta", {str(k): str(v) for k, v in self.meta.items()})
        self._check_shapes()

    def _check_shapes(self) -> None:
        a, g = self.arrays, self.group
        ok = {
            "vq": lambda: a["codebook"].ndim == 2 and a["codebook"].shape[1] == g,
            "rvq": lambda: a["codebooks"].ndim == 3 and a["codebooks"].shape[2] == g,
            "pq": lambda: (
                a["centroids"].ndim == 3 and a["centroids"].shape[0] * a["centroids"].shape[2] == self.dim
            ),
            "fsq": lambda: (
                a["levels"].ndim == 1
                and bool((a["levels"] >= 3).all())
                and a["w_in"].shape == (len(a["levels"]), g)
                and a["w_out"].shape == (g, len(a["levels"]))
            ),
        }[self.kind]()
        if not ok:
            shapes = {k: v.shape for k, v in a.items()}
            raise CodebookError(
                f"{self.kind} codebook arrays have inconsistent shapes {shapes} for group {g}"
            )
        if self.n_entries < 2 or self.n_entries > 1 << 24:
            raise CodebookError(f"a codebook needs 2..2^24 entries per index, got {self.n_entries}")

    @property
    def n_entries(self) -> int:
        """K: entries per index (FSQ: the product of its levels)."""
        a = self.arrays
        if self.kind == "fsq":
            return int(np.prod(a["levels"]))
        key = {"vq": "codebook", "rvq": "codebooks", "pq": "centroids"}[self.kind]
        return int(a[key].shape[-2])

    @property
    def indices_per_row(self) -> int:
        if self.kind == "pq":
            return int(self.arrays["centroids"].shape[0])
        stages = int(self.arrays["codebooks"].shape[0]) if self.kind == "rvq" else 1
        return self.dim // self.group * stages

    @property
    def index_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.n_entries)))

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the structure and every array's dtype, shape and bytes."""
        h = hashlib.sha256(b"lpca-codebook-v1\0")
        h.update(json.dumps([self.kind, self.dim, self.group, self.normalize]).encode())
        for name in sorted(self.arrays):
            arr = self.arrays[name]
            h.update(f"\0{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    # -- files -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz): the arrays plus a JSON header with the structure and fingerprint."""
        path = Path(path)
        header = {
            "kind": self.kind,
            "dim": self.dim,
            "group": self.group,
            "normalize": self.normalize,
            "meta": dict(self.meta),
            "fingerprint": self.fingerprint,
        }
        blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, __header__=blob, **dict(self.arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        """Read a file written by `save`; the recomputed fingerprint must match the stored one."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                header = json.loads(bytes(z["__header__"]).decode())
                arrays = {k: z[k] for k in z.files if k != "__header__"}
            cb = cls(
                header["kind"],
                int(header["dim"]),
                int(header["group"]),
                arrays,
                bool(header["normalize"]),
                header.get("meta", {}),
            )
        except CodebookError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CodebookError(f"{path} is not a readable codebook file: {exc}") from None
        if cb.fingerprint != header.get("fingerprint"):
            raise CodebookError(
                f"{path}: stored fingerprint {str(header.get('fingerprint'))[:16]}... does not match "
                f"its contents ({cb.fingerprint[:16]}...): the file was modified or corrupted"
            )
        return cb


class CodebookStore:
    """Codebooks known to a host, by fingerprint; optionally backed by a directory of .npz files."""

    def __init__(self, directory: str | Path | None = None, codebooks: Sequence[Codebook] = ()):
        self._by_fp: dict[bytes, Codebook] = {}
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None and self.directory.is_dir():
            for f in sorted(self.directory.glob("*.npz")):
                self.add(Codebook.load(f))
        for cb in codebooks:
            self.add(cb)

    def add(self, codebook: Codebook, save: bool = False) -> str:
        fp = codebook.fingerprint
        self._by_fp[bytes.fromhex(fp)[:FINGERPRINT_BYTES]] = codebook
        if save:
            if self.directory is None:
                raise CodebookError("this CodebookStore has no directory to save into")
            self.directory.mkdir(parents=True, exist_ok=True)
            codebook.save(self.directory / f"{codebook.kind}-{fp[:16]}.npz")
        return fp

    def get(self, fingerprint: bytes | str) -> Codebook:
        key = bytes.fromhex(fingerprint) if isinstance(fingerprint, str) else bytes(fingerprint)
        cb = self._by_fp.get(key[:FINGERPRINT_BYTES])
        if cb is None:
            known = [k.hex() for k in self._by_fp]
            raise CodebookError(
                f"no codebook with fingerprint {key[:FINGERPRINT_BYTES].hex()}...; known: {known}"
            )
        return cb

    def __len__(self) -> int:
        return len(self._by_fp)


class LearnedCodec(Codec):
    """Shared machinery: rows -> (fp16 gain, packed indices) through a `Codebook`."""

    kind: ClassVar[str]

    def __init__(self, codebook: Codebook):
        if not isinstance(codebook, Codebook) or codebook.kind != self.kind:
            raise CodebookError(f"{self.name} needs a {self.kind!r} Codebook, got {codebook!r}")
        self.codebook = codebook

    @property
    def spec(self) -> str:
        return f"{self.name}:codebook={self.codebook.fingerprint[:16]}"

    def params(self) -> bytes:
        return bytes.fromhex(self.codebook.fingerprint)[:FINGERPRINT_BYTES]

    @classmethod
    def from_params(cls, params: bytes, **context: Any) -> Codec:
        store = context.get("codebooks")
        if len(params) != FINGERPRINT_BYTES:
            raise CodecError(
                f"{cls.name} params are a {FINGERPRINT_BYTES}-byte fingerprint, got {len(params)}"
            )
        if store is None:
            raise CodebookError(
                f"{cls.name} codebook {params.hex()}... needed, but no CodebookStore was given"
            )
        return cls(store.get(params))

    def _rows(self, shape: Sequence[int]) -> tuple[int, int]:
        shp = check_shape(shape)
        d = self.codebook.dim
        if not shp or shp[-1] != d:
            raise CodecError(f"{self.spec} codes rows of {d} values (last axis), got shape {shp}")
        return math.prod(shp) // d, d

    def bits(self, shape: Sequence[int]) -> int:
        n, _ = self._rows(shape)
        cb = self.codebook
        return n * (16 * cb.normalize + cb.indices_per_row * cb.index_bits)

    def encode(self, array: Any) -> bytes:
        a = as_float_array(array, self.name)
        n, d = self._rows(a.shape)
        x = a.reshape(n, d)
        if self.codebook.normalize:
            norm = np.linalg.norm(x, axis=1)
            scaled = x * (math.sqrt(d) / np.where(norm > 0, norm, 1))[:, None]
            idx = self._indices(scaled)
            v = self._reconstruct(idx, n)
            gain = np.einsum("ij,ij->i", x, v) / np.maximum(np.einsum("ij,ij->i", v, v), 1e-30)
            gain = np.where(norm > 0, gain, 0)
            if n and not np.abs(gain).max() <= 65504:
                raise CodecError(f"{self.name} stores row norms in fp16: {norm.max():g} exceeds 65504")
            head = gain.astype("<f2").tobytes()
        else:
            idx, head = self._indices(x), b""
        return head + pack(idx, self.codebook.index_bits)

    def decode(self, data: bytes, shape: Sequence[int]) -> np.ndarray:
        shp = self._check_data(data, shape)
        n, _ = self._rows(shp)
        cb = self.codebook
        off = 2 * n if cb.normalize else 0
        idx = unpack(memoryview(data)[off:], cb.index_bits, n * cb.indices_per_row)
        if int(idx.max(initial=0)) >= cb.n_entries:
            raise CodecError(f"{self.spec}: index {int(idx.max())} is outside a codebook of {cb.n_entries}")
        v = self._reconstruct(idx, n)
        if cb.normalize:
            v *= np.frombuffer(data, "<f2", count=n).astype(np.float32)[:, None]
        return v.reshape(shp)

    def _indices(self, x: np.ndarray) -> np.ndarray:
        """[n, d] float32 -> flat indices, row-major (row, then sub-vector / stage)."""
        raise NotImplementedError

    def _reconstruct(self, idx: np.ndarray, n: int) -> np.ndarray:
        """Flat indices -> [n, d] float32 (in the scaled space when normalizing)."""
        raise NotImplementedError


def _nearest(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest row of `table` [K, g] for each row of `x` [m, g] (squared euclidean)."""
    return quantize.nearest(x, table, form="expanded", dtype=np.float32)


class VQ(LearnedCodec):
    codec_id = 0x0030
    name = "vq"
    kind = "vq"

    def _indices(self, x: np.ndarray) -> np.ndarray:
        return _nearest(x.reshape(-1, self.codebook.group), self.codebook.arrays["codebook"])

    def _reconstruct(self, idx: np.ndarray, n: int) -> np.ndarray:
        return self.codebook.arrays["codebook"][idx].reshape(n, -1)


class RVQ(LearnedCodec):
    codec_id = 0x0031
    name = "rvq"
    kind = "rvq"

    def _indices(self, x: np.ndarray) -> np.ndarray:
        books = self.codebook.arrays["codebooks"]
        rows = x.reshape(-1, self.codebook.group)
        return quantize.residual(rows, list(books), form="expanded", dtype=np.float32).reshape(-1)

    def _reconstruct(self, idx: np.ndarray, n: int) -> np.ndarray:
        books = self.codebook.arrays["codebooks"]
        return quantize.residual_lookup(books, idx.reshape(-1, len(books))).reshape(n, -1)


class FSQ(LearnedCodec):
    """Finite scalar quantization with learned projections in and out of the level space."""

    codec_id = 0x0032
    name = "fsq"
    kind = "fsq"

    def _indices(self, x: np.ndarray) -> np.ndarray:
        a = self.codebook.arrays
        z = x.reshape(-1, self.codebook.group) @ a["w_in"].T + a["b_in"]
        # vector_quantize_pytorch's FSQ.bound: tanh squashing, then rounding to the level grid.
        return quantize.fsq_indices(z, a["levels"], clip=True)

    def _reconstruct(self, idx: np.ndarray, n: int) -> np.ndarray:
        a = self.codebook.arrays
        codes = quantize.fsq_codes(idx, a["levels"])
        return (codes.astype(np.float32) @ a["w_out"].T + a["b_out"]).reshape(n, -1)


class PQ(LearnedCodec):
    """Product quantization: `subspaces` sub-vectors, each against its own 2^nbits centroids."""

    codec_id = 0x0033
    name = "pq"
    kind = "pq"

    def _indices(self, x: np.ndarray) -> np.ndarray:
        cent = self.codebook.arrays["centroids"]
        m, k, dsub = cent.shape
        faiss = _optional_faiss()
        if faiss is not None and k & (k - 1) == 0:
            nbits = k.bit_length() - 1
            pq = _faiss_pq(faiss, self.codebook)
            codes = pq.compute_codes(np.ascontiguousarray(x, np.float32))
            # faiss packs each row's m codes LSB-first into code_size bytes: the same bit order as ours.
            bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : m * nbits].reshape(-1, m, nbits)
            return (bits.astype(np.int64) << np.arange(nbits)).sum(axis=2).reshape(-1)
        sub = x.reshape(len(x), m, dsub)
        return np.stack([_nearest(sub[:, j], cent[j]) for j in range(m)], axis=1).reshape(-1)

    def _reconstruct(self, idx: np.ndarray, n: int) -> np.ndarray:
        cent = self.codebook.arrays["centroids"]
        m = cent.shape[0]
        return cent[np.arange(m), idx.reshape(n, m)].reshape(n, -1)


# ---------------------------------------------------------------------------------------- training


def _optional_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_pq(faiss: Any, cb: Codebook) -> Any:
    cache = cb.__dict__.setdefault("_faiss_pq", {})  # frozen dataclass: cache the index on the instance
    if "pq" not in cache:
        m, k, _ = cb.arrays["centroids"].shape
        pq = faiss.ProductQuantizer(cb.dim, m, k.bit_length() - 1)
        faiss.copy_array_to_vector(cb.arrays["centroids"].reshape(-1), pq.centroids)
        cache["pq"] = pq
    return cache["pq"]


def _prepare(data: Any, normalize: bool) -> np.ndarray:
    x = as_float_array(data, "training data")
    if x.ndim != 2 or len(x) < 2:
        raise CodecError(f"training data must be [n >= 2, d] rows, got shape {x.shape}")
    if normalize:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x * (math.sqrt(x.shape[1]) / np.where(norm > 0, norm, 1))
    return np.ascontiguousarray(x)


def _torch_vq() -> tuple[Any, Any]:
    try:
        import torch
        import vector_quantize_pytorch
    except ImportError as exc:
        raise CodecError(
            "training vq/rvq/fsq codebooks needs torch and vector-quantize-pytorch: "
            'pip install -c constraints.txt "vector-quantize-pytorch>=1.20"'
        ) from exc
    return torch, vector_quantize_pytorch


def train_vq(
    data: Any,
    group: int = 8,
    size: int = 256,
    *,
    stages: int = 0,
    normalize: bool = True,
    epochs: int = 20,
    batch: int = 4096,
    seed: int = 0,
    meta: Mapping[str, str] | None = None,
) -> Codebook:
    """Train a VQ codebook (``stages == 0``) or a residual VQ with `stages` codebooks of `size` entries.

    `data` is ``[n, d]`` rows (hidden states); sub-vectors of `group` values are the training
    points. Uses `vector_quantize_pytorch` (k-means init, EMA updates).
    """
    torch, vqp = _torch_vq()
    x = _prepare(data, normalize)
    d = x.shape[1]
    if d % group:
        raise CodecError(f"group {group} must divide the row length {d}")
    pts = torch.from_numpy(x.reshape(-1, group))
    torch.manual_seed(seed)
    common = dict(dim=group, codebook_size=size, kmeans_init=True, kmeans_iters=10, decay=0.8)
    model = vqp.ResidualVQ(num_quantizers=stages, **common) if stages else vqp.VectorQuantize(**common)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(epochs):
            for b in torch.randperm(len(pts), generator=gen).split(batch):
                model(pts[b][None])
    if stages:
        books = model.codebooks.detach().cpu().numpy()
        return Codebook("rvq", d, group, {"codebooks": books}, normalize, dict(meta or {}))
    book = model.codebook.detach().cpu().numpy()
    return Codebook("vq", d, group, {"codebook": book}, normalize, dict(meta or {}))


def train_fsq(
    data: Any,
    group: int = 8,
    levels: Sequence[int] = (8, 5, 5, 5),
    *,
    normalize: bool = True,
    steps: int = 2000,
    batch: int = 4096,
    lr: float = 3e-3,
    seed: int = 0,
    meta: Mapping[str, str] | None = None,
) -> Codebook:
    """Train FSQ projections (group -> len(levels) -> group) on `data` rows by minimizing the MSE."""
    torch, vqp = _torch_vq()
    x = _prepare(data, normalize)
    d = x.shape[1]
    if d % group:
        raise CodecError(f"group {group} must divide the row length {d}")
    pts = torch.from_numpy(x.reshape(-1, group))
    torch.manual_seed(seed)
    model = vqp.FSQ(levels=list(levels), dim=group)
    if not model.has_projections:
        raise CodecError(f"fsq needs len(levels) != group to learn projections, got {len(levels)} == {group}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        b = pts[torch.randint(len(pts), (min(batch, len(pts)),), generator=gen)]
        out, _ = model(b[None])
        loss = torch.nn.functional.mse_loss(out[0], b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    arrays = {
        "levels": np.asarray(levels, np.int64),
        "w_in": model.project_in.weight.detach().numpy(),
        "b_in": model.project_in.bias.detach().numpy(),
        "w_out": model.project_out.weight.detach().numpy(),
        "b_out": model.project_out.bias.detach().numpy(),
    }
    return Codebook("fsq", d, group, arrays, normalize, dict(meta or {}))


def train_pq(
    data: Any,
    subspaces: int = 72,
    nbits: int = 8,
    *,
    normalize: bool = True,
    seed: int = 0,
    meta: Mapping[str, str] | None = None,
) -> Codebook:
    """Train a faiss ProductQuantizer: `subspaces` sub-vectors of ``d / subspaces`` values, 2^nbits each."""
    faiss = _optional_faiss()
    if faiss is None:
        raise CodecError('training pq codebooks needs faiss: pip install -c constraints.txt "faiss-cpu>=1.8"')
    x = _prepare(data, normalize)
    d = x.shape[1]
    if d % subspaces:
        raise CodecError(f"subspaces {subspaces} must divide the row length {d}")
    pq = faiss.ProductQuantizer(d, subspaces, nbits)
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1
    pq.cp.max_points_per_centroid = 1 << 30
    pq.verbose = False
    pq.train(x)
    cent = faiss.vector_to_array(pq.centroids).reshape(subspaces, 1 << nbits, d // subspaces)
    return Codebook("pq", d, d // subspaces, {"centroids": cent}, normalize, dict(meta or {}))
