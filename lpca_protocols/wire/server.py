"""`WireServer`: an asyncio TCP server for a `ResumeService`.

Frames are whole packets: the first 16 bytes announce the total length (checked
against `max_frame` before anything is buffered beyond them). Connections are
persistent and pipelined: a client may have up to `max_inflight` requests open
per connection, answered as they complete and matched by sequence number.

- Model work runs on one worker thread (one model, one computation at a time); at
  most `max_queue` computations wait, beyond that a request gets `OverloadedError`.
- Backpressure: a connection with `max_inflight` open requests, or whose replies
  are not being read (the socket's write buffer is full), is not read from until
  that clears; TCP then slows the client down.
- Memory: the bytes the server holds for requests (partial frames, reserved at their
  announced length as soon as the 16-byte prefix arrives, plus frames waiting for the
  model) stay within `max_buffered` across all connections. A frame that would pass
  it is refused as overloaded (correlated by its header) and its bytes are read and
  dropped as they arrive, so the connection stays usable.
- A frame that stays incomplete for `read_timeout` seconds closes the connection,
  as does any REJECT whose code closes it (docs/wire.md: malformed, checksum,
  version, frame too large), wherever it was raised: a stream that cannot be framed
  cannot be trusted.
- `close(grace)` stops accepting, stops reading, lets open requests finish for up
  to `grace` seconds, then closes every connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import Any

from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import (
    ChecksumError,
    FrameTooLargeError,
    MalformedPacketError,
    OverloadedError,
    RemoteComputeError,
    VersionMismatchError,
    WireError,
)
from lpca_protocols.wire.service import ResumeService, correlation

#: Errors after which the byte stream can no longer be framed reliably.
_FATAL = (MalformedPacketError, ChecksumError, FrameTooLargeError, VersionMismatchError)
_FATAL_CODES = frozenset(cls.code for cls in _FATAL)
DEFAULT_MAX_BUFFERED = 256 << 20


def _closing_reject(reply: bytes) -> bool:
    """Whether `reply` is a REJECT whose code closes the connection (checked on the answer path)."""
    if len(reply) < pk.HEADER_SIZE or reply[6] != pk.Kind.REJECT:
        return False
    try:
        sec = pk.decode(reply).section(pk.SectionType.REJECT)
    except WireError:
        return True
    return sec is not None and sec.fields.get("code") in _FATAL_CODES


class WireServer:
    def __init__(
        self,
        service: ResumeService,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_frame: int = pk.DEFAULT_MAX_PACKET,
        max_inflight: int = 16,
        max_queue: int = 256,
        max_connections: int = 1024,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        read_timeout: float = 30.0,
        idle_timeout: float | None = None,
    ):
        if max_buffered < max_frame:
            raise ValueError(f"max_buffered ({max_buffered}) must be at least max_frame ({max_frame})")
        self.service, self.host, self.port = service, host, port
        self.max_frame, self.max_inflight, self.max_queue = max_frame, max_inflight, max_queue
        self.max_buffered = max_buffered
        #: Bytes held for requests now: partial frames (reserved at full length) and queued frames.
        self.buffered = 0
        self.max_connections = max_connections
        self.read_timeout, self.idle_timeout = read_timeout, idle_timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lpca-model")
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Connection] = set()
        self.queued = 0
        self.closing = False
        self.stats = {"connections": 0, "frames": 0, "rejected": 0, "dropped_connections": 0}

    async def start(self) -> WireServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    async def close(self, grace: float = 5.0) -> None:
        """Graceful shutdown: no new connections or requests; open requests get `grace` seconds."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.stop_reading()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.inflight for c in self._conns) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        for c in list(self._conns):
            c.close()
        if self._server is not None:
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> WireServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class _Connection(asyncio.Protocol):
    def __init__(self, server: WireServer):
        self.server = server
        self.buf = bytearray()
        self.held = 0  # what this connection's buffer counts in server.buffered
        self.reserved = 0  # announced length of the partial frame in buf, once admitted
        self.skip = 0  # bytes of a refused frame still to read and drop
        self.transport: asyncio.Transport | None = None
        self.inflight = 0
        self.closed = False
        self._write_paused = False
        self._reading = True
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""

    # -- asyncio callbacks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        s = self.server
        if s.closing or len(s._conns) >= s.max_connections:
            self._send_reject(OverloadedError("server is closing or at its connection limit"))
            self.close()
            return
        s._conns.add(self)
        s.stats["connections"] += 1
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.server._conns.discard(self)
        if self.buf or self.skip:
            self.server.stats["dropped_connections"] += 1
        self.buf.clear()
        self.reserved = self.skip = 0
        self._account()

    def data_received(self, data: bytes) -> None:
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
            if not data:
                if self.skip:
                    self._arm(self.server.read_timeout, "frame")
                else:
                    self._arm_idle()
                return
        self.buf += data
        self._frames()

    def _account(self) -> None:
        held = max(len(self.buf), self.reserved)
        self.server.buffered += held - self.held
        self.held = held

    def pause_writing(self) -> None:  # the client is not reading our replies: stop reading its requests
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- framing --------------------------------------------------------------------------
    def _frames(self) -> None:
        s = self.server
        progressed = False
        while not self.closed and not self._stopped:
            if len(self.buf) < pk.PREFIX_SIZE:
                break
            try:
                total = pk.peek_length(bytes(self.buf[: pk.PREFIX_SIZE]), s.max_frame)
            except WireError as exc:
                self._fatal(exc, bytes(self.buf[: pk.HEADER_SIZE]))
                return
            if len(self.buf) < total:
                if self.reserved != total and s.buffered - self.held + total > s.max_buffered:
                    if len(self.buf) < pk.HEADER_SIZE:
                        break  # wait for the header, to say which request is refused
                    self._refuse_partial(total)
                    if self.skip:
                        break
                    continue
                self.reserved = total
                break
            frame = bytes(self.buf[:total])
            del self.buf[:total]
            self.reserved = 0
            self._account()
            s.stats["frames"] += 1
            progressed = True
            self._dispatch(frame)
            if self.inflight >= s.max_inflight:
                break
        self._account()
        self._update_reading()
        if not self.buf and not self.skip:
            self._arm_idle()
        elif progressed or self._timer_kind != "frame":
            # A frame must complete within read_timeout of its start, however slowly its bytes trickle in.
            self._arm(self.server.read_timeout, "frame")

    def _dispatch(self, frame: bytes) -> None:
        s = self.server
        try:
            p = s.service.admit(frame)
        except WireError as exc:
            s.stats["rejected"] += 1
            session, seq = correlation(frame)
            if isinstance(exc, _FATAL):
                self._fatal(exc, frame)
            else:
                self._write(s.service.reject(exc, session, seq))
            return
        if not s.service.needs_model(p):
            self._write(s.service.answer(p))
            return
        if s.queued >= s.max_queue or s.buffered + len(frame) > s.max_buffered:
            s.stats["rejected"] += 1
            why = (
                f"{s.queued} requests queued"
                if s.queued >= s.max_queue
                else f"{s.buffered} bytes of requests held (limit {s.max_buffered})"
            )
            self._write(s.service.reject(OverloadedError(why), p.session, p.seq))
            return
        s.queued += 1
        s.buffered += len(frame)
        self.inflight += 1
        fut = s.submit(s.service.answer, p)
        fut.add_done_callback(lambda f, n=len(frame), p=p: self._answered(f, n, p))

    def _refuse_partial(self, total: int) -> None:
        """Refuse the partial frame at the head of buf (its bytes would pass max_buffered): answer
        OverloadedError for it and drop its bytes as they arrive."""
        s = self.server
        s.stats["rejected"] += 1
        session, seq = correlation(bytes(self.buf[: pk.HEADER_SIZE]))
        exc = OverloadedError(
            f"a frame of {total} bytes would pass the {s.max_buffered} bytes this server holds for "
            f"requests ({s.buffered - self.held} held); retry later"
        )
        self._write(s.service.reject(exc, session, seq))
        self.skip = total - len(self.buf)
        self.buf.clear()
        self.reserved = 0

    def _answered(self, fut: asyncio.Future[bytes], size: int, p: Any) -> None:
        self.server.queued -= 1
        self.server.buffered -= size
        self.inflight -= 1
        if not fut.cancelled():
            exc = fut.exception()
            reply = (
                fut.result()
                if exc is None
                else self.server.service.reject(
                    RemoteComputeError(f"{type(exc).__name__}: {exc}"), p.session, p.seq
                )
            )
            self._write(reply)
            if _closing_reject(reply):
                self.close()
                return
        if self._stopped and self.inflight == 0:
            return
        self._update_reading()
        if self.buf and not self.closed:
            self._frames()

    # -- helpers ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fatal(self, exc: WireError, head: bytes) -> None:
        session, seq = correlation(head)
        self.server.stats["rejected"] += 1
        self._send_reject(exc, session, seq)
        self.close()

    def _send_reject(self, exc: WireError, session: bytes = bytes(16), seq: int = 0) -> None:
        self._write(self.server.service.reject(exc, session, seq))

    def _update_reading(self) -> None:
        if self.closed or self.transport is None:
            return
        want = not self._stopped and not self._write_paused and self.inflight < self.server.max_inflight
        if want != self._reading:
            self._reading = want
            (self.transport.resume_reading if want else self.transport.pause_reading)()

    def stop_reading(self) -> None:
        self._stopped = True
        self._update_reading()

    def close(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
        self.server._conns.discard(self)

    def _arm(self, seconds: float | None, why: str) -> None:
        self._cancel_timer()
        if seconds is not None and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._timeout, why)
            self._timer_kind = why

    def _arm_idle(self) -> None:
        self._arm(self.server.idle_timeout, "idle")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_kind = ""

    def _timeout(self, why: str) -> None:
        if self.inflight:  # never cut a connection that is waiting for its own answers
            self._arm(self.server.read_timeout, why)
            return
        if self.transport is not None:
            self.transport.abort()
