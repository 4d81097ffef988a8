"""Admission: what a `ResumeService` accepts, checked from a packet's header before any work.

Every declared quantity of a RESUME (its REQUEST fields, layer boundary, tensor names,
shapes and lengths, codec and codec parameters, position count, and the size of the
reply it asks for) is compared with what this receiver accepts *before* a tensor is
decoded or the model runs. The limits make the cost of every accepted request a known
function of the model and `AdmissionLimits` (docs/wire.md, "Admission and the cost of
a request"):

- positions ``T <= max_positions`` (the model's ``max_position_embeddings``);
- compute ``T * n_layers <= max_compute`` position-blocks (`Backend.resume` runs every
  block over T positions);
- decoded bytes ``4 * T * d <= max_decoded_bytes`` (float32), ``d`` the model's hidden size;
- rotq / rotq-tcq only with ``d`` = the hidden size and a seed in ``rotation_seeds``, whose
  rotations the service builds once (`ResumeService.warm`) and keeps in a byte-bounded cache;
- a reply no larger than the largest packet this receiver sends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lpca_protocols import codecs
from lpca_protocols.codecs import Codec, CodecError
from lpca_protocols.codecs import rotq as _rotq
from lpca_protocols.wire import packet as pk
from lpca_protocols.wire.errors import (
    MalformedPacketError,
    PacketCodecError,
    PayloadTooLargeError,
    RemoteComputeError,
    ShapeMismatchError,
)

WANT_LOGITS, WANT_TOP, WANT_HIDDEN = 1, 2, 4
MAX_TOP_K = 1024
#: Codecs a client may ask the answer in (learned codecs would need a shared codebook).
REPLY_CODECS = ("fp32", "fp16", "bf16", "q8_0", "q4_0")
#: Positions accepted when the model does not say its maximum.
DEFAULT_MAX_POSITIONS = 2048
#: Reply overhead beyond the tensors: header, identity, RESULT section with top-k (bytes).
_REPLY_OVERHEAD = 64 << 10


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
        """The request a REQUEST section's fields describe; a typed error names any bad field."""
        want, top_k = fields.get("want", WANT_LOGITS), fields.get("top_k", 0)
        reply = fields.get("reply_codec", "fp32")
        if type(want) is not int or not 0 < want < 8:
            raise MalformedPacketError(f"REQUEST.want must be an integer bitmask in 1..7, got {want!r}")
        if type(top_k) is not int or not 0 <= top_k <= MAX_TOP_K:
            raise MalformedPacketError(f"REQUEST.top_k must be an integer in 0..{MAX_TOP_K}, got {top_k!r}")
        if not isinstance(reply, str):
            raise MalformedPacketError(
                f"REQUEST.reply_codec must be a string, one of {REPLY_CODECS}; got a {type(reply).__name__}"
            )
        if reply not in REPLY_CODECS:
            raise PacketCodecError(f"REQUEST.reply_codec must be one of {REPLY_CODECS}, got {reply!r}")
        return cls(want, top_k, reply)


@dataclass(frozen=True)
class AdmissionLimits:
    """Per-request limits of a `ResumeService` (None: derived from the model, see the fields)."""

    #: Positions per RESUME. None: the model's ``max_position_embeddings`` (2048 if unknown).
    max_positions: int | None = None
    #: Model work per RESUME in position-blocks (positions x the model's blocks). None: 2048 x blocks.
    max_compute: int | None = None
    #: float32 bytes the request's tensors decode to, in all.
    max_decoded_bytes: int = 64 << 20
    #: rotq / rotq-tcq seeds accepted (each costs a d x d rotation built once and cached).
    rotation_seeds: tuple[int, ...] = field(default=(0,))

    def __post_init__(self) -> None:
        for name in ("max_positions", "max_compute", "max_decoded_bytes"):
            v = getattr(self, name)
            if v is not None and (type(v) is not int or v < 1):
                raise ValueError(f"AdmissionLimits.{name} must be a positive int or None, got {v!r}")
        seeds = self.rotation_seeds
        if not isinstance(seeds, tuple) or not all(type(s) is int and 0 <= s < 1 << 64 for s in seeds):
            raise ValueError(f"AdmissionLimits.rotation_seeds must be a tuple of u64 ints, got {seeds!r}")


@dataclass(frozen=True)
class Admitted:
    """A RESUME that passed admission: its request, layer, codec and the hidden tensor's [T, d] shape."""

    request: ResumeRequest
    layer: int
    codec: Codec
    positions: int


class Admission:
    """Checks RESUME packets against one model's sizes and `AdmissionLimits`, without decoding."""

    def __init__(
        self,
        *,
        hidden_size: int | None,
        n_layers: int | None,
        vocab_size: int | None,
        model_max_positions: int | None,
        limits: AdmissionLimits,
        max_reply: int,
    ):
        self.hidden_size, self.n_layers, self.vocab_size = hidden_size, n_layers, vocab_size
        self.limits = limits
        model_max = model_max_positions or DEFAULT_MAX_POSITIONS
        self.max_positions = min(limits.max_positions or model_max, model_max)
        blocks = max(n_layers or 1, 1)
        self.max_compute = limits.max_compute or DEFAULT_MAX_POSITIONS * blocks
        self.max_reply = max_reply

    def rotations(self) -> list[tuple[int, int, str]]:
        """The (d, seed, kind) rotations a rotq packet may name here (what `warm` builds)."""
        d = self.hidden_size
        if d is None or not 2 <= d <= _rotq.MAX_DIM:
            return []
        kinds = ("dense", "hadamard") if d & (d - 1) == 0 else ("dense",)
        return [(d, seed, kind) for seed in self.limits.rotation_seeds for kind in kinds]

    def check(self, p: pk.Packet, codec: Codec) -> Admitted:
        """Admit RESUME `p` whose identity names `codec`, or raise the typed error that names the limit."""
        sec = p.section(pk.SectionType.REQUEST)
        req = ResumeRequest.from_fields(sec.fields if sec else {})
        layer = p.identity.layer
        if layer is None:
            raise MalformedPacketError("a RESUME packet must name the layer boundary (got none)")
        if self.n_layers is not None and not 0 <= layer <= self.n_layers:
            raise RemoteComputeError(
                f"LayerError: layer boundary {layer} is outside this model's 0..{self.n_layers} "
                "(0 = embeddings, l = residual after block l)"
            )
        names = [t.name for t in p.tensors]
        if names != ["hidden"]:
            raise ShapeMismatchError(f"a RESUME carries exactly one tensor named 'hidden', got {names}")
        t = p.tensors[0]
        d = self.hidden_size
        want_d = d if d is not None else "d"
        if len(t.shape) not in (1, 2) or (d is not None and t.shape[-1] != d) or 0 in t.shape:
            raise ShapeMismatchError(
                f"tensor 'hidden' must have shape [{want_d}] or [T, {want_d}] with 1 <= T <= "
                f"{self.max_positions}; got {list(t.shape)}"
            )
        positions = t.shape[0] if len(t.shape) == 2 else 1
        if positions > self.max_positions:
            raise PayloadTooLargeError(
                f"tensor 'hidden' has {positions} positions; "
                f"this receiver accepts at most {self.max_positions}"
            )
        blocks = max(self.n_layers or 1, 1)
        if positions * blocks > self.max_compute:
            raise PayloadTooLargeError(
                f"{positions} positions x {blocks} blocks = {positions * blocks} position-blocks of compute; "
                f"this receiver accepts at most {self.max_compute} per request"
            )
        n = math.prod(t.shape)
        if 4 * n > self.limits.max_decoded_bytes:
            raise PayloadTooLargeError(
                f"tensor 'hidden' {list(t.shape)} decodes to {4 * n} bytes; this receiver decodes at most "
                f"{self.limits.max_decoded_bytes} per request"
            )
        self._check_codec(codec, t)
        self._check_reply(req, positions)
        return Admitted(req, layer, codec, positions)

    def _check_codec(self, codec: Codec, t: pk.Tensor) -> None:
        if isinstance(codec, _rotq.RotQ):
            d = t.shape[-1]
            kind = codec.rotation
            if kind == "auto":
                kind = "dense" if d & (d - 1) else "hadamard"
            if (d, codec.seed, kind) not in self.rotations():
                if kind == "hadamard" and d & (d - 1):
                    why = f"the hadamard rotation needs a power-of-two width, got {d}"
                else:
                    why = (
                        f"this receiver accepts rotation seeds {list(self.limits.rotation_seeds)} "
                        f"at width {self.hidden_size}, got seed {codec.seed} at width {d}"
                    )
                raise PacketCodecError(f"{codec.spec}: {why}")
            if 4 * d * d > _rotq.ROTATION_CACHE_BYTES:
                raise PacketCodecError(
                    f"{codec.spec}: a {d} x {d} rotation ({4 * d * d} bytes) exceeds the rotation cache "
                    f"({_rotq.ROTATION_CACHE_BYTES} bytes)"
                )
        try:
            expected = codec.nbytes(t.shape)
        except CodecError as exc:
            raise PacketCodecError(f"tensor 'hidden' {list(t.shape)}: {exc}") from None
        if len(t.data) != expected:
            raise PacketCodecError(
                f"tensor 'hidden' {list(t.shape)} in {codec.spec} is {expected} bytes, got {len(t.data)}"
            )

    def _check_reply(self, req: ResumeRequest, positions: int) -> None:
        reply = codecs.get(req.reply_codec)
        size = _REPLY_OVERHEAD
        if req.want & WANT_LOGITS and self.vocab_size:
            size += reply.nbytes((self.vocab_size,))
        if req.want & WANT_HIDDEN and self.hidden_size:
            size += reply.nbytes((positions, self.hidden_size))
        if size > self.max_reply:
            raise PayloadTooLargeError(
                f"the reply asked for (want={req.want}, {req.reply_codec}, {positions} positions) would be "
                f"about {size} bytes; this receiver sends packets of at most {self.max_reply}"
            )
