"""The torch `PacketNet`: the learned codec's nets as an ``nn.Module`` (used for training).

torch loads on first use, and the class is built once and cached in `_NET_CLASS`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lpca_protocols.packet_codec._quantize import QUANT_KEYS, dequantize, quantize
from lpca_protocols.packet_codec._spec import CodecSpec


def torch_net(spec: CodecSpec) -> Any:
    """A fresh `PacketNet` (torch) for `spec` (a `KVNet` for kind='kv')."""
    if spec.kind == "kv":
        return _kv_class()(spec)
    return _torch_classes()(spec)


_KV_CLASS: Any = None


def _kv_class() -> Any:
    global _KV_CLASS
    if _KV_CLASS is not None:
        return _KV_CLASS
    import torch
    from torch import nn

    class KVNet(nn.Module):
        """The kv bridge's per-layer projectors: sender states at layer `kv_layers[i]` ->
        standardized -> rank-`width` linear map -> x sigmoid(gate_i), added to the receiver's residual
        stream after block `kv_targets[i]` at the placeholder positions (whose keys and values every
        later block computes with its own projections: the sender reaches the receiver's KV cache)."""

        def __init__(self, spec: CodecSpec) -> None:
            super().__init__()
            self.spec = spec
            n, d, w, o = spec.k, spec.d_src, spec.width, spec.d_out
            g = torch.Generator().manual_seed(0)
            self.kv = nn.Module()
            self.kv.register_buffer("mu", torch.zeros(n, d))
            self.kv.register_buffer("sd", torch.ones(n, d))
            self.kv.down = nn.Parameter(torch.randn(n, w, d, generator=g) / math.sqrt(d))
            self.kv.up = nn.Parameter(torch.randn(n, o, w, generator=g) / math.sqrt(w))
            self.kv.bias = nn.Parameter(torch.zeros(n, o))
            self.kv.gate = nn.Parameter(torch.zeros(n))

        def decode(self, packet: torch.Tensor) -> torch.Tensor:
            """Sender states [B, n, T, d_src] -> the vectors each target layer adds [B, n, T, d_out]."""
            kv = self.kv
            x = (packet - kv.mu[None, :, None]) / kv.sd[None, :, None]
            y = torch.einsum("nwd,bntd->bntw", kv.down, x)
            y = torch.einsum("now,bntw->bnto", kv.up, y) + kv.bias[None, :, None]
            return y * torch.sigmoid(kv.gate)[None, :, None, None]

        def weights(self) -> dict[str, np.ndarray]:
            sd = self.state_dict()
            return {n: sd[n].detach().float().cpu().numpy() for n in self.spec.weight_shapes()}

        def load_weights(self, weights: dict[str, np.ndarray]) -> None:
            sd = {n: torch.from_numpy(np.asarray(a, np.float32)) for n, a in weights.items()}
            self.load_state_dict(sd, strict=True)

    _KV_CLASS = KVNet
    return KVNet


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
            if spec.positions:
                # random, not zero: with zero rows the queries start blind to position and find the
                # positions that matter ~3x slower (PinRelay digits: 40% vs 73% held-out at step 100)
                self.enc.pos = nn.Parameter(torch.randn(spec.positions, w, generator=g))
            self.dec.out = nn.Linear(w, spec.d_out)
            if spec.bounded:
                self.dec.scale = nn.Parameter(torch.ones(spec.d_out))
            if spec.recolour:
                self.dec.shift = nn.Parameter(torch.zeros(spec.d_out))
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
            if self.spec.recolour:
                y = y + dc.shift
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
