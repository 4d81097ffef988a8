"""`ResumeService`: the receiving half of a split forward, independent of any transport.

It admits a RESUME packet (hidden states after block ``l``), runs blocks
``l+1..L`` with `Backend.resume`, and answers with a RESULT packet: the last
position's logits, the top-k next tokens with log-probabilities, and/or the final
hidden states, as the request's REQUEST section asks. PING packets are echoed as
PONG without touching the model. Admission (`admission.py`) checks every declared
field, shape, codec parameter and size against the model and `AdmissionLimits`
before anything is decoded or computed. Every refusal, and any failure while
answering, becomes a REJECT packet carrying a typed error's code, so a client
raises the same typed error the service raised; nothing else escapes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lpca_envs.errors import LPCAError
from lpca_protocols import codecs
from lpca_protocols.codecs import CodebookStore
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.admission import (
    MAX_TOP_K,
    REPLY_CODECS,
    WANT_HIDDEN,
    WANT_LOGITS,
    WANT_TOP,
    Admission,
    AdmissionLimits,
    ResumeRequest,
)
from lpca_protocols.wire.errors import (
    MalformedPacketError,
    RemoteComputeError,
    WireError,
)
from lpca_protocols.wire.session import Endpoint, Receiver, ReplayGuard, encode_tensor

__all__ = [
    "MAX_TOP_K",
    "REPLY_CODECS",
    "WANT_HIDDEN",
    "WANT_LOGITS",
    "WANT_TOP",
    "AdmissionLimits",
    "ResumeRequest",
    "ResumeService",
    "correlation",
]


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
        limits: AdmissionLimits | None = None,
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
        e = self.endpoint
        self.admission = Admission(
            hidden_size=e.hidden_size,
            n_layers=e.n_layers,
            vocab_size=e.vocab_size,
            model_max_positions=e.max_positions,
            limits=limits or AdmissionLimits(),
            max_reply=max_packet,
        )

    def warm(self) -> None:
        """Build now every codec table admission allows (rotations of the accepted seeds at the hidden
        size, Lloyd-Max and trellis alphabets at every width): afterwards no accepted packet pays a
        one-time cost (up to seconds per rotation on CPU)."""
        from lpca_protocols.codecs import rotq, tcq

        rotations = self.admission.rotations()
        for d, seed, kind in rotations:
            rotq.rotation_matrix(d, seed, kind)
        if rotations:
            d = rotations[0][0]
            for b in range(1, 9):
                rotq.lloyd_max(d, b)
                tcq.tcq_alphabet(d, b)

    # -- the three steps a transport drives -------------------------------------------------
    def admit(self, data: bytes | memoryview) -> pk.Packet:
        """Parse and check a request (no model work). Raises a `WireError` on refusal."""
        p = pk.decode(data, max_packet=self.receiver.max_packet)
        if p.kind not in (pk.Kind.RESUME, pk.Kind.PING):
            raise MalformedPacketError(f"a service answers RESUME and PING packets, got {p.kind.name}")
        if p.kind == pk.Kind.RESUME:
            self.receiver.check_compatible(p)
            if self.backend is None:
                raise RemoteComputeError("this service hosts no model (echo mode)")
            self.admission.check(p, self.receiver.codec(p))
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
        except Exception as exc:  # the service always answers, and only with typed errors
            err = RemoteComputeError(f"{type(exc).__name__}: {exc}")
            return self.reject(err, p.session, p.seq, p.identity.source)

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
        ok = self.admission.check(p, self.receiver.codec(p))  # cheap; answer() may be called directly
        req = ok.request
        hidden = self.receiver.array(p, "hidden", ok.codec)
        t0 = time.perf_counter_ns()
        n = self.backend.info.n_layers
        try:
            fwd = self.backend.resume(
                hidden.astype(np.float32, copy=False),
                ok.layer,
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
