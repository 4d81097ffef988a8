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
MLX (`_mlx_encode` / `_mlx_decode`, a direct port); both read one safetensors file. A checkpoint
is a directory holding ``codec.safetensors`` (float32 weights) and ``codec.json`` (the
`CodecSpec`, the base model's fingerprint, the weights' sha256 and training metadata).

Layout: `_codec_spec` (spec, checkpoints, errors, the numpy quantizers), `_codec_torch`
(`PacketNet`), `_codec_mlx` (the MLX port); this module runs them (`CodecRunner`) and
re-exports their names, the import path the channels, the trainer and users rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lpca_protocols.channels._codec_mlx import _mlx_decode, _mlx_encode
from lpca_protocols.channels._codec_spec import (
    CONFIG,
    FORMAT,
    INJECT_MODES,
    MAX_SYMBOLS,
    QUANT_KEYS,
    QUANTIZERS,
    WEIGHTS,
    Checkpoint,
    CheckpointError,
    CheckpointMismatchError,
    CodecSpec,
    check_fsq_levels,
    dequantize,
    fsq_tables,
    load_checkpoint,
    quantize,
    save_checkpoint,
)
from lpca_protocols.channels._codec_torch import torch_net

__all__ = [
    "CONFIG",
    "FORMAT",
    "INJECT_MODES",
    "MAX_SYMBOLS",
    "QUANTIZERS",
    "QUANT_KEYS",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatchError",
    "CodecRunner",
    "CodecSpec",
    "check_fsq_levels",
    "dequantize",
    "fsq_tables",
    "load_checkpoint",
    "quantize",
    "save_checkpoint",
    "torch_net",
]


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

