"""Clients of a `ResumeService`: over TCP (`WireClient`, asyncio), in-process (`LoopbackClient`),
and a blocking wrapper for synchronous code (`BlockingClient`).

All three build the same packets and read the same replies: the loopback mode
serializes and parses exactly the bytes the network would carry.

    async with WireClient.for_backend(backend, host, port) as client:
        r = await client.resume(hidden, layer=24, codec="q8_0")
        r.top_ids, r.top_logprobs, r.logits
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from lpca_protocols import codecs
from lpca_protocols.codecs import CodebookStore, Codec
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import (
    ConnectionClosedError,
    MalformedPacketError,
    TransportTimeoutError,
    WireError,
    error_for_code,
)
from lpca_protocols.wire.service import WANT_HIDDEN, WANT_LOGITS, WANT_TOP, ResumeRequest, ResumeService
from lpca_protocols.wire.session import Endpoint, Receiver, ReplayGuard, Sender

T = TypeVar("T")


@dataclass(frozen=True)
class ResumeResult:
    """What came back from a RESUME, plus the exact cost of the state that was sent."""

    logits: np.ndarray | None
    hidden: np.ndarray | None
    top_ids: np.ndarray | None
    top_logprobs: np.ndarray | None
    compute_ns: int
    payload_bits: int
    request_bytes: int
    reply_bytes: int


class _Caller:
    """Builds RESUME / PING packets of one session and reads the replies."""

    def __init__(
        self,
        endpoint: Endpoint,
        target: str = "",
        *,
        max_packet: int = pk.DEFAULT_MAX_PACKET,
        codebooks: CodebookStore | None = None,
    ):
        self.sender = Sender(endpoint, target)
        # Replies are matched to requests by sequence number; the guard is not needed on this side.
        self.receiver = Receiver(
            None, guard=ReplayGuard(max_age_s=None), codebooks=codebooks, max_packet=max_packet
        )

    def _resume_packet(
        self,
        hidden: Any,
        layer: int,
        codec: Codec | str,
        request: ResumeRequest,
        sections: Sequence[pk.Section],
        span: int,
    ) -> tuple[int, bytes, int]:
        c = codecs.get(codec)
        h = np.asarray(hidden)
        seq, data = self.sender.packet(
            pk.Kind.RESUME,
            {"hidden": h},
            codec=c,
            layer=layer,
            sections=(request.section(), *sections),
            span=span,
        )
        return seq, data, c.bits(h.shape)

    def _parse_reply(self, data: bytes, seq: int, expect: pk.Kind) -> pk.Packet:
        p = pk.decode(data, max_packet=self.receiver.max_packet)
        if p.kind == pk.Kind.REJECT:
            sec = p.section(pk.SectionType.REJECT)
            fields = sec.fields if sec else {}
            code, msg = fields.get("code", 0), fields.get("message", "")
            raise error_for_code(code if type(code) is int else 0, msg if isinstance(msg, str) else repr(msg))
        if p.kind != expect or p.seq != seq or p.session != self.sender.session:
            raise MalformedPacketError(f"expected {expect.name} for #{seq}, got {p.kind.name} #{p.seq}")
        return p

    def _result(
        self, p: pk.Packet, req: ResumeRequest, positions: int, bits: int, sent: int, received: int
    ) -> ResumeResult:
        """The RESULT `p` answering `req` over `positions` positions, every field checked (typed errors
        only, whatever a server sends; nothing is decoded that was not asked for)."""
        sec = p.section(pk.SectionType.RESULT)
        f = sec.fields if sec else {}
        compute_ns, top_ids, top_lp = f.get("compute_ns", 0), f.get("top_ids"), f.get("top_logprobs")
        if type(compute_ns) is not int or compute_ns < 0:
            raise MalformedPacketError(
                f"RESULT.compute_ns must be a non-negative integer, got {compute_ns!r}"[:300]
            )
        for name, value, dtype in (("top_ids", top_ids, np.int64), ("top_logprobs", top_lp, np.float32)):
            if value is not None and (not isinstance(value, np.ndarray) or value.dtype != dtype):
                raise MalformedPacketError(
                    f"RESULT.{name} must be an array of {np.dtype(dtype)}, got {value!r}"[:300]
                )
        if (top_ids is None) != (top_lp is None) or (
            top_ids is not None and not len(top_ids) == len(top_lp) <= req.top_k  # type: ignore[arg-type]
        ):
            raise MalformedPacketError(
                f"RESULT.top_ids and top_logprobs must be arrays of the same length <= top_k={req.top_k}"
            )
        e = self.sender.endpoint
        asked = {"logits": bool(req.want & WANT_LOGITS), "hidden": bool(req.want & WANT_HIDDEN)}
        shapes = {"logits": (None,), "hidden": (positions, e.hidden_size)}  # the head may pad the vocab
        for t in p.tensors:
            if not asked.get(t.name):
                raise MalformedPacketError(f"the reply carries tensor {t.name!r}, which was not asked for")
            want = shapes[t.name]
            if len(t.shape) != len(want) or any(w is not None and w != s for w, s in zip(want, t.shape)):
                raise MalformedPacketError(
                    f"reply tensor {t.name!r} has shape {list(t.shape)}, expected {want}"
                )
        codec = None
        if p.tensors:
            codec = self.receiver.codec(p)
            if codec.name != req.reply_codec:
                raise MalformedPacketError(
                    f"the reply is encoded in {codec.spec}; {req.reply_codec} was asked"
                )
        logits = self.receiver.array(p, "logits", codec) if p.tensor("logits") else None
        hidden = self.receiver.array(p, "hidden", codec) if p.tensor("hidden") else None
        return ResumeResult(logits, hidden, top_ids, top_lp, compute_ns, bits, sent, received)  # type: ignore[arg-type]


class LoopbackClient(_Caller):
    """In-process: same packets, same checks, no socket. Synchronous."""

    def __init__(self, service: ResumeService, endpoint: Endpoint | None = None, **kwargs: Any):
        super().__init__(endpoint or service.endpoint, service.endpoint.host, **kwargs)
        self.service = service

    def resume(
        self,
        hidden: Any,
        layer: int,
        *,
        codec: Codec | str = "fp16",
        want: int = WANT_LOGITS | WANT_TOP,
        top_k: int = 5,
        reply_codec: str = "fp32",
        sections: Sequence[pk.Section] = (),
        span: int = 0,
    ) -> ResumeResult:
        req = ResumeRequest(want, top_k, reply_codec)
        seq, data, bits = self._resume_packet(hidden, layer, codec, req, sections, span)
        reply = self.service.handle(data)
        p = self._parse_reply(reply, seq, pk.Kind.RESULT)
        return self._result(p, req, _positions(hidden), bits, len(data), len(reply))

    def ping(self, payload: bytes = b"") -> pk.Packet:
        seq, data = _ping(self.sender, payload)
        return self._parse_reply(self.service.handle(data), seq, pk.Kind.PONG)


def _positions(hidden: Any) -> int:
    shape = np.shape(hidden)
    return int(shape[0]) if len(shape) == 2 else 1


def _ping(sender: Sender, payload: bytes) -> tuple[int, bytes]:
    """A PING carrying `payload` (cut to a multiple of 4 bytes) as one fp32 tensor, echoed untouched."""
    seq = sender.next_seq()
    e = sender.endpoint
    ident = pk.Identity(
        e.model_fingerprint, e.tokenizer_fingerprint, e.weight_quant, 0, e.host, sender.target
    )
    t = pk.Tensor("echo", (len(payload) // 4,), payload[: len(payload) // 4 * 4])
    return seq, pk.encode(pk.Packet(pk.Kind.PING, sender.session, seq, ident, (), (t,), time.time_ns()))


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: WireClient):
        self.client = client
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self._can_write = asyncio.get_running_loop().create_future()
        self._can_write.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= pk.PREFIX_SIZE:
            try:
                total = pk.peek_length(bytes(self.buf[: pk.PREFIX_SIZE]), self.client.max_packet)
            except WireError as exc:
                self.client._fail_all(exc)
                self.close()
                return
            if len(self.buf) < total:
                return
            frame = bytes(self.buf[:total])
            del self.buf[:total]
            self.client._deliver(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()  # nobody may stay parked on a connection that is gone
        self.client._lost(self, exc)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if not self._can_write.done():
            self._can_write.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WireClient(_Caller):
    """asyncio TCP client: one persistent connection (reopened on demand), pipelined requests."""

    def __init__(
        self,
        endpoint: Endpoint,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_packet: int = pk.DEFAULT_MAX_PACKET,
        target: str = "",
        codebooks: CodebookStore | None = None,
    ):
        super().__init__(endpoint, target or host, max_packet=max_packet, codebooks=codebooks)
        self.host, self.port, self.timeout, self.connect_timeout = host, port, timeout, connect_timeout
        self.max_packet = max_packet
        self._proto: _ClientProtocol | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def for_backend(cls, backend: Any, host: str, port: int, **kwargs: Any) -> WireClient:
        return cls(Endpoint.of(backend), host, port, **kwargs)

    async def connect(self) -> WireClient:
        if (
            self._proto is not None
            and self._proto.transport is not None
            and not self._proto.transport.is_closing()
        ):
            return self
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and not self._proto.transport.is_closing():  # type: ignore[union-attr]
                return self
            loop = asyncio.get_running_loop()
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _ClientProtocol(self), self.host, self.port),
                    self.connect_timeout,
                )
            except (TimeoutError, OSError) as exc:
                raise ConnectionClosedError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            self._proto = proto
        return self

    async def close(self) -> None:
        if self._proto is not None:
            self._proto.close()
            self._proto = None
        self._fail_all(ConnectionClosedError("client closed"))

    async def __aenter__(self) -> WireClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, data: bytes, seq: int, timeout: float | None = None) -> bytes:
        """Send one packet and wait for the reply with the same sequence number (raw bytes)."""
        await self.connect()
        proto = self._proto
        assert proto is not None and proto.transport is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._pending[seq] = fut
        t = self.timeout if timeout is None else timeout
        timer = loop.call_later(
            t, _expire, fut, f"no reply to #{seq} from {self.host}:{self.port} in {t:g} s"
        )
        try:
            proto.transport.write(data)
            if not proto._can_write.done():  # the server is not reading: wait, don't buffer without bound
                await asyncio.wait([proto._can_write, fut], return_when=asyncio.FIRST_COMPLETED)
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(seq, None)

    async def resume(
        self,
        hidden: Any,
        layer: int,
        *,
        codec: Codec | str = "fp16",
        want: int = WANT_LOGITS | WANT_TOP,
        top_k: int = 5,
        reply_codec: str = "fp32",
        sections: Sequence[pk.Section] = (),
        span: int = 0,
        timeout: float | None = None,
    ) -> ResumeResult:
        req = ResumeRequest(want, top_k, reply_codec)
        seq, data, bits = self._resume_packet(hidden, layer, codec, req, sections, span)
        reply = await self.request(data, seq, timeout)
        p = self._parse_reply(reply, seq, pk.Kind.RESULT)
        return self._result(p, req, _positions(hidden), bits, len(data), len(reply))

    async def ping(self, payload: bytes = b"", timeout: float | None = None) -> pk.Packet:
        seq, data = _ping(self.sender, payload)
        return self._parse_reply(await self.request(data, seq, timeout), seq, pk.Kind.PONG)

    # -- called by the protocol ---------------------------------------------------------------
    def _deliver(self, frame: bytes) -> None:
        if len(frame) < pk.HEADER_SIZE:
            return
        seq = pk.HEADER.unpack_from(frame, 0)[8]
        fut = self._pending.get(seq)
        if fut is not None and not fut.done():
            fut.set_result(frame)
        elif seq == 0:  # a refusal the server could not correlate (it closes the connection next)
            try:
                self._parse_reply(frame, 0, pk.Kind.REJECT)
            except WireError as exc:
                self._fail_all(exc)

    def _lost(self, proto: _ClientProtocol, exc: Exception | None) -> None:
        if proto is self._proto:
            self._proto = None
        self._fail_all(
            ConnectionClosedError(f"connection to {self.host}:{self.port} closed: {exc or 'by peer'}")
        )

    def _fail_all(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)


def _expire(fut: asyncio.Future[bytes], message: str) -> None:
    if not fut.done():
        fut.set_exception(TransportTimeoutError(message))


class BlockingClient:
    """A `WireClient` driven from synchronous code through a private event-loop thread."""

    def __init__(self, endpoint: Endpoint, host: str, port: int, **kwargs: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lpca-wire-client", daemon=True)
        self._thread.start()
        self.client = WireClient(endpoint, host, port, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def resume(self, hidden: Any, layer: int, **kwargs: Any) -> ResumeResult:
        return self._run(self.client.resume(hidden, layer, **kwargs))

    def ping(self, payload: bytes = b"") -> pk.Packet:
        return self._run(self.client.ping(payload))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(self.client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
