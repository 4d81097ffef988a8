"""A learned packet codec's shape (`CodecSpec`) and its errors.

Pure numpy, so the spec checks run without torch or MLX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lpca_protocols.channel import ChannelError
from lpca_protocols.codecs.quantize import fsq_constants


class CheckpointError(ChannelError):
    """A codec checkpoint is missing, truncated, corrupt or incomplete."""


class CheckpointMismatchError(CheckpointError):
    """A codec checkpoint was trained on another base model (fingerprint differs), or a bridge
    checkpoint meets another (sender, receiver) pair than the one it was trained for."""


QUANTIZERS = ("vq", "rvq", "fsq")
INJECT_MODES = ("replace", "add")
#: FSQ alphabets: the index codec packs at most 2**24 symbols.
MAX_SYMBOLS = 1 << 24


@dataclass(frozen=True)
class CodecSpec:
    """Shape of a learned codec; everything needed to rebuild its nets from weights."""

    kind: Literal["prefix", "codebook", "kv"]
    k: int
    """Packet vectors (prefix slots); kind='kv': the number of fused layers."""
    m: int
    """Width of each packet vector (the codebook's row width for kind='codebook'; kind='kv': d_src)."""
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
    recolour: bool = False
    """The decoder's output is shifted by a learned per-dimension offset (``dec.shift``, initialized
    to the receiver's input-embedding mean): with ``dec.scale`` (initialized from the embedding
    table's spread) it recolours the bounded output to the receiver's embedding statistics. A
    cross-model bridge's normalizer is the sender-side standardization (``enc.mu``/``enc.sd``)
    plus this."""
    kv_layers: tuple[int, ...] = ()
    """kind='kv': the sender layers read (0 = embeddings), one per fused receiver layer."""
    kv_targets: tuple[int, ...] = ()
    """kind='kv': the receiver layers each projected sender layer is added after (0 = embedding
    output: it then reaches every block's attention cache from that layer on)."""
    primer: str | None = None
    """Text the receiver's prompt puts before the packet's vectors (None: the prompt book's
    ``received_latent`` line, "Message from your partner: "; "" puts the vectors alone)."""
    positions: int = 0
    """Learned position embeddings of the resampler's inputs, by distance from the prompt's last
    position (0 = last; farther ones share the last row); 0: none (the resampler then sees a bag
    of states, and ordered content such as the digits of a code is only as recoverable as the
    states' own position signal)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(x) for x in self.fsq_levels))
        object.__setattr__(self, "kv_layers", tuple(int(x) for x in self.kv_layers))
        object.__setattr__(self, "kv_targets", tuple(int(x) for x in self.kv_targets))
        if self.kind not in ("prefix", "codebook", "kv"):
            raise CheckpointError(f"codec kind must be 'prefix', 'codebook' or 'kv', got {self.kind!r}")
        if self.kind == "kv":
            n = len(self.kv_layers)
            if not n or len(self.kv_targets) != n or self.k != n or self.m != self.d_src:
                raise CheckpointError(
                    "a kv bridge needs kv_layers and kv_targets of one length n >= 1, k = n and "
                    f"m = d_src; got {len(self.kv_layers)} layers, {len(self.kv_targets)} targets, "
                    f"k={self.k}, m={self.m}"
                )
            if min(self.kv_layers) < 0 or min(self.kv_targets) < 0 or len(set(self.kv_targets)) != n:
                raise CheckpointError(
                    f"kv_layers and kv_targets must be layers >= 0, targets distinct; got {self.kv_layers}, "
                    f"{self.kv_targets}"
                )
            if not self.tail:
                raise CheckpointError("a kv bridge reads a fixed number of sender positions: set tail >= 1")
            return
        if self.kv_layers or self.kv_targets:
            raise CheckpointError(f"kv_layers and kv_targets only apply to kind='kv', not {self.kind!r}")
        if self.width % self.heads:
            raise CheckpointError(f"width {self.width} must be a multiple of heads {self.heads}")
        if self.inject_layer is not None and (isinstance(self.inject_layer, bool) or self.inject_layer < 0):
            raise CheckpointError(f"inject_layer must be None or a layer >= 0, got {self.inject_layer!r}")
        if self.primer is not None and (not isinstance(self.primer, str) or "{" in self.primer):
            raise CheckpointError(f"primer must be None or text without braces, got {self.primer!r}")
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
        if self.kind == "kv":  # per fused layer: standardize, rank-`width` projection, gate
            return {
                "kv.mu": (k, d),
                "kv.sd": (k, d),
                "kv.down": (k, w, d),
                "kv.up": (k, self.d_out, w),
                "kv.bias": (k, self.d_out),
                "kv.gate": (k,),
            }
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
        if self.recolour:
            shapes["dec.shift"] = (self.d_out,)
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
    return fsq_constants(levels, np.float64)
