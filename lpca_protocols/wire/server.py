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
- A frame that stays incomplete for `read_timeout` seconds closes the connection,
  as does any framing, checksum or version error (after a REJECT): a stream that
  cannot be framed cannot be trusted.
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
    VersionMismatchError,
    WireError,
)
from lpca_protocols.wire.service import ResumeService, correlation

#: Errors after which the byte stream can no longer be framed reliably.
_FATAL = (MalformedPacketError, ChecksumError, FrameTooLargeError, VersionMismatchError)


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
        read_timeout: float = 30.0,
        idle_timeout: float | None = None,
    ):
        self.service, self.host, self.port = service, host, port
        self.max_frame, self.max_inflight, self.max_queue = max_frame, max_inflight, max_queue
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
        if self.buf:
            self.server.stats["dropped_connections"] += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._frames()

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
                break
            frame = bytes(self.buf[:total])
            del self.buf[:total]
            s.stats["frames"] += 1
            progressed = True
            self._dispatch(frame)
            if self.inflight >= s.max_inflight:
                break
        self._update_reading()
        if not self.buf:
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
        if s.queued >= s.max_queue:
            s.stats["rejected"] += 1
            self._write(s.service.reject(OverloadedError(f"{s.queued} requests queued"), p.session, p.seq))
            return
        s.queued += 1
        self.inflight += 1
        fut = s.submit(s.service.answer, p)
        fut.add_done_callback(self._answered)

    def _answered(self, fut: asyncio.Future[bytes]) -> None:
        self.server.queued -= 1
        self.inflight -= 1
        if not fut.cancelled() and fut.exception() is None:
            self._write(fut.result())
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
