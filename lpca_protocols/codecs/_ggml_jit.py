"""Compiled (numba) kernels for q8_0 and q4_0, byte-identical to the numpy code in `ggml`.

Imported lazily by `ggml` on the first encode or decode, never at package import: numba
itself takes ~0.4 s to import. The kernels are compiled for fixed signatures when this module
loads: a few seconds the first time, after which numba's on-disk cache (in ``__pycache__``,
or numba's user cache directory when that folder is read-only) loads in well under a
second. With no writable place at all they compile in memory in every process.

Each encoder writes whole ggml blocks into a preallocated ``uint8`` buffer, zero-padding
the last partial block, and returns ``-1``, or the index of the first block it refused (a
scale that is NaN, infinite or above `F16_MAX`, or for q4_0 a subnormal scale whose
reciprocal overflows). The caller then runs the numpy code on the same input: it raises
the same typed error, or for that q4_0 corner produces numpy's own bytes.

The arithmetic is the numpy code's, operation by operation and in float32 (no fastmath,
so no reordering or fused multiply-adds); the fp16 conversions are done on the bits.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

QK = 32
F16_MAX = np.float32(65504.0)
_F127 = np.float32(127.0)
_FM8 = np.float32(-8.0)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_HALF_DOWN = np.nextafter(np.float32(0.5), np.float32(0))
_EIGHT_HALF = np.float32(8.5)
_MIN_AMAX_BITS = np.uint32((np.float32(127) * np.finfo(np.float32).tiny).view(np.uint32))
_ABS = np.uint32(0x7FFFFFFF)
_INF_BITS = np.uint32(0x7F800000)
_INF = np.float32(np.inf)

#: Every fp16 bit pattern as float32, converted by numpy: decoding looks scales up here, so it
#: agrees with numpy's ``astype(np.float32)`` on every pattern, NaN payloads included.
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
F16_TO_F32.flags.writeable = False

_F32, _U8 = types.Array(types.float32, 1, "C"), types.Array(types.uint8, 1, "C")
_SIG_ENC = [types.int64(_F32, _U8)]
#: Bytes decode through a read-only view, a bytearray or memoryview through a writable one.
_U8_RO, _F32_RO = _U8.copy(readonly=True), _F32.copy(readonly=True)
_SIG_DEC = [types.void(_U8_RO, _F32_RO, _F32), types.void(_U8, _F32_RO, _F32)]


def _njit(sig: list):
    """``njit`` with an on-disk cache where numba finds a writable place, else without one."""

    def wrap(fn):
        try:
            return njit(sig, cache=True, nogil=True)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(sig, nogil=True)(fn)

    return wrap


@njit(nogil=True, inline="always")
def _f16_bits(b: int) -> int:
    """fp16 bit pattern of the non-negative float32 with bits `b` (at most 65504), rounded to nearest
    even like numpy's float32 -> float16 cast."""
    e = b >> 23
    m = b & 0x7FFFFF
    if e >= 113:  # >= 2^-14: a normal fp16; the carry of the rounding may bump the exponent
        h = ((e - 112) << 10) | (m >> 13)
        r = m & 0x1FFF
        if r > 0x1000 or (r == 0x1000 and (h & 1)):
            h += 1
        return h
    if e < 102:  # below 2^-25, half the smallest subnormal: 0
        return 0
    m |= 0x800000
    s = 126 - e  # subnormal fp16: the value in units of 2^-24 is m >> s, rounded
    h = m >> s
    r = m & ((1 << s) - 1)
    half = 1 << (s - 1)
    if r > half or (r == half and (h & 1)):
        h += 1
    return h


@intrinsic
def _f32(typingctx, bits):
    """The float32 whose bit pattern is the uint32 `bits`."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _u32(typingctx, value):
    """The bit pattern of the float32 `value`."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(nogil=True, inline="always")
def _q8_0_block(x, xu, out, qk):
    """One q8_0 block of ``x[:32]`` into ``out[:34]``; False if its scale is NaN, infinite or too large."""
    # Slices, indexed by the loop variable: numba then emits no negative-index wraparound, which would
    # turn the vector loads and stores into per-element ones.
    m = _MIN_AMAX_BITS
    for j in range(qk):
        m = max(m, np.uint32(xu[j] & _ABS))
    d = _f32(m) / _F127
    if not d <= F16_MAX:
        return False
    inv = _ONE / d
    h = _f16_bits(np.int64(_u32(d)))
    out[0] = h & 0xFF
    out[1] = h >> 8
    qs = out[2:]
    for j in range(qk):
        q = x[j] * inv
        # copysign, not a select on q >= 0: LLVM vectorizes this form
        qs[j] = np.uint8(np.int8(q + np.float32(np.copysign(_HALF_DOWN, q))))
    return True


def _q8_0_encode(x, out):
    n = x.size
    # 32, in a form LLVM cannot fold (n < 2^62): numba leaves LLVM's SLP vectorizer off, and a loop of
    # constant trip count 32 is unrolled into scalar code before the loop vectorizer would see it.
    qk = QK + (n >> 62)
    nf = n // QK
    xu = x.view(np.uint32)
    for b in range(nf):
        s, ob = b * QK, b * (QK + 2)
        if not _q8_0_block(x[s : s + QK], xu[s : s + QK], out[ob : ob + QK + 2], qk):
            return b
    if nf * QK < n:  # the last, partial block, zero-padded
        pad = np.zeros(QK, np.float32)
        pad[: n - nf * QK] = x[nf * QK :]
        if not _q8_0_block(pad, pad.view(np.uint32), out[nf * (QK + 2) :], qk):
            return nf
    return -1


def _q8_0_decode(raw, lut, out):
    n = out.size
    qk = QK + (n >> 62)  # see _q8_0_encode
    for b in range(raw.size // (QK + 2)):
        blk, s = raw[b * (QK + 2) :], b * QK
        d = lut[np.int64(blk[0]) | (np.int64(blk[1]) << 8)]
        qs, y = blk[2:], out[s : s + QK]
        for j in range(min(qk, n - s)):
            y[j] = np.float32(np.int8(qs[j])) * d


@njit(nogil=True, inline="always")
def _q4_0_block(x, xu, out, qk):
    """One q4_0 block of ``x[:32]`` into ``out[:18]``; False if numpy has to code it (see the module)."""
    m = np.uint32(0)
    for j in range(qk):
        m = max(m, np.uint32(xu[j] & _ABS))
    if m > _INF_BITS:  # a NaN
        return False
    imax = 0  # the first value of largest magnitude, as numpy's argmax of np.abs(x)
    while (xu[imax] & _ABS) != m:
        imax += 1
    d = x[imax] / _FM8
    if not abs(d) <= F16_MAX:
        return False
    inv = _ZERO if d == _ZERO else _ONE / d
    if abs(inv) == _INF:  # a subnormal scale
        return False
    bits = np.int64(_u32(d))
    h = _f16_bits(bits & 0x7FFFFFFF) | ((bits >> 16) & 0x8000)
    out[0] = h & 0xFF
    out[1] = h >> 8
    qs, hi = out[2:], x[QK // 2 :]
    for j in range(qk // 2):
        lo_q = min(np.int32(x[j] * inv + _EIGHT_HALF), 15)
        hi_q = min(np.int32(hi[j] * inv + _EIGHT_HALF), 15)
        qs[j] = np.uint8(lo_q | (hi_q << 4))
    return True


def _q4_0_encode(x, out):
    n = x.size
    qk = QK + (n >> 62)  # see _q8_0_encode
    nf = n // QK
    xu = x.view(np.uint32)
    for b in range(nf):
        s, ob = b * QK, b * (QK // 2 + 2)
        if not _q4_0_block(x[s : s + QK], xu[s : s + QK], out[ob : ob + QK // 2 + 2], qk):
            return b
    if nf * QK < n:
        pad = np.zeros(QK, np.float32)
        pad[: n - nf * QK] = x[nf * QK :]
        if not _q4_0_block(pad, pad.view(np.uint32), out[nf * (QK // 2 + 2) :], qk):
            return nf
    return -1


def _q4_0_decode(raw, lut, out):
    n = out.size
    qk = QK + (n >> 62)  # see _q8_0_encode
    for b in range(raw.size // (QK // 2 + 2)):
        blk, s = raw[b * (QK // 2 + 2) :], b * QK
        d = lut[np.int64(blk[0]) | (np.int64(blk[1]) << 8)]
        qs = blk[2:]
        if s + QK <= n:
            y, yh = out[s : s + QK // 2], out[s + QK // 2 : s + QK]
            for j in range(qk // 2):
                byte = np.int32(qs[j])
                y[j] = np.float32((byte & 0x0F) - 8) * d
                yh[j] = np.float32((byte >> 4) - 8) * d
        else:
            for j in range(n - s):
                byte = np.int32(qs[j % (QK // 2)])
                y_q = (byte & 0x0F) if j < QK // 2 else (byte >> 4)
                out[s + j] = np.float32(y_q - 8) * d


q8_0_encode = _njit(_SIG_ENC)(_q8_0_encode)
q8_0_decode = _njit(_SIG_DEC)(_q8_0_decode)
q4_0_encode = _njit(_SIG_ENC)(_q4_0_encode)
q4_0_decode = _njit(_SIG_DEC)(_q4_0_decode)
