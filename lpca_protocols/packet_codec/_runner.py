"""`CodecRunner`: inference with a checkpoint on torch or MLX (numpy in and out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lpca_protocols.packet_codec._checkpoint import Checkpoint
from lpca_protocols.packet_codec._mlx import mlx_decode, mlx_encode
from lpca_protocols.packet_codec._quantize import dequantize, quantize
from lpca_protocols.packet_codec._torch import torch_net


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
            return mlx_encode(self._mx(), self.spec, h)
        net = self._net()
        with self._torch_mod.no_grad():
            return net.encode(self._torch_mod.from_numpy(h)[None])[0].numpy()

    def kv_decode(self, states: np.ndarray) -> np.ndarray:
        """kind='kv': sender states [n, T, d_src] -> each target layer's added vectors [n, T, d_out]
        (numpy float32: the same arithmetic on every framework)."""
        w, spec = self.ckpt.weights, self.spec
        x = np.asarray(states, np.float32)
        if x.ndim != 3 or x.shape[0] != spec.k or x.shape[2] != spec.d_src:
            raise ValueError(f"a kv packet is [{spec.k}, T, {spec.d_src}], got {list(x.shape)}")
        x = (x - w["kv.mu"][:, None]) / w["kv.sd"][:, None]
        y = np.einsum("nwd,ntd->ntw", w["kv.down"], x)
        y = np.einsum("now,ntw->nto", w["kv.up"], y) + w["kv.bias"][:, None]
        gate = 1.0 / (1.0 + np.exp(-w["kv.gate"]))
        return (y * gate[:, None, None]).astype(np.float32)

    def decode(self, packet: np.ndarray, framework: str = "torch") -> np.ndarray:
        """Packet [k, m] -> prefix embeddings [k, d_out]."""
        p = np.asarray(packet, np.float32)
        if framework == "mlx":
            return mlx_decode(self._mx(), self.spec, p)
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
