"""The asyncio TCP transport on real loopback sockets: correlation, reuse, limits, hostile clients,
shutdown."""

import asyncio
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest

import lpca_models
from lpca_models import Forward, ModelInfo
from lpca_protocols import wire
from lpca_protocols.wire import packet as pk


class FakeBackend:
    """A model-shaped stub: 'resume' returns logits = column sums of the hidden states, optionally slowly."""

    def __init__(self, delay=0.0, d=16, layers=4):
        self.info = ModelInfo("fake", "numpy", "fake", layers, d, d, "float32", "ab" * 32, False)
        self.path = None
        self.delay = delay
        self.calls = 0

    def tokenize(self, text, add_special_tokens=False):
        return [len(text)]

    def resume(self, hidden, layer, *, logits="last", capture=()):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if not 0 <= layer <= self.info.n_layers:
            raise lpca_models.LayerError(f"layer {layer} out of range")
        h = np.atleast_2d(hidden)
        return Forward(h.sum(axis=0), {c: h * 2 for c in capture}, None, len(h))


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def started(backend=None, **kwargs):
    service = wire.ResumeService(backend or FakeBackend(), host="server")
    return await wire.WireServer(service, "127.0.0.1", 0, **kwargs).start()


def client_for(server, **kwargs):
    return wire.WireClient(server.service.endpoint, "127.0.0.1", server.port, **kwargs)


def test_resume_over_tcp_matches_loopback_and_direct_call():
    b = lpca_models.load("tiny-random-llama")
    ids = b.tokenize("one two three four", add_special_tokens=True)
    ref = b.forward(ids, capture=[2, b.info.n_layers], logits="last")

    async def main():
        server = await started(b)
        async with wire.WireClient.for_backend(b, "127.0.0.1", server.port) as c:
            r = await c.resume(ref.hidden[2], 2, codec="fp32", want=7, top_k=4)
        await server.close()
        return r

    r = run(main())
    direct = b.resume(ref.hidden[2], 2, capture=[b.info.n_layers])
    assert np.array_equal(r.logits, direct.logits)
    assert np.allclose(r.logits, ref.logits, atol=1e-4)
    assert np.allclose(r.hidden, ref.hidden[b.info.n_layers], atol=1e-4)
    assert r.top_ids.tolist() == np.argsort(-ref.logits)[:4].tolist()
    assert r.payload_bits == 32 * ref.hidden[2].size and r.compute_ns > 0
    lb = wire.LoopbackClient(wire.ResumeService(b)).resume(ref.hidden[2], 2, codec="fp32", want=7, top_k=4)
    assert np.array_equal(lb.logits, r.logits) and lb.payload_bits == r.payload_bits


def test_pipelined_requests_are_correlated_on_one_connection():
    async def main():
        server = await started(FakeBackend(delay=0.002))
        async with client_for(server) as c:
            hs = [np.full((2, 16), i, np.float32) for i in range(40)]
            rs = await asyncio.gather(*[c.resume(h, 1, codec="fp32", want=1) for h in hs])
            for _ in range(20):
                await c.ping(b"abcd" * 1024)
        stats = dict(server.stats)
        await server.close()
        return rs, stats

    rs, stats = run(main())
    assert [float(r.logits[0]) for r in rs] == [2.0 * i for i in range(40)]
    assert stats["connections"] == 1 and stats["frames"] == 60


def test_typed_rejections_reach_the_client():
    async def main():
        server = await started()
        out = {}
        async with client_for(server) as c:
            seq, data = c.sender.packet(wire.Kind.PING, {"echo": np.zeros(4, np.float32)})
            await c.request(data, seq)
            try:
                c._parse_reply(await c.request(data, seq), seq, wire.Kind.PONG)
            except wire.WireError as exc:
                out["dup"] = exc
            try:
                await c.resume(np.zeros((1, 16), np.float32), 99)
            except wire.WireError as exc:
                out["layer"] = exc
            await c.ping()  # the connection is still usable
        stranger = wire.Endpoint(b"Z" * 32, b"T" * 32, "float32", "stranger")
        async with wire.WireClient(stranger, "127.0.0.1", server.port) as c:
            try:
                await c.resume(np.zeros((1, 16), np.float32), 1)
            except wire.WireError as exc:
                out["model"] = exc
        await server.close()
        return out

    out = run(main())
    assert isinstance(out["dup"], wire.DuplicatePacketError)
    assert isinstance(out["layer"], wire.RemoteComputeError) and "LayerError" in str(out["layer"])
    assert isinstance(out["model"], wire.ModelMismatchError)


def test_timeout_then_recovery():
    async def main():
        server = await started(FakeBackend(delay=0.5))
        async with client_for(server, timeout=0.1) as c:
            with pytest.raises(wire.TransportTimeoutError):
                await c.resume(np.zeros((1, 16), np.float32), 1)
            await c.ping(timeout=5)  # PING does not queue behind the model
            r = await c.resume(np.ones((1, 16), np.float32), 1, timeout=5)
        await server.close()
        return r

    assert run(main()).logits[0] == 1.0


def test_frame_over_the_limit_is_rejected_and_connection_closed():
    async def main():
        server = await started(max_frame=4096)
        async with client_for(server) as c:
            with pytest.raises(wire.FrameTooLargeError):
                await c.resume(np.zeros((100, 16), np.float32), 1, codec="fp32")
            # the client reconnects on its own
            await asyncio.sleep(0.05)
            await c.ping()
        await server.close()

    run(main())


def raw_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_packet(sock):
    head = b""
    while len(head) < pk.PREFIX_SIZE:
        chunk = sock.recv(pk.PREFIX_SIZE - len(head))
        if not chunk:
            return None
        head += chunk
    total = struct.unpack_from("<I", head, 8)[0]
    body = head
    while len(body) < total:
        chunk = sock.recv(total - len(body))
        if not chunk:
            return None
        body += chunk
    return wire.decode(body)


def test_server_survives_hostile_clients():
    """Garbage, half frames, slow trickles, abrupt disconnects: other clients keep being served."""

    async def main():
        server = await started(read_timeout=0.3)
        port = server.port
        good = client_for(server)
        await good.connect()

        def hostile():
            # 1. garbage: answered with a REJECT, then closed
            s = raw_connect(port)
            s.sendall(os.urandom(64))
            p = recv_packet(s)
            assert p is not None and p.kind == wire.Kind.REJECT
            assert s.recv(1) == b""
            s.close()
            # 2. half a frame, then disconnect
            seq, data = wire.Sender(server.service.endpoint).packet(
                wire.Kind.PING, {"e": np.zeros(64, np.float32)}
            )
            s = raw_connect(port)
            s.sendall(data[: len(data) // 2])
            s.close()
            # 3. a frame that stalls: dropped after read_timeout
            s = raw_connect(port)
            s.sendall(data[:20])
            s.settimeout(3)
            assert s.recv(1) == b""
            s.close()
            # 4. a valid frame with a corrupted checksum
            s = raw_connect(port)
            s.sendall(data[:-1] + bytes([data[-1] ^ 0xFF]))
            p = recv_packet(s)
            assert p.kind == wire.Kind.REJECT and p.seq == seq
            assert p.section(wire.SectionType.REJECT).fields["code"] == wire.ChecksumError.code
            s.close()

        t = asyncio.get_running_loop().run_in_executor(None, hostile)
        served = 0
        while not t.done():
            await good.ping(b"x" * 256)
            served += 1
            await asyncio.sleep(0.005)
        await t
        await good.ping()
        await good.close()
        await asyncio.sleep(0.05)
        conns = len(server._conns)
        stats = dict(server.stats)
        await server.close()
        return served, conns, stats

    served, conns, stats = run(main())
    assert served > 5
    assert conns == 0  # every hostile connection was cleaned up
    assert stats["dropped_connections"] >= 2 and stats["rejected"] >= 2


def test_flooding_client_does_not_starve_others():
    async def main():
        server = await started(FakeBackend(delay=0.01), max_inflight=4, max_queue=64)
        port = server.port
        ep = server.service.endpoint
        stop = threading.Event()

        def flood():
            s = raw_connect(port)
            s.settimeout(0.1)
            sender = wire.Sender(ep)
            hidden = {"hidden": np.zeros((256, 16), np.float32)}
            sent = 0
            while not stop.is_set():  # distinct requests, replies never read
                frame = sender.packet(wire.Kind.RESUME, hidden, layer=1, codec="fp32")[1]
                try:
                    s.sendall(frame)
                except TimeoutError:
                    continue
                except OSError:
                    break
                sent += len(frame)
            s.close()
            return sent

        t0 = time.perf_counter()
        f = asyncio.get_running_loop().run_in_executor(None, flood)
        await asyncio.sleep(0.2)
        lat = []
        async with client_for(server, timeout=5) as c:
            for i in range(10):
                t1 = time.perf_counter()
                r = await c.resume(np.full((1, 16), i, np.float32), 1, want=1)
                lat.append(time.perf_counter() - t1)
                assert r.logits[0] == i
        await asyncio.sleep(max(0.0, 1.5 - (time.perf_counter() - t0)))
        stop.set()
        sent = await f
        await server.close()
        return sent, max(lat)

    sent, worst = run(main())
    # In 1.5 s the server does ~150 model calls (16 KB each): the flooder can only fill the
    # socket buffers beyond that; without backpressure it would push hundreds of MB.
    assert sent < 48 << 20
    assert worst < 2.0


def test_overload_is_a_typed_rejection():
    async def main():
        server = await started(FakeBackend(delay=0.05), max_inflight=64, max_queue=2)
        async with client_for(server) as c:
            rs = await asyncio.gather(
                *[c.resume(np.zeros((1, 16), np.float32), 1) for _ in range(8)], return_exceptions=True
            )
        await server.close()
        return rs

    rs = run(main())
    assert any(isinstance(r, wire.OverloadedError) for r in rs)
    assert any(isinstance(r, wire.ResumeResult) for r in rs)


def test_graceful_shutdown_finishes_open_requests():
    async def main():
        server = await started(FakeBackend(delay=0.2))
        c = client_for(server)
        pending = asyncio.ensure_future(c.resume(np.ones((1, 16), np.float32), 1))
        await asyncio.sleep(0.05)
        await server.close(grace=2)
        r = await pending
        with pytest.raises(wire.ConnectionClosedError):
            await client_for(server).ping()
        await c.close()
        return r

    assert run(main()).logits[0] == 1.0


def test_blocking_client_from_sync_code():
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(started())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with wire.BlockingClient(server.service.endpoint, "127.0.0.1", server.port) as c:
            assert c.ping(b"1234").kind == wire.Kind.PONG
            assert c.resume(np.ones((3, 16), np.float32), 2, codec="q8_0").logits[0] == pytest.approx(
                3, rel=1e-2
            )
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
