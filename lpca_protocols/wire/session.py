"""Both ends of a packet stream: `Sender` numbers and stamps packets, `Receiver` admits them.

A receiver checks, in this order and before it decodes any tensor: framing, protocol
version and CRC32C (`packet.decode`), then the model and tokenizer fingerprints and
the weight quantization, the codec, and finally replay (`ReplayGuard`). Each refusal
is its own `WireError` subclass.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpca_protocols import codecs
from lpca_protocols.codecs import CodebookStore, Codec, CodecError
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import (
    DuplicatePacketError,
    MalformedPacketError,
    ModelMismatchError,
    OverloadedError,
    PacketCodecError,
    PayloadTooLargeError,
    StalePacketError,
    TokenizerMismatchError,
)

#: Receivers refuse tensors that would decode to more float32 values than this (64 MiB).
DEFAULT_MAX_ELEMENTS = 1 << 24
_DTYPES = {np.dtype(np.float32): pk.DType.FLOAT32, np.dtype(np.float16): pk.DType.FLOAT16}


@dataclass(frozen=True)
class Endpoint:
    """What one side of a channel is: its model identity and host name."""

    model_fingerprint: bytes
    tokenizer_fingerprint: bytes
    weight_quant: str
    host: str
    n_layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    #: The model's ``max_position_embeddings`` (from its config.json), if known.
    max_positions: int | None = None

    @classmethod
    def of(cls, backend: Any, host: str = "") -> Endpoint:
        """The endpoint of a loaded `Backend` (fingerprints from its model directory)."""
        info = backend.info
        return cls(
            bytes.fromhex(info.fingerprint)[:32].ljust(32, b"\0"),
            tokenizer_fingerprint(backend),
            info.dtype,
            host or os.uname().nodename,
            info.n_layers,
            info.hidden_size,
            info.vocab_size,
            max_positions(backend),
        )


def max_positions(backend: Any) -> int | None:
    """``max_position_embeddings`` of the backend's model directory (text config first), or None."""
    path = getattr(backend, "path", None)
    if path is None:
        return None
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for c in (cfg.get("text_config") or {}, cfg):
        v = c.get("max_position_embeddings") if isinstance(c, dict) else None
        if type(v) is int and v > 0:
            return v
    return None


def tokenizer_fingerprint(backend: Any) -> bytes:
    """sha256 of the tokenizer files in the backend's model directory (names and lengths framed).

    A backend without a directory falls back to hashing how it tokenizes a fixed probe text.
    """
    from lpca_models.zoo import TOKENIZER_FILES

    h = hashlib.sha256(b"lpca-tokenizer-v1\0")
    path = getattr(backend, "path", None)
    found = False
    if path is not None:
        for name in sorted(TOKENIZER_FILES):
            f = Path(path) / name
            if f.is_file():
                data = f.read_bytes()
                h.update(f"\0{name}\0{len(data)}\0".encode())
                h.update(data)
                found = True
    if not found:
        probe = "The quick brown fox jumps over the lazy dog. 0123456789 ¿Qué? 日本語 <|im_start|>"
        h.update(repr((backend.info.vocab_size, backend.tokenize(probe))).encode())
    return h.digest()


class ReplayGuard:
    """Admits each (session, sequence number) once, within a sliding window, with bounded memory.

    Per session it keeps the highest sequence number and a bitmap of the `window`
    numbers below it (like IPsec/DTLS anti-replay): a number seen before is a
    `DuplicatePacketError`; one below the window, or a timestamp older than
    `max_age_s` (or that far in the future: clock skew), is a `StalePacketError`.
    Sessions idle for longer than `max_age_s` are forgotten, which is safe because
    their packets would be stale anyway; if `max_sessions` live sessions fill the
    table, new sessions get `OverloadedError` instead of evicting live state.
    """

    def __init__(self, window: int = 1024, max_sessions: int = 65536, max_age_s: float | None = 300.0):
        self.window, self.max_sessions, self.max_age_s = window, max_sessions, max_age_s
        self._sessions: OrderedDict[bytes, list[int]] = OrderedDict()  # session -> [highest, bitmap, seen_ns]
        self._lock = threading.Lock()

    def check(self, session: bytes, seq: int, timestamp_ns: int, now_ns: int | None = None) -> None:
        """Admit the packet or raise; admitted numbers are remembered."""
        now = time.time_ns() if now_ns is None else now_ns
        if seq < 1:
            raise MalformedPacketError(f"sequence numbers start at 1, got {seq}")
        if self.max_age_s is not None and abs(now - timestamp_ns) > self.max_age_s * 1e9:
            raise StalePacketError(
                f"packet timestamp is {(now - timestamp_ns) / 1e9:+.1f} s from this receiver's clock "
                f"(allowed ±{self.max_age_s:g} s)"
            )
        with self._lock:
            state = self._sessions.get(session)
            if state is None:
                self._expire(now)
                if len(self._sessions) >= self.max_sessions:
                    raise OverloadedError(
                        f"replay table holds {self.max_sessions} live sessions; retry later"
                    )
                self._sessions[session] = [seq, 1, now]
                return
            highest, bitmap, _ = state
            if seq > highest:
                shift = seq - highest
                bitmap = ((bitmap << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
                state[0], state[1] = seq, bitmap
            else:
                back = highest - seq
                if back >= self.window:
                    raise StalePacketError(
                        f"sequence number {seq} is behind the replay window "
                        f"(highest {highest}, window {self.window})"
                    )
                if bitmap >> back & 1:
                    raise DuplicatePacketError(
                        f"sequence number {seq} of session {session.hex()[:12]} was already seen"
                    )
                state[1] = bitmap | (1 << back)
            state[2] = now
            self._sessions.move_to_end(session)

    def _expire(self, now: int) -> None:
        if self.max_age_s is None:
            return
        limit = now - self.max_age_s * 1e9
        while self._sessions:
            key, state = next(iter(self._sessions.items()))
            if state[2] >= limit:
                break
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)


class Sender:
    """Builds packets of one session: a random 16-byte session id, sequence numbers from 1, timestamps."""

    def __init__(self, endpoint: Endpoint, target: str = "", session: bytes | None = None):
        self.endpoint, self.target = endpoint, target
        self.session = os.urandom(16) if session is None else session
        self._seq = 0
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def packet(
        self,
        kind: pk.Kind,
        arrays: dict[str, np.ndarray] | None = None,
        *,
        codec: Codec | str = "fp32",
        layer: int | None = None,
        sections: Sequence[pk.Section] = (),
        span: int = 0,
        seq: int | None = None,
        session: bytes | None = None,
    ) -> tuple[int, bytes]:
        """(sequence number, wire bytes) of a packet carrying `arrays` encoded with `codec`."""
        c = codecs.get(codec)
        tensors = tuple(encode_tensor(name, a, c) for name, a in (arrays or {}).items())
        ident = pk.Identity(
            self.endpoint.model_fingerprint,
            self.endpoint.tokenizer_fingerprint,
            self.endpoint.weight_quant,
            span,
            self.endpoint.host,
            self.target,
            layer,
            c.codec_id,
            c.params(),
        )
        seq = self.next_seq() if seq is None else seq
        p = pk.Packet(kind, session or self.session, seq, ident, tuple(sections), tensors, time.time_ns())
        return seq, pk.encode(p)


def encode_tensor(name: str, array: Any, codec: Codec) -> pk.Tensor:
    a = np.asarray(array)
    dtype = _DTYPES.get(a.dtype)
    if dtype is None:
        dtype = pk.DType.BFLOAT16 if a.dtype.name == "bfloat16" else pk.DType.FLOAT32
    return pk.Tensor(name, tuple(a.shape), codec.encode(a), dtype)


class Receiver:
    """Admits packets for one endpoint: compatibility, codec and replay checks, then bounded decoding."""

    def __init__(
        self,
        endpoint: Endpoint | None = None,
        *,
        guard: ReplayGuard | None = None,
        codebooks: CodebookStore | None = None,
        max_packet: int = pk.DEFAULT_MAX_PACKET,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        check_weight_quant: bool = True,
    ):
        self.endpoint = endpoint
        self.guard = guard if guard is not None else ReplayGuard()
        self.codebooks = codebooks
        self.max_packet, self.max_elements = max_packet, max_elements
        self.check_weight_quant = check_weight_quant

    def receive(self, data: bytes | memoryview, *, check_model: bool = True) -> pk.Packet:
        """Parse and admit one packet (raises the specific `WireError` for each refusal)."""
        p = pk.decode(data, max_packet=self.max_packet)
        if check_model:
            self.check_compatible(p)
        if p.tensors:
            self.codec(p)
        self.guard.check(p.session, p.seq, p.timestamp_ns)
        return p

    def check_compatible(self, p: pk.Packet) -> None:
        e = self.endpoint
        if e is None:
            return
        i = p.identity
        if i.model_fingerprint != e.model_fingerprint:
            raise ModelMismatchError(
                f"packet from model {i.model_fingerprint.hex()[:12]}... ({i.source or '?'}); "
                f"this receiver runs {e.model_fingerprint.hex()[:12]}..."
            )
        if i.tokenizer_fingerprint != e.tokenizer_fingerprint:
            raise TokenizerMismatchError(
                f"packet tokenizer {i.tokenizer_fingerprint.hex()[:12]}...; "
                f"this receiver's is {e.tokenizer_fingerprint.hex()[:12]}..."
            )
        if self.check_weight_quant and i.weight_quant != e.weight_quant:
            raise ModelMismatchError(
                f"packet weights are {i.weight_quant!r}, this receiver runs {e.weight_quant!r}"
            )

    def codec(self, p: pk.Packet) -> Codec:
        try:
            return codecs.from_wire(p.identity.codec_id, p.identity.codec_params, codebooks=self.codebooks)
        except CodecError as exc:
            raise PacketCodecError(str(exc)) from None

    def array(self, p: pk.Packet, name: str, codec: Codec | None = None) -> np.ndarray:
        """Decode tensor `name` of an admitted packet (float32; float16 if the sender held float16)."""
        t = p.tensor(name)
        if t is None:
            raise MalformedPacketError(f"packet has no tensor {name!r}; it has {[t.name for t in p.tensors]}")
        return self.decode_tensor(t, codec or self.codec(p))

    def decode_tensor(self, t: pk.Tensor, codec: Codec) -> np.ndarray:
        n = math.prod(t.shape)
        if n > self.max_elements:
            raise PayloadTooLargeError(
                f"tensor {t.name!r} of shape {t.shape} has {n} elements; "
                f"this receiver allows {self.max_elements}"
            )
        try:
            a = codec.decode(t.data, t.shape)
        except CodecError as exc:
            raise PacketCodecError(f"tensor {t.name!r}: {exc}") from None
        return a.astype(np.float16) if t.dtype == pk.DType.FLOAT16 else a
