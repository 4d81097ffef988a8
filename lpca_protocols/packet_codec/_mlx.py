"""The MLX port of the learned codec's nets (inference only; mlx loads on first use).

The same float32 graph as `PacketNet` in `_torch`, read from the same weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lpca_protocols.packet_codec._spec import CodecSpec


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


def mlx_encode(w: dict[str, Any], spec: CodecSpec, h: np.ndarray) -> np.ndarray:
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


def mlx_decode(w: dict[str, Any], spec: CodecSpec, p: np.ndarray) -> np.ndarray:
    import mlx.core as mx

    y = _mlx_linear(w, "dec.out", _mlx_gelu(_mlx_linear(w, "dec.inp", mx.array(p)) + w["dec.slots"]))
    if spec.bounded:
        y = mx.tanh(y) * w["dec.scale"]
    if spec.recolour:
        y = y + w["dec.shift"]
    return np.array(y, dtype=np.float32)
