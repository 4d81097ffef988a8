"""The LPCA wire protocol: hidden-state packets, their checks, and a TCP transport.

    from lpca_protocols import wire
    service = wire.ResumeService(backend)                 # the receiving half of a split forward
    server = await wire.WireServer(service, "0.0.0.0", 7070).start()
    async with wire.WireClient.for_backend(backend, host, 7070) as client:
        result = await client.resume(hidden, layer=24, codec="q8_0")
    wire.LoopbackClient(service).resume(hidden, 24)      # same bytes, in-process

Layout with byte offsets: docs/wire.md.
"""

from lpca_protocols.wire.admission import AdmissionLimits
from lpca_protocols.wire.client import BlockingClient, LoopbackClient, ResumeResult, WireClient
from lpca_protocols.wire.errors import (
    ChecksumError,
    ConnectionClosedError,
    DuplicatePacketError,
    FrameTooLargeError,
    MalformedPacketError,
    ModelMismatchError,
    OverloadedError,
    PacketCodecError,
    PayloadTooLargeError,
    RemoteComputeError,
    ReplayError,
    ShapeMismatchError,
    StalePacketError,
    TokenizerMismatchError,
    TransportTimeoutError,
    UnsupportedSectionError,
    VersionMismatchError,
    WireError,
)
from lpca_protocols.wire.packet import (
    VERSION,
    DType,
    Identity,
    Kind,
    Packet,
    Section,
    SectionType,
    Tensor,
    decode,
    encode,
)
from lpca_protocols.wire.server import WireServer
from lpca_protocols.wire.service import WANT_HIDDEN, WANT_LOGITS, WANT_TOP, ResumeRequest, ResumeService
from lpca_protocols.wire.session import Endpoint, Receiver, ReplayGuard, Sender, tokenizer_fingerprint

__all__ = [
    "VERSION",
    "WANT_HIDDEN",
    "WANT_LOGITS",
    "WANT_TOP",
    "AdmissionLimits",
    "BlockingClient",
    "ChecksumError",
    "ConnectionClosedError",
    "DType",
    "DuplicatePacketError",
    "Endpoint",
    "FrameTooLargeError",
    "Identity",
    "Kind",
    "LoopbackClient",
    "MalformedPacketError",
    "ModelMismatchError",
    "OverloadedError",
    "Packet",
    "PacketCodecError",
    "PayloadTooLargeError",
    "Receiver",
    "RemoteComputeError",
    "ReplayError",
    "ReplayGuard",
    "ResumeRequest",
    "ResumeResult",
    "ResumeService",
    "Section",
    "SectionType",
    "Sender",
    "ShapeMismatchError",
    "StalePacketError",
    "Tensor",
    "TokenizerMismatchError",
    "TransportTimeoutError",
    "UnsupportedSectionError",
    "VersionMismatchError",
    "WireClient",
    "WireError",
    "WireServer",
    "decode",
    "encode",
    "tokenizer_fingerprint",
]
