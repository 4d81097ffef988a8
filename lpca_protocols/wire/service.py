"""`ResumeService`: the receiving half of a split forward, independent of any transport.

It admits a RESUME packet (hidden states after block ``l``), runs blocks
``l+1..L`` with `Backend.resume`, and answers with a RESULT packet: the last
position's logits, the top-k next tokens with log-probabilities, and/or the final
hidden states, as the request's REQUEST section asks. PING packets are echoed as
PONG without touching the model. Every refusal becomes a REJECT packet carrying the
error's code, so a client raises the same typed error the service raised.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lpca_envs.errors import LPCAError
from lpca_protocols import codecs
from lpca_protocols.codecs import CodebookStore
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import (
    MalformedPacketError,
    PacketCodecError,
    RemoteComputeError,
    WireError,
)
from lpca_protocols.wire.session import Endpoint, Receiver, ReplayGuard, encode_tensor

WANT_LOGITS, WANT_TOP, WANT_HIDDEN = 1, 2, 4
MAX_TOP_K = 1024
#: Codecs a client may ask the answer in (learned codecs would need a shared codebook).
REPLY_CODECS = ("fp32", "fp16", "bf16", "q8_0", "q4_0")


@dataclass(frozen=True)
class ResumeRequest:
    """What a RESUME asks back. Encoded as the packet's REQUEST section."""

    want: int = WANT_LOGITS | WANT_TOP
    top_k: int = 5
    reply_codec: str = "fp32"

    def section(self) -> pk.Section:
        return pk.Section(
            pk.SectionType.REQUEST, {"want": self.want, "top_k": self.top_k, "reply_codec": self.reply_codec}
        )

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> ResumeRequest:
        want, top_k = fields.get("want", WANT_LOGITS), fields.get("top_k", 0)
        reply = fields.get("reply_codec", "fp32")
        if not isinstance(want, int) or not 0 < want < 8:
            raise MalformedPacketError(f"REQUEST.want must be a bitmask in 1..7, got {want!r}")
        if not isinstance(top_k, int) or not 0 <= top_k <= MAX_TOP_K:
            raise MalformedPacketError(f"REQUEST.top_k must be in 0..{MAX_TOP_K}, got {top_k!r}")
        if reply not in REPLY_CODECS:
            raise PacketCodecError(f"REQUEST.reply_codec must be one of {REPLY_CODECS}, got {reply!r}")
        return cls(want, top_k, reply)


class ResumeService:
    """Answers RESUME and PING packets for one loaded model. Thread-compatible: one call at a time
    per model (the transport serializes model work); admission is cheap and may run anywhere."""

    def __init__(
        self,
        backend: Any,
        *,
        host: str = "",
        codebooks: CodebookStore | None = None,
        guard: ReplayGuard | None = None,
        max_packet: int = pk.DEFAULT_MAX_PACKET,
        **receiver_options: Any,
    ):
        self.backend = backend
        self.endpoint = (
            Endpoint.of(backend, host)
            if backend is not None
            else Endpoint(bytes(32), bytes(32), "", host or "echo")
        )
        self.receiver = Receiver(
            self.endpoint if backend is not None else None,
            guard=guard,
            codebooks=codebooks,
            max_packet=max_packet,
            **receiver_options,
        )

    # -- the three steps a transport drives -------------------------------------------------
    def admit(self, data: bytes | memoryview) -> pk.Packet:
        """Parse and check a request (no model work). Raises a `WireError` on refusal."""
        p = pk.decode(data, max_packet=self.receiver.max_packet)
        if p.kind not in (pk.Kind.RESUME, pk.Kind.PING):
            raise MalformedPacketError(f"a service answers RESUME and PING packets, got {p.kind.name}")
        check_model = p.kind == pk.Kind.RESUME
        if check_model:
            self.receiver.check_compatible(p)
            self.receiver.codec(p)
        self.receiver.guard.check(p.session, p.seq, p.timestamp_ns)
        return p

    def needs_model(self, p: pk.Packet) -> bool:
        return p.kind == pk.Kind.RESUME

    def answer(self, p: pk.Packet) -> bytes:
        """The RESULT / PONG bytes for an admitted packet, or a REJECT if the computation fails."""
        try:
            if p.kind == pk.Kind.PING:
                return self._reply(
                    p,
                    pk.Kind.PONG,
                    tensors=p.tensors,
                    codec_id=p.identity.codec_id,
                    codec_params=p.identity.codec_params,
                )
            return self._resume(p)
        except WireError as exc:
            return self.reject(exc, p.session, p.seq, p.identity.source)

    def handle(self, data: bytes | memoryview) -> bytes:
        """admit + answer in one call (the loopback path); refusals come back as REJECT bytes."""
        try:
            p = self.admit(data)
        except WireError as exc:
            session, seq = correlation(data)
            return self.reject(exc, session, seq)
        return self.answer(p)

    # -- internals ------------------------------------------------------------------------------
    def _resume(self, p: pk.Packet) -> bytes:
        if self.backend is None:
            raise RemoteComputeError("this service hosts no model (echo mode)")
        sec = p.section(pk.SectionType.REQUEST)
        req = ResumeRequest.from_fields(sec.fields if sec else {})
        if p.identity.layer is None:
            raise MalformedPacketError("a RESUME packet must name the layer boundary")
        hidden = self.receiver.array(p, "hidden")
        t0 = time.perf_counter_ns()
        n = self.backend.info.n_layers
        try:
            fwd = self.backend.resume(
                hidden.astype(np.float32),
                p.identity.layer,
                logits="last",
                capture=[n] if req.want & WANT_HIDDEN else (),
            )
        except LPCAError as exc:
            raise RemoteComputeError(f"{type(exc).__name__}: {exc}") from None
        compute_ns = time.perf_counter_ns() - t0
        fields: dict[str, Any] = {"compute_ns": compute_ns, "n_positions": fwd.n_positions}
        if req.want & WANT_TOP and req.top_k:
            logits = fwd.logits.astype(np.float64)
            k = min(req.top_k, logits.size)
            top = np.argpartition(-logits, k - 1)[:k]
            top = top[np.argsort(-logits[top], kind="stable")]
            m = logits.max()
            logz = m + np.log(np.exp(logits - m).sum())
            fields["top_ids"] = top.astype(np.int64)
            fields["top_logprobs"] = (logits[top] - logz).astype(np.float32)
        codec = codecs.get(req.reply_codec)
        tensors = []
        if req.want & WANT_LOGITS:
            tensors.append(encode_tensor("logits", fwd.logits, codec))
        if req.want & WANT_HIDDEN:
            tensors.append(encode_tensor("hidden", fwd.hidden[n], codec))
        return self._reply(
            p,
            pk.Kind.RESULT,
            tensors=tuple(tensors),
            sections=(pk.Section(pk.SectionType.RESULT, fields),),
            codec_id=codec.codec_id,
            codec_params=codec.params(),
            layer=n,
        )

    def _reply(
        self,
        p: pk.Packet,
        kind: pk.Kind,
        *,
        tensors: tuple[pk.Tensor, ...] = (),
        sections: tuple[pk.Section, ...] = (),
        codec_id: int = 1,
        codec_params: bytes = b"",
        layer: int | None = None,
    ) -> bytes:
        e = self.endpoint
        ident = pk.Identity(
            e.model_fingerprint,
            e.tokenizer_fingerprint,
            e.weight_quant,
            p.identity.span,
            e.host,
            p.identity.source,
            layer,
            codec_id,
            codec_params,
        )
        return pk.encode(pk.Packet(kind, p.session, p.seq, ident, sections, tensors, time.time_ns()))

    def reject(self, exc: WireError, session: bytes = bytes(16), seq: int = 0, target: str = "") -> bytes:
        """A REJECT packet carrying `exc`'s code and message, correlated to (session, seq)."""
        e = self.endpoint
        ident = pk.Identity(
            e.model_fingerprint, e.tokenizer_fingerprint, e.weight_quant, 0, e.host, target[:255]
        )
        sec = pk.Section(pk.SectionType.REJECT, {"code": exc.code, "message": str(exc)[:4000]})
        return pk.encode(pk.Packet(pk.Kind.REJECT, session, seq, ident, (sec,), (), time.time_ns()))


def correlation(data: bytes | memoryview) -> tuple[bytes, int]:
    """(session, seq) of a packet that failed to parse, if its fixed header is readable."""
    if len(data) >= pk.HEADER_SIZE and bytes(data[:4]) == pk.MAGIC:
        fields = pk.HEADER.unpack_from(data, 0)
        return bytes(fields[7]), fields[8]
    return bytes(16), 0
