"""The learned packet codec shared by `latent-prefix` and `latent-codebook`: nets, checkpoints, errors.

A codec is a Perceiver-style resampler and a decoder:

    sender hidden states [T, d_src] --(standardized, k learned queries, cross-attention)--> packet [k, m]
    packet [k, m] --(optional quantizer, below)--> symbols --> packet [k, m]
    packet [k, m] --(per-slot MLP, optional tanh x learned scale)--> k receiver vectors [k, d_out]

The receiver vectors are prefix embeddings at the prompt's marker (``inject_layer`` None),
or are combined (``inject_mode``: replace / add) into the receiver's residual stream after
block ``inject_layer`` at k placeholder positions (zero embeddings) at the marker.

Quantizers (kind='codebook'); a message is ``symbols_per_message`` indices of
``ceil(log2 codebook_size)`` bits each:

- ``vq``: each slot's nearest of its own K rows (k symbols);
- ``rvq``: per slot, ``rvq_levels`` (Q) residual stages of K rows each, greedy (k x Q symbols);
- ``fsq``: per slot, a linear map to ``len(fsq_levels)`` scalars, each bounded and rounded to
  its level count, then mapped back (k symbols of ``prod(fsq_levels)`` values).

Training uses `vector-quantize-pytorch`; its codebooks and projections are exported into
the checkpoint, and inference (`PacketNet`, `CodecRunner`) never imports the library.

The same weights run on torch (`PacketNet`, an ``nn.Module``, used for training) and on
MLX (`_mlx_forward`, a direct port); both read one safetensors file. A checkpoint is a
directory holding ``codec.safetensors`` (float32 weights) and ``codec.json`` (the
`CodecSpec`, the base model's fingerprint, the weights' sha256 and training metadata).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lpca_protocols.channel import ChannelError

FORMAT = "lpca-codec/1"
WEIGHTS = "codec.safetensors"
CONFIG = "codec.json"


class CheckpointError(ChannelError):
    """A codec checkpoint is missing, truncated, corrupt or incomplete."""


class CheckpointMismatchError(CheckpointError):
    """A codec checkpoint was trained on another base model (fingerprint differs)."""


QUANTIZERS = ("vq", "rvq", "fsq")
INJECT_MODES = ("replace", "add")
#: FSQ alphabets: the index codec packs at most 2**24 symbols.
MAX_SYMBOLS = 1 << 24


@dataclass(frozen=True)
class CodecSpec:
    """Shape of a learned codec; everything needed to rebuild its nets from weights."""

    kind: Literal["prefix", "codebook"]
    k: int
    """Packet vectors (prefix slots)."""
    m: int
    """Width of each packet vector (the codebook's row width for kind='codebook')."""
    d_src: int
    """Sender hidden size."""
    d_out: int
    """Receiver input-embedding size."""
    source_layer: int
    """Sender layer the hidden states are read at (0 = embeddings)."""
    tail: int = 0
    """Read only the last `tail` positions of the sender prompt (0: all)."""
    width: int = 128
    heads: int = 4
    codebook_size: int = 0
    """K (kind='codebook')."""
    bounded: bool = True
    """Decoder output is tanh(x) x a learned per-dimension scale."""
    quantizer: str = "vq"
    """kind='codebook': vq, rvq or fsq (see the module docstring)."""
    rvq_levels: int = 1
    """Q, residual stages per slot (quantizer='rvq')."""
    fsq_levels: tuple[int, ...] = ()
    """Levels of each FSQ dimension (quantizer='fsq'); codebook_size is their product."""
    inject_layer: int | None = None
    """None: the decoded vectors are prefix embeddings; l: they enter the residual stream after block l."""
    inject_mode: str = "replace"
    """With inject_layer: replace the placeholders' residual there, or add to it."""
    positions: int = 0
    """Learned position embeddings of the resampler's inputs, by distance from the prompt's last
    position (0 = last; farther ones share the last row); 0: none (the resampler then sees a bag
    of states, and ordered content such as the digits of a code is only as recoverable as the
    states' own position signal)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(x) for x in self.fsq_levels))
        if self.kind not in ("prefix", "codebook"):
            raise CheckpointError(f"codec kind must be 'prefix' or 'codebook', got {self.kind!r}")
        if self.width % self.heads:
            raise CheckpointError(f"width {self.width} must be a multiple of heads {self.heads}")
        if self.inject_layer is not None and (isinstance(self.inject_layer, bool) or self.inject_layer < 0):
            raise CheckpointError(f"inject_layer must be None or a layer >= 0, got {self.inject_layer!r}")
        if isinstance(self.positions, bool) or not 0 <= self.positions <= 4096:
            raise CheckpointError(f"positions must be 0..4096, got {self.positions!r}")
        if self.inject_mode not in INJECT_MODES:
            raise CheckpointError(f"inject_mode must be one of {INJECT_MODES}, got {self.inject_mode!r}")
        if self.kind == "prefix":
            return
        if self.quantizer not in QUANTIZERS:
            raise CheckpointError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer == "fsq":
            check_fsq_levels(self.fsq_levels, CheckpointError)
            if self.codebook_size != math.prod(self.fsq_levels):
                raise CheckpointError(
                    f"an fsq codec's codebook_size is prod(fsq_levels) = {math.prod(self.fsq_levels)}, "
                    f"got {self.codebook_size}"
                )
        elif self.fsq_levels:
            raise CheckpointError(f"fsq_levels only apply to quantizer='fsq', not {self.quantizer!r}")
        if self.codebook_size < 2:
            raise CheckpointError(f"a codebook codec needs codebook_size >= 2, got {self.codebook_size}")
        if not 1 <= self.rvq_levels <= 64 or (self.quantizer != "rvq" and self.rvq_levels != 1):
            raise CheckpointError(
                f"rvq_levels must be 1..64 with quantizer='rvq' and 1 otherwise, got {self.rvq_levels} "
                f"with quantizer={self.quantizer!r}"
            )

    @property
    def index_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size))) if self.codebook_size else 0

    @property
    def symbols_per_message(self) -> int:
        """Indices one message carries (kind='codebook'): k, or k x Q for rvq."""
        return self.k * self.rvq_levels if self.kind == "codebook" else 0

    @property
    def message_bits(self) -> int:
        """Exact bits of a codebook message: symbols_per_message x ceil(log2 codebook_size)."""
        return self.symbols_per_message * self.index_bits

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every inference weight's name and shape (the keys a checkpoint must hold)."""
        d, w, k, m = self.d_src, self.width, self.k, self.m
        shapes: dict[str, tuple[int, ...]] = {
            "enc.mu": (d,),
            "enc.sd": (d,),
            "enc.norm.weight": (d,),
            "enc.norm.bias": (d,),
            "enc.inp.weight": (w, d),
            "enc.inp.bias": (w,),
            "enc.queries": (k, w),
            "enc.q.weight": (w, w),
            "enc.k.weight": (w, w),
            "enc.v.weight": (w, w),
            "enc.o.weight": (w, w),
            "enc.o.bias": (w,),
            "enc.ff_norm.weight": (w,),
            "enc.ff_norm.bias": (w,),
            "enc.ff1.weight": (2 * w, w),
            "enc.ff1.bias": (2 * w,),
            "enc.ff2.weight": (w, 2 * w),
            "enc.ff2.bias": (w,),
            "enc.out.weight": (m, w),
            "enc.out.bias": (m,),
            "dec.inp.weight": (w, m),
            "dec.inp.bias": (w,),
            "dec.slots": (k, w),
            "dec.out.weight": (self.d_out, w),
            "dec.out.bias": (self.d_out,),
        }
        if self.bounded:
            shapes["dec.scale"] = (self.d_out,)
        if self.positions:
            shapes["enc.pos"] = (self.positions, w)
        if self.kind == "codebook" and self.quantizer == "vq":
            shapes["codebook"] = (k, self.codebook_size, m)  # one codebook per slot
        elif self.kind == "codebook" and self.quantizer == "rvq":
            shapes["codebook"] = (k, self.rvq_levels, self.codebook_size, m)
        elif self.kind == "codebook":  # fsq: one projection pair shared by the slots
            n = len(self.fsq_levels)
            shapes.update({"fsq.w_in": (n, m), "fsq.b_in": (n,), "fsq.w_out": (m, n), "fsq.b_out": (m,)})
        return shapes


def check_fsq_levels(levels: Any, error: type[Exception]) -> tuple[int, ...]:
    """`levels` as a tuple, or `error` saying why they cannot be FSQ levels."""
    lv = tuple(levels)
    if not lv or not all(isinstance(x, int) and not isinstance(x, bool) and 3 <= x <= 1 << 16 for x in lv):
        raise error(
            f"fsq_levels must be a non-empty list of ints >= 3 (a 2-level FSQ dimension rounds "
            f"asymmetrically in vector-quantize-pytorch), got {list(lv)}"
        )
    if math.prod(lv) > MAX_SYMBOLS:
        raise error(f"fsq_levels {list(lv)} give {math.prod(lv)} symbols; at most {MAX_SYMBOLS} fit an index")
    return lv


def fsq_tables(levels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(half_l, offset, shift, basis): the constants of vector-quantize-pytorch's FSQ bound (float64)."""
    lv = np.asarray(levels, np.float64)
    half_l = (lv - 1) * (1 + 1e-3) / 2
    offset = np.where(np.asarray(levels) % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    return half_l, offset, shift, np.cumprod([1, *levels[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded codec checkpoint: spec, float32 weights, the base model it was trained on."""

    spec: CodecSpec
    weights: dict[str, np.ndarray]
    base_model: str
    base_fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def check_base(self, fingerprint: str, model_name: str = "") -> None:
        if fingerprint != self.base_fingerprint:
            raise CheckpointMismatchError(
                f"codec checkpoint {self.path} was trained on {self.base_model} "
                f"({self.base_fingerprint[:12]}...), this model is {model_name or '?'} "
                f"({fingerprint[:12]}...); a learned codec only works on its own base model"
            )


def save_checkpoint(
    path: str | Path,
    spec: CodecSpec,
    weights: dict[str, np.ndarray],
    base_model: str,
    base_fingerprint: str,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``codec.safetensors`` then ``codec.json`` (its presence marks a complete checkpoint)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    want = spec.weight_shapes()
    missing = sorted(set(want) - set(weights))
    if missing:
        raise CheckpointError(f"cannot save codec: weights {missing} are missing")
    arrays = {n: np.ascontiguousarray(np.asarray(weights[n], dtype=np.float32)) for n in want}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(arrays, str(tmp))
    tmp.replace(path / WEIGHTS)
    doc = {
        "format": FORMAT,
        "spec": asdict(spec),
        "base_model": base_model,
        "base_fingerprint": base_fingerprint,
        "weights_sha256": hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest(),
        "meta": dict(meta or {}),
    }
    tmp = path / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(path / CONFIG)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a codec checkpoint directory; every defect is a `CheckpointError` naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    cfg, wfile = path / CONFIG, path / WEIGHTS
    if not cfg.is_file() or not wfile.is_file():
        raise CheckpointError(
            f"{path} is not a codec checkpoint: expected {CONFIG} and {WEIGHTS} in that directory"
        )
    try:
        doc = json.loads(cfg.read_text())
        if doc.get("format") != FORMAT:
            raise CheckpointError(f"{cfg}: format {doc.get('format')!r}, expected {FORMAT!r}")
        spec = CodecSpec(**doc["spec"])
        base_model, base_fp = str(doc["base_model"]), str(doc["base_fingerprint"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg} is not a valid codec config ({type(e).__name__}: {e})") from None
    data = wfile.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if doc.get("weights_sha256") not in (None, digest):
        raise CheckpointError(
            f"{wfile} is truncated or corrupt: {len(data)} bytes whose sha256 {digest[:12]}... differs "
            f"from the {doc['weights_sha256'][:12]}... recorded in {CONFIG}"
        )
    try:
        weights = load(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{wfile} is not a readable safetensors file: {e}") from None
    want = spec.weight_shapes()
    missing = sorted(set(want) - set(weights))
    if missing:
        raise CheckpointError(f"{wfile} lacks weights {missing} required by its spec ({spec.kind})")
    bad = {n: (tuple(weights[n].shape), s) for n, s in want.items() if tuple(weights[n].shape) != s}
    if bad:
        detail = ", ".join(f"{n}: got {g}, expected {s}" for n, (g, s) in sorted(bad.items()))
        raise CheckpointError(f"{wfile} has weights of the wrong shape: {detail}")
    w = {n: np.asarray(weights[n], dtype=np.float32) for n in want}
    return Checkpoint(spec, w, base_model, base_fp, dict(doc.get("meta", {})), path)


# ------------------------------------------------------------------------------------ torch


def torch_net(spec: CodecSpec) -> Any:
    """A fresh `PacketNet` (torch) for `spec`."""
    return _torch_classes()(spec)


_NET_CLASS: Any = None


def _torch_classes() -> Any:
    global _NET_CLASS
    if _NET_CLASS is not None:
        return _NET_CLASS
    import torch
    from torch import nn

    class PacketNet(nn.Module):
        """Resampler (encoder) and per-slot decoder; the codebook (if any) is a buffer."""

        def __init__(self, spec: CodecSpec) -> None:
            super().__init__()
            self.spec = spec
            d, w, k, m = spec.d_src, spec.width, spec.k, spec.m
            g = torch.Generator().manual_seed(0)
            self.enc = nn.Module()
            # per-dimension standardization of the sender states, set from the training data: a few
            # massive residual dimensions would otherwise dominate the LayerNorm and hide the message
            self.enc.register_buffer("mu", torch.zeros(d))
            self.enc.register_buffer("sd", torch.ones(d))
            self.enc.norm = nn.LayerNorm(d)
            self.enc.inp = nn.Linear(d, w)
            self.enc.queries = nn.Parameter(torch.randn(k, w, generator=g) * 0.5)
            if spec.positions:
                self.enc.pos = nn.Parameter(torch.zeros(spec.positions, w))
            self.enc.q = nn.Linear(w, w, bias=False)
            self.enc.k = nn.Linear(w, w, bias=False)
            self.enc.v = nn.Linear(w, w, bias=False)
            self.enc.o = nn.Linear(w, w)
            self.enc.ff_norm = nn.LayerNorm(w)
            self.enc.ff1 = nn.Linear(w, 2 * w)
            self.enc.ff2 = nn.Linear(2 * w, w)
            self.enc.out = nn.Linear(w, m)
            self.dec = nn.Module()
            self.dec.inp = nn.Linear(m, w)
            self.dec.slots = nn.Parameter(torch.randn(k, w, generator=g) * 0.5)
            self.dec.out = nn.Linear(w, spec.d_out)
            if spec.bounded:
                self.dec.scale = nn.Parameter(torch.ones(spec.d_out))
            for name, shape in spec.weight_shapes().items():  # the quantizer's exported tables
                if name == "codebook":
                    self.register_buffer("codebook", torch.zeros(shape))
                elif name.startswith("fsq."):
                    if not hasattr(self, "fsq"):
                        self.fsq = nn.Module()
                    self.fsq.register_buffer(name[4:], torch.zeros(shape))

        def encode(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            """[B, T, d_src] (+ [B, T] bool mask of real positions) -> packets [B, k, m]."""
            e, s = self.enc, self.spec
            x = e.inp(e.norm((h - e.mu) / e.sd))
            b, t, w = x.shape
            if s.positions:
                real = mask if mask is not None else torch.ones((b, t), dtype=torch.bool)
                # distance of each real position from the last real one (right or left padding)
                back = real.long().flip(-1).cumsum(-1).flip(-1) - 1
                x = x + e.pos[back.clamp(0, s.positions - 1)]
            hd = w // s.heads
            q = e.q(e.queries).view(s.k, s.heads, hd).transpose(0, 1)[None]  # [1, H, k, hd]
            kk = e.k(x).view(b, t, s.heads, hd).transpose(1, 2)  # [B, H, T, hd]
            v = e.v(x).view(b, t, s.heads, hd).transpose(1, 2)
            att = q @ kk.transpose(-1, -2) / math.sqrt(hd)  # [B, H, k, T]
            if mask is not None:
                att = att.masked_fill(~mask[:, None, None, :], float("-inf"))
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s.k, w)
            z = e.queries[None] + e.o(y)
            z = z + e.ff2(torch.nn.functional.gelu(e.ff1(e.ff_norm(z))))
            return e.out(z)

        def decode(self, packet: torch.Tensor) -> torch.Tensor:
            """Packets [B, k, m] -> receiver prefix embeddings [B, k, d_out]."""
            dc = self.dec
            y = dc.out(torch.nn.functional.gelu(dc.inp(packet) + dc.slots[None]))
            if self.spec.bounded:
                y = torch.tanh(y) * dc.scale
            return y

        def load_quantizer(self, tables: dict[str, torch.Tensor]) -> None:
            """Copy a trained quantizer's exported tables (`TrainQuantizer.export`) into the buffers."""
            sd = self.state_dict()
            with torch.no_grad():
                for name, t in tables.items():
                    sd[name].copy_(t)

        def quantizer_tables(self) -> dict[str, np.ndarray]:
            sd = self.state_dict()
            return {n: sd[n].detach().cpu().numpy() for n in self.spec.weight_shapes() if n in QUANT_KEYS}

        def nearest(self, packet: torch.Tensor) -> torch.Tensor:
            """Symbols [B, symbols_per_message] of packets [B, k, m] (`quantize`: the inference code)."""
            out = quantize(self.spec, self.quantizer_tables(), packet.detach().cpu().numpy())
            return torch.from_numpy(out)

        def rows(self, indices: torch.Tensor) -> torch.Tensor:
            """Quantized packets [B, k, m] of symbols [B, symbols_per_message] (`dequantize`)."""
            return torch.from_numpy(dequantize(self.spec, self.quantizer_tables(), indices.cpu().numpy()))

        def weights(self) -> dict[str, np.ndarray]:
            sd = self.state_dict()
            return {n: sd[n].detach().float().cpu().numpy() for n in self.spec.weight_shapes()}

        def load_weights(self, weights: dict[str, np.ndarray]) -> None:
            sd = {n: torch.from_numpy(np.asarray(a, np.float32)) for n, a in weights.items()}
            self.load_state_dict(sd, strict=True)

    _NET_CLASS = PacketNet
    return PacketNet


# ------------------------------------------------------------------------------------ runner


class CodecRunner:
    """Inference with a checkpoint on torch or MLX: encode, quantize, decode (numpy in and out)."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self.spec = ckpt.spec
        self._torch: Any = None
        self._mlx: dict[str, Any] | None = None

    def _net(self) -> Any:
        if self._torch is None:
            import torch

            net = torch_net(self.spec)
            net.load_weights(self.ckpt.weights)
            self._torch = net.eval()
            self._torch_mod = torch
        return self._torch

    def _mx(self) -> dict[str, Any]:
        if self._mlx is None:
            import mlx.core as mx

            self._mlx = {n: mx.array(a) for n, a in self.ckpt.weights.items()}
        return self._mlx

    def encode(self, hidden: np.ndarray, framework: str = "torch") -> np.ndarray:
        """Sender hidden states [T, d_src] -> packet [k, m] (the tail the spec asks for)."""
        h = np.asarray(hidden, np.float32)
        if self.spec.tail:
            h = h[-self.spec.tail :]
        if framework == "mlx":
            return _mlx_encode(self._mx(), self.spec, h)
        net = self._net()
        with self._torch_mod.no_grad():
            return net.encode(self._torch_mod.from_numpy(h)[None])[0].numpy()

    def decode(self, packet: np.ndarray, framework: str = "torch") -> np.ndarray:
        """Packet [k, m] -> prefix embeddings [k, d_out]."""
        p = np.asarray(packet, np.float32)
        if framework == "mlx":
            return _mlx_decode(self._mx(), self.spec, p)
        net = self._net()
        with self._torch_mod.no_grad():
            return net.decode(self._torch_mod.from_numpy(p)[None])[0].numpy()

    def quantize(self, packet: np.ndarray) -> np.ndarray:
        """Symbols [symbols_per_message] of a packet [k, m] (numpy: the same on every framework)."""
        p = np.asarray(packet, np.float32).reshape(1, self.spec.k, self.spec.m)
        return quantize(self.spec, self.ckpt.weights, p)[0]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The quantized packet [k, m] of `indices` [symbols_per_message]."""
        idx = np.asarray(indices, np.int64).reshape(1, self.spec.symbols_per_message)
        return dequantize(self.spec, self.ckpt.weights, idx)[0]


# ------------------------------------------------------------------------------------ quantizers

QUANT_KEYS = ("codebook", "fsq.w_in", "fsq.b_in", "fsq.w_out", "fsq.b_out")


def quantize(spec: CodecSpec, tables: dict[str, np.ndarray], packets: np.ndarray) -> np.ndarray:
    """Packets [B, k, m] -> symbols [B, symbols_per_message] (int64, slot-major; rvq: slot j's stages
    at j*Q .. j*Q+Q-1). float64 numpy, so torch and MLX receivers see the same symbols."""
    p = np.asarray(packets, np.float64)
    b, k = p.shape[:2]
    if spec.quantizer == "fsq":
        z = p @ tables["fsq.w_in"].astype(np.float64).T + tables["fsq.b_in"]  # [B, k, n]
        half_l, offset, shift, basis = fsq_tables(spec.fsq_levels)
        level = np.rint(np.tanh(z + shift) * half_l - offset).astype(np.int64)
        level += np.asarray(spec.fsq_levels, np.int64) // 2  # 0 .. L-1 per dimension
        return (level * basis).sum(-1)
    cb = tables["codebook"].astype(np.float64)
    if spec.quantizer == "vq":
        return ((p[:, :, None, :] - cb[None]) ** 2).sum(-1).argmin(-1)
    out = np.zeros((b, k, spec.rvq_levels), np.int64)
    slots = np.arange(k)[None]
    for q in range(spec.rvq_levels):  # greedy residual coding, as ResidualVQ trains it
        out[:, :, q] = ((p[:, :, None, :] - cb[None, :, q]) ** 2).sum(-1).argmin(-1)
        p = p - cb[:, q][slots, out[:, :, q]]
    return out.reshape(b, k * spec.rvq_levels)


def dequantize(spec: CodecSpec, tables: dict[str, np.ndarray], symbols: np.ndarray) -> np.ndarray:
    """Symbols [B, symbols_per_message] -> quantized packets [B, k, m] (float32)."""
    idx = np.asarray(symbols, np.int64)
    b, k = len(idx), spec.k
    if spec.quantizer == "fsq":
        lv = np.asarray(spec.fsq_levels, np.int64)
        half = lv // 2
        codes = ((idx[..., None] // fsq_tables(spec.fsq_levels)[3]) % lv - half) / half  # [B, k, n]
        out = codes.astype(np.float32) @ tables["fsq.w_out"].T + tables["fsq.b_out"]
        return out.astype(np.float32)
    cb = tables["codebook"]
    if spec.quantizer == "vq":
        return cb[np.arange(k)[None], idx]
    q = spec.rvq_levels
    rows = cb[np.arange(k)[None, :, None], np.arange(q)[None, None], idx.reshape(b, k, q)]  # [B, k, Q, m]
    return rows.sum(2, dtype=np.float32)


# ------------------------------------------------------------------------------------ mlx


def _mlx_linear(w: dict[str, Any], name: str, x: Any) -> Any:
    y = x @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def _mlx_layer_norm(w: dict[str, Any], name: str, x: Any) -> Any:
    import mlx.core as mx

    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * mx.rsqrt(var + 1e-5) * w[name + ".weight"] + w[name + ".bias"]


def _mlx_gelu(x: Any) -> Any:
    import mlx.core as mx

    return 0.5 * x * (1 + mx.erf(x / math.sqrt(2.0)))


def _mlx_encode(w: dict[str, Any], spec: CodecSpec, h: np.ndarray) -> np.ndarray:
    import mlx.core as mx

    x = (mx.array(h) - w["enc.mu"]) / w["enc.sd"]
    x = _mlx_linear(w, "enc.inp", _mlx_layer_norm(w, "enc.norm", x))  # [T, w]
    if spec.positions:
        t = x.shape[0]
        x = x + w["enc.pos"][mx.minimum(mx.arange(t - 1, -1, -1), spec.positions - 1)]
    hd = spec.width // spec.heads
    q = (w["enc.queries"] @ w["enc.q.weight"].T).reshape(spec.k, spec.heads, hd).transpose(1, 0, 2)
    kk = (x @ w["enc.k.weight"].T).reshape(-1, spec.heads, hd).transpose(1, 0, 2)
    v = (x @ w["enc.v.weight"].T).reshape(-1, spec.heads, hd).transpose(1, 0, 2)
    att = mx.softmax(q @ kk.transpose(0, 2, 1) / math.sqrt(hd), axis=-1)
    y = (att @ v).transpose(1, 0, 2).reshape(spec.k, spec.width)
    z = w["enc.queries"] + _mlx_linear(w, "enc.o", y)
    z = z + _mlx_linear(
        w, "enc.ff2", _mlx_gelu(_mlx_linear(w, "enc.ff1", _mlx_layer_norm(w, "enc.ff_norm", z)))
    )
    out = _mlx_linear(w, "enc.out", z)
    return np.array(out, dtype=np.float32)


def _mlx_decode(w: dict[str, Any], spec: CodecSpec, p: np.ndarray) -> np.ndarray:
    import mlx.core as mx

    y = _mlx_linear(w, "dec.out", _mlx_gelu(_mlx_linear(w, "dec.inp", mx.array(p)) + w["dec.slots"]))
    if spec.bounded:
        y = mx.tanh(y) * w["dec.scale"]
    return np.array(y, dtype=np.float32)
