"""The numpy quantizer of a codebook codec: the one both frameworks' receivers use, so they see
the same symbols (`PacketNet.nearest` / `rows` and `CodecRunner.quantize` / `rows` call it)."""

from __future__ import annotations

import numpy as np

from lpca_protocols.packet_codec._spec import CodecSpec, fsq_tables

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
