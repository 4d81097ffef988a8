"""Admission before work (issue 16): every declared field, shape, codec parameter and size of a
RESUME is checked against the receiving model and its limits before anything is decoded or
computed; refusals are typed REJECTs that behave as docs/wire.md says; the server bounds the
bytes it holds across connections; the client raises only typed errors, whatever a server sends.
"""

import asyncio
import contextlib
import socket
import struct
import threading
import time

import numpy as np
import pytest

import lpca_models
from lpca_protocols import codecs, wire
from lpca_protocols.codecs import rotq
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import error_for_code


@pytest.fixture(scope="module")
def tiny():
    return lpca_models.load("tiny-random-llama")  # 4 layers, d=64, max_position_embeddings 2048


@pytest.fixture(scope="module")
def service(tiny):
    return wire.ResumeService(tiny, host="b")


def _reply(service, data):
    p = wire.decode(service.handle(data))
    if p.kind == wire.Kind.REJECT:
        f = p.section(wire.SectionType.REJECT).fields
        return error_for_code(f["code"], f["message"])
    return p


def _resume(service, arrays=None, *, fields=None, layer=2, codec="fp16", tensors=None):
    """Handle one RESUME built from `arrays` (or raw `tensors`) with REQUEST `fields`; the error or packet."""
    s = wire.Sender(service.endpoint, "b")
    sec = wire.Section(wire.SectionType.REQUEST, fields if fields is not None else {"want": 3, "top_k": 4})
    if tensors is None:
        _, data = s.packet(wire.Kind.RESUME, arrays, codec=codec, layer=layer, sections=(sec,))
    else:
        cc = codecs.get(codec)
        ident = pk.Identity(
            service.endpoint.model_fingerprint,
            service.endpoint.tokenizer_fingerprint,
            service.endpoint.weight_quant,
            0,
            "a",
            "b",
            layer,
            cc.codec_id,
            cc.params(),
        )
        data = pk.encode(
            pk.Packet(pk.Kind.RESUME, s.session, 1, ident, (sec,), tuple(tensors), time.time_ns())
        )
    t0 = time.process_time()
    out = _reply(service, data)
    return out, time.process_time() - t0


H = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)

BAD_REQUESTS = [
    ({"want": 0}, wire.MalformedPacketError, "want"),
    ({"want": 8}, wire.MalformedPacketError, "want"),
    ({"want": 1.0}, wire.MalformedPacketError, "want"),
    ({"want": "1"}, wire.MalformedPacketError, "want"),
    ({"want": np.arange(3)}, wire.MalformedPacketError, "want"),
    ({"want": 3, "top_k": 2000}, wire.MalformedPacketError, "top_k"),
    ({"want": 3, "top_k": -1}, wire.MalformedPacketError, "top_k"),
    ({"want": 3, "top_k": 2.5}, wire.MalformedPacketError, "top_k"),
    ({"want": 1, "reply_codec": 5}, wire.MalformedPacketError, "reply_codec"),
    ({"want": 1, "reply_codec": np.arange(3.0)}, wire.MalformedPacketError, "reply_codec"),
    ({"want": 1, "reply_codec": "rotq"}, wire.PacketCodecError, "reply_codec"),
]


@pytest.mark.parametrize(("fields", "error", "names"), BAD_REQUESTS)
def test_every_bad_request_field_is_a_typed_reject(service, fields, error, names):
    out, _ = _resume(service, {"hidden": H}, fields=fields)
    assert type(out) is error and names in str(out), out


def test_layer_and_tensor_declarations_are_checked_against_the_model(service):
    cases = [
        (dict(arrays={"hidden": H}, layer=None), wire.MalformedPacketError, "layer boundary"),
        (dict(arrays={"hidden": H}, layer=99), wire.RemoteComputeError, "0..4"),
        (dict(arrays={"hidden": H[:, :63]}), wire.ShapeMismatchError, "[T, 64]"),
        (dict(arrays={"hidden": H[None]}), wire.ShapeMismatchError, "[T, 64]"),
        (dict(arrays={"hidden": H[:0]}), wire.ShapeMismatchError, "1 <= T"),
        (dict(arrays={"x": H}), wire.ShapeMismatchError, "'hidden'"),
        (dict(arrays={"hidden": H, "extra": H}), wire.ShapeMismatchError, "exactly one"),
        (dict(arrays={}), wire.ShapeMismatchError, "exactly one"),
        (dict(arrays={"hidden": np.zeros((4096, 64), np.float32)}), wire.PayloadTooLargeError, "2048"),
        (dict(arrays={"hidden": H}, codec="rotq:bits=3,seed=7"), wire.PacketCodecError, "seeds [0]"),
        (dict(tensors=[pk.Tensor("hidden", (3, 64), b"\0" * 10)]), wire.PacketCodecError, "384 bytes"),
    ]
    for kwargs, error, says in cases:
        out, _ = _resume(service, **kwargs)
        assert type(out) is error and says in str(out), (kwargs.get("layer"), out)
    ok, _ = _resume(service, {"hidden": H}, codec="rotq:bits=3,seed=0")
    assert ok.kind == wire.Kind.RESULT


def test_a_huge_declared_rotation_is_refused_before_any_decode(service):
    """rotq at d=8192 (55 s of CPU and 2.6 GB before the fix): refused from the header."""
    data = rotq.RotQ(3, 5, "dense").nbytes((1, 8192))
    tensors = [pk.Tensor("hidden", (1, 8192), b"\1" * data)]
    out, cpu = _resume(service, tensors=tensors, codec="rotq:bits=3,seed=5,rotation=dense")
    assert type(out) is wire.ShapeMismatchError and "64" in str(out), out
    assert cpu < 0.5 and not rotq.rotation_cached(8192, 5, "dense")
    out, cpu = _resume(service, tensors=tensors, codec="rotq-tcq:bits=3,seed=0,rotation=dense")
    assert type(out) is wire.ShapeMismatchError and cpu < 0.5


def test_positions_compute_decoded_bytes_and_reply_size_have_budgets(tiny):
    limits = wire.AdmissionLimits(max_positions=64, max_compute=100, max_decoded_bytes=4096)
    svc = wire.ResumeService(tiny, host="b", limits=limits)
    big = np.zeros((65, 64), np.float32)
    out, cpu = _resume(svc, {"hidden": big})
    assert type(out) is wire.PayloadTooLargeError and "at most 64" in str(out)
    out, _ = _resume(svc, {"hidden": np.zeros((30, 64), np.float32)})  # 30 x 4 blocks = 120 > 100
    assert type(out) is wire.PayloadTooLargeError and "position-blocks" in str(out)
    out, _ = _resume(svc, {"hidden": np.zeros((20, 64), np.float32)})  # 5120 bytes decoded > 4096
    assert type(out) is wire.PayloadTooLargeError and "4096" in str(out)
    small = wire.ResumeService(tiny, host="b", max_packet=100_000)
    out, _ = _resume(small, {"hidden": np.zeros((512, 64), np.float16)}, fields={"want": 4}, codec="q4_0")
    assert type(out) is wire.PayloadTooLargeError and "reply" in str(out)
    # 65,536 positions (43 s of model work before the fix) are refused at once
    out, cpu = _resume(svc, tensors=[pk.Tensor("hidden", (65536, 64), b"")])
    assert type(out) is wire.PayloadTooLargeError and cpu < 0.5


def test_the_model_maximum_comes_from_its_config(tiny, service):
    assert service.endpoint.max_positions == 2048 and service.admission.max_positions == 2048
    capped = wire.ResumeService(tiny, limits=wire.AdmissionLimits(max_positions=1 << 20))
    assert capped.admission.max_positions == 2048  # never above what the model can take


def test_bad_limits_are_typed():
    with pytest.raises(ValueError, match="max_positions"):
        wire.AdmissionLimits(max_positions=0)
    with pytest.raises(ValueError, match="rotation_seeds"):
        wire.AdmissionLimits(rotation_seeds=[0])


def test_a_failure_while_answering_is_still_a_typed_reject(tiny):
    """Final states beyond fp16's range cannot be encoded in the fp16 reply asked for: before the fix
    the codec's error escaped handle() and no reply was sent."""
    svc = wire.ResumeService(tiny, host="b")
    s = wire.Sender(svc.endpoint, "b")
    sec = wire.Section(wire.SectionType.REQUEST, {"want": 4, "reply_codec": "fp16"})
    big = np.full((2, 64), 1e30, np.float32)
    _, data = s.packet(wire.Kind.RESUME, {"hidden": big}, codec="fp32", layer=1, sections=(sec,))
    out = _reply(svc, data)
    assert type(out) is wire.RemoteComputeError and "65504" in str(out), out


# -- over TCP -------------------------------------------------------------------------------------


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def recv_packet(sock):
    data = b""
    while len(data) < pk.PREFIX_SIZE:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    total = struct.unpack_from("<I", data, 8)[0]
    while len(data) < total:
        chunk = sock.recv(total - len(data))
        if not chunk:
            return None
        data += chunk
    return wire.decode(data[:total])


def _code(p):
    return p.section(wire.SectionType.REJECT).fields["code"]


def _in_thread(fn):
    out = {}

    def target():
        try:
            out["v"] = fn()
        except BaseException as e:  # re-raised in the test
            out["e"] = e

    t = threading.Thread(target=target)
    t.start()
    return t, out


async def _join(t, out):
    while t.is_alive():
        await asyncio.sleep(0.01)
    if "e" in out:
        raise out["e"]
    return out.get("v")


def test_reject_codes_close_or_keep_the_connection_as_documented(tiny):
    async def main():
        server = await wire.WireServer(wire.ResumeService(tiny, host="b")).start()
        s = wire.Sender(server.service.endpoint, "b")
        keep = wire.Section(wire.SectionType.REQUEST, {"want": 1, "reply_codec": "rotq"})  # code 8
        close = wire.Section(wire.SectionType.REQUEST, {"want": 0})  # code 1

        def client():
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            _, a = s.packet(wire.Kind.RESUME, {"hidden": H}, layer=2, sections=(keep,))
            sock.sendall(a)
            r1 = recv_packet(sock)
            _, b = s.packet(wire.Kind.RESUME, {"hidden": H}, layer=2, sections=(close,))
            sock.sendall(b)
            r2 = recv_packet(sock)
            closed = sock.recv(1) == b""
            sock.close()
            return _code(r1), _code(r2), closed

        t, out = _in_thread(client)
        got = await _join(t, out)
        await server.close()
        return got

    assert run(main()) == (8, 1, True)


def test_total_buffered_bytes_are_bounded_across_connections(tiny):
    """Many slow clients each announce a big frame: the server holds at most max_buffered bytes, refuses
    the rest as overloaded (correlated), drops their bytes, and their connections stay usable."""
    mib = 1 << 20

    async def main():
        svc = wire.ResumeService(tiny, host="b", max_packet=mib)
        server = await wire.WireServer(svc, max_frame=mib, max_buffered=2 * mib).start()
        sender = wire.Sender(svc.endpoint, "b")
        frames = [sender.packet(wire.Kind.PING, {"echo": np.zeros(200_000, np.float32)}) for _ in range(5)]
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in frames]
        for sock, (_, data) in zip(socks, frames):
            sock.sendall(data[:65536])
        await asyncio.sleep(0.3)
        held = server.buffered

        def finish():
            replies = []
            for sock, (seq, data) in zip(socks, frames):
                sock.sendall(data[65536:])
                p = recv_packet(sock)
                replies.append((p.kind, p.seq == seq))
                _, ping = sender.packet(wire.Kind.PING, {"echo": np.zeros(4, np.float32)})
                sock.sendall(ping)  # the same connection still works
                replies.append((recv_packet(sock).kind, True))
                sock.close()
            return replies

        t, out = _in_thread(finish)
        replies = await _join(t, out)
        await asyncio.sleep(0.1)
        after = server.buffered
        await server.close()
        return held, replies, after

    held, replies, after = run(main())
    assert held <= 2 * mib, held
    kinds = [k for k, _ in replies[::2]]
    assert kinds.count(wire.Kind.PONG) == 2 and kinds.count(wire.Kind.REJECT) == 3, kinds
    assert all(same for _, same in replies), "a refusal was not correlated to its request"
    assert all(k == wire.Kind.PONG for k, _ in replies[1::2])
    assert after == 0


def _hostile_server(reply_for):
    """A real TCP server that answers each frame with reply_for(request packet) -> bytes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = srv.accept()
                with conn:
                    while (p := recv_packet(conn)) is not None:
                        conn.sendall(reply_for(p))

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _result_packet(req, fields, tensors=(), codec_id=1, params=b""):
    ident = pk.Identity(codec_id=codec_id, codec_params=params)
    sec = pk.Section(pk.SectionType.RESULT, fields)
    return pk.encode(
        pk.Packet(pk.Kind.RESULT, req.session, req.seq, ident, (sec,), tuple(tensors), time.time_ns())
    )


HOSTILE_RESULTS = [
    {"compute_ns": 1.5},
    {"compute_ns": "12"},
    {"compute_ns": -1},
    {"compute_ns": np.arange(3)},
    {"compute_ns": 1, "top_ids": np.arange(3.0), "top_logprobs": np.zeros(3, np.float32)},
    {"compute_ns": 1, "top_ids": np.arange(3), "top_logprobs": np.zeros(2, np.float32)},
    {"compute_ns": 1, "top_ids": np.arange(300), "top_logprobs": np.zeros(300, np.float32)},
    {"compute_ns": 1, "top_ids": "x"},
]


def test_client_raises_only_typed_errors_on_hostile_replies(tiny):
    ep = wire.Endpoint.of(tiny)
    cases = [(lambda req, f=f: _result_packet(req, f)) for f in HOSTILE_RESULTS]
    n = rotq.RotQ(3, 9, "dense").nbytes((1, 8192))
    cases += [
        # a reply in a codec that was not asked, whose decode would build an 8192 x 8192 rotation
        lambda req: _result_packet(
            req,
            {"compute_ns": 1},
            [pk.Tensor("logits", (1, 8192), b"\1" * n)],
            0x0020,
            struct.pack("<BBQ", 3, 1, 9),
        ),
        lambda req: _result_packet(req, {"compute_ns": 1}, [pk.Tensor("hidden", (2, 64), b"\0" * 512)]),
        lambda req: _result_packet(req, {"compute_ns": 1}, [pk.Tensor("logits", (3, 4), b"\0" * 48)]),
        lambda req: b"LPCA" + bytes(60),
    ]
    for make in cases:
        srv = _hostile_server(make)
        port = srv.getsockname()[1]

        async def main(port=port):
            async with wire.WireClient(ep, "127.0.0.1", port, timeout=5) as c:
                return await c.resume(H, 2, want=3, top_k=5, codec="fp32")

        t0 = time.process_time()
        with pytest.raises(wire.WireError):
            run(main())
        assert time.process_time() - t0 < 2
        srv.close()
    assert not rotq.rotation_cached(8192, 9, "dense")
