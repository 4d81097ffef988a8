"""The numpy quantizer of a codebook codec: the one both frameworks' receivers use, so they see
the same symbols (`PacketNet.nearest` / `rows` and `CodecRunner.quantize` / `rows` call it).

The maths is `lpca_protocols.codecs.quantize`, shared with the tensor codecs; this codec runs it
in float64 with direct squared distances and unclipped FSQ levels (its checkpoints' symbols).
"""

from __future__ import annotations

import numpy as np

from lpca_protocols.codecs import quantize as kernels
from lpca_protocols.packet_codec._spec import CodecSpec

QUANT_KEYS = ("codebook", "fsq.w_in", "fsq.b_in", "fsq.w_out", "fsq.b_out")


def quantize(spec: CodecSpec, tables: dict[str, np.ndarray], packets: np.ndarray) -> np.ndarray:
    """Packets [B, k, m] -> symbols [B, symbols_per_message] (int64, slot-major; rvq: slot j's stages
    at j*Q .. j*Q+Q-1). float64 numpy, so torch and MLX receivers see the same symbols."""
    p = np.asarray(packets, np.float64)
    b, k = p.shape[:2]
    if spec.quantizer == "fsq":
        z = p @ tables["fsq.w_in"].astype(np.float64).T + tables["fsq.b_in"]  # [B, k, n]
        return kernels.fsq_indices(z, spec.fsq_levels, clip=False)
    cb = tables["codebook"]  # vq: [k, K, m], one codebook per slot; rvq: [k, Q, K, m]
    if spec.quantizer == "vq":
        return kernels.nearest(p, cb, form="direct", dtype=np.float64)
    stages = [cb[:, q] for q in range(spec.rvq_levels)]
    return kernels.residual(p, stages, form="direct", dtype=np.float64).reshape(b, k * spec.rvq_levels)


def dequantize(spec: CodecSpec, tables: dict[str, np.ndarray], symbols: np.ndarray) -> np.ndarray:
    """Symbols [B, symbols_per_message] -> quantized packets [B, k, m] (float32)."""
    idx = np.asarray(symbols, np.int64)
    b, k = len(idx), spec.k
    if spec.quantizer == "fsq":
        codes = kernels.fsq_codes(idx, spec.fsq_levels)  # [B, k, n]
        out = codes.astype(np.float32) @ tables["fsq.w_out"].T + tables["fsq.b_out"]
        return out.astype(np.float32)
    cb = tables["codebook"]
    if spec.quantizer == "vq":
        return kernels.lookup(cb, idx)
    return kernels.residual_lookup(cb, idx.reshape(b, k, spec.rvq_levels), np.float32)
