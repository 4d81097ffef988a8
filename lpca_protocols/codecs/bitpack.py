"""Pack unsigned integers of `b` bits into a dense little-endian bit stream, and back.

Index ``i`` occupies stream bits ``[i*b, (i+1)*b)``, least significant bit first,
where stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``. ``n`` values of ``b``
bits take exactly ``ceil(n*b / 8)`` bytes; the unused high bits of the last byte
are zero. This is the layout every index-based codec uses on the wire.
"""

from __future__ import annotations

import math

import numpy as np

from lpca_protocols.codecs.errors import CodecError

MAX_BITS = 24
_CHUNK = 1 << 18


def packed_size(n: int, b: int) -> int:
    return math.ceil(n * b / 8)


def pack(values: np.ndarray, b: int) -> bytes:
    """Pack the flat array `values` (each ``< 2**b``) at `b` bits each."""
    if not 1 <= b <= MAX_BITS:
        raise CodecError(f"bit width must be in 1..{MAX_BITS}, got {b}")
    v = np.asarray(values).reshape(-1)
    n = v.size
    if n == 0:
        return b""
    if b == 8:
        return v.astype(np.uint8).tobytes()
    if b == 16:
        return v.astype("<u2").tobytes()
    if 8 % b == 0:  # 1, 2, 4 bits: `per` values share one byte
        per = 8 // b
        pad = (-n) % per
        u = v.astype(np.uint8)
        if pad:
            u = np.concatenate([u, np.zeros(pad, np.uint8)])
        u = u.reshape(-1, per) << (np.arange(per, dtype=np.uint8) * b)
        return np.bitwise_or.reduce(u, axis=1).astype(np.uint8).tobytes()
    # General width: 8 values make exactly b bytes; assemble them in a uint64 word.
    pad = (-n) % 8
    u = v.astype(np.uint64)
    if pad:
        u = np.concatenate([u, np.zeros(pad, np.uint64)])
    groups = u.reshape(-1, 8)
    if b <= 8:  # 8*b <= 64 bits fit one word
        word = np.bitwise_or.reduce(groups << (np.arange(8, dtype=np.uint64) * np.uint64(b)), axis=1)
        out = word.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :b]
    else:  # two words: values 0..3 and 4..7 (4*b <= 96 bits -> split by bits)
        bits = ((groups[:, :, None] >> np.arange(b, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
        out = np.packbits(bits.reshape(len(groups), -1), axis=1, bitorder="little")
    return out.reshape(-1)[: packed_size(n, b)].tobytes()


def unpack(data: bytes | memoryview, b: int, n: int) -> np.ndarray:
    """The `n` values of `b` bits packed in `data` (a uint32 array)."""
    if not 1 <= b <= MAX_BITS:
        raise CodecError(f"bit width must be in 1..{MAX_BITS}, got {b}")
    need = packed_size(n, b)
    if len(data) < need:
        raise CodecError(f"{n} values of {b} bits need {need} bytes, got {len(data)}")
    if n == 0:
        return np.zeros(0, np.uint32)
    raw = np.frombuffer(data, np.uint8, count=need)
    if b == 8:
        return raw.astype(np.uint32)
    if b == 16:
        return np.frombuffer(data, "<u2", count=n).astype(np.uint32)
    if 8 % b == 0:
        per = 8 // b
        mask = np.uint8((1 << b) - 1)
        u = (raw[:, None] >> (np.arange(per, dtype=np.uint8) * b)) & mask
        return u.reshape(-1)[:n].astype(np.uint32)
    n_groups = math.ceil(n / 8)
    buf = np.zeros(n_groups * b, np.uint8)
    buf[:need] = raw
    groups = buf.reshape(n_groups, b)
    if b <= 8:
        word = np.zeros((n_groups, 8), np.uint8)
        word[:, :b] = groups
        w = word.view("<u8").reshape(n_groups, 1)
        u = (w >> (np.arange(8, dtype=np.uint64) * np.uint64(b))) & np.uint64((1 << b) - 1)
        return u.reshape(-1)[:n].astype(np.uint32)
    # 9..24 bits: each value lies within the 4 bytes from its first byte (shift <= 7, b + 7 <= 31).
    # Chunked, so the temporaries stay a few MB whatever n is (the result is 4 bytes per value).
    padded = np.zeros(need + 4, np.uint8)
    padded[:need] = raw
    out = np.empty(n, np.uint32)
    mask = np.uint32((1 << b) - 1)
    for lo in range(0, n, _CHUNK):
        start = np.arange(lo, min(n, lo + _CHUNK), dtype=np.int64) * b
        first = start >> 3
        word = padded[first].astype(np.uint32)
        for k in (1, 2, 3):
            word |= padded[first + k].astype(np.uint32) << np.uint32(8 * k)
        out[lo : lo + len(start)] = (word >> (start & 7).astype(np.uint32)) & mask
    return out
