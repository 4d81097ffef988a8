"""Shared machinery of the training-free latent channels: payloads, controls, bits, sensitivity.

A latent channel's sender turns its view into one float array (the *payload*:
an activation, soft tokens, a KV cache, hidden states). The payload crosses the
environment as bytes through a codec (`lpca_protocols.codecs`: fp32, fp16, bf16,
q8_0, rotq...) whose bit count is exact; the message carries the sender model's
fingerprint, the codec spec and the shape in its metadata. The receiver decodes
the bytes, refuses a payload from another model, and turns it into a
`Conditioning` for its answer.

Controls replace the payload *before* it is encoded, so a control message costs
exactly the bits of the real one and travels the same path:

- ``null``: zeros of the same shape;
- ``shuffle``: the payload of another episode of the same batch (a derangement);
- ``random``: Gaussian noise with the same norm per vector (last axis).

Sensitivity: with ``sensitivity_draws > 0`` the receiver also measures the KL
divergence between its next-token distribution under the payload and under the
payload plus relative noise ``sensitivity_eps`` (per-vector norm), averaged over
the draws, and logs it per episode (``diagnostics.sensitivity_kl``).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from lpca_envs import Message
from lpca_models import Conditioning, Forward, ForwardRequest
from lpca_models.agents import LMAgent
from lpca_protocols import codecs
from lpca_protocols.channel import AgentContext, Channel, ChannelError, ChannelOptions, Requirement
from lpca_protocols.codecs import CodecError

Control = Literal["none", "null", "shuffle", "random"]
CONTROLS: tuple[str, ...] = ("none", "null", "shuffle", "random")
LATENT_KIND = "latent"


class LatentMismatchError(ChannelError):
    """A latent payload reached a receiver that cannot consume it (other model, bad metadata)."""


class LatentOptions(ChannelOptions):
    control: Control = "none"
    """Replace the payload by a control: null (zeros), shuffle (another episode's), random (noise)."""
    codec: str = "fp16"
    """Serializer of the payload: fp32, fp16, bf16, q8_0, q4_0, rotq:bits=B (any training-free codec)."""
    control_seed: int = 0
    """Seed of the random control and of the sensitivity noise (mixed with each task's id)."""
    sensitivity_draws: int = Field(0, ge=0, le=32)
    """Noise draws for the payload-sensitivity KL logged per episode (0: off)."""
    sensitivity_eps: float = Field(0.01, gt=0.0, le=1.0)
    """Noise norm relative to each payload vector's norm, for the sensitivity KL."""

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        try:
            c = codecs.get(v)
        except (CodecError, TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        if c.name in ("vq", "rvq", "fsq", "pq"):
            raise ValueError(f"codec {v!r} needs a trained codebook; use the learned-codec channels")
        return c.spec


class LatentChannel(Channel):
    """Base of the latent channels: subclasses implement `payloads` and `condition`."""

    requires = Requirement.WHITE_BOX_SAME_MODEL
    Options = LatentOptions
    #: Whether a payload from another model's fingerprint may be consumed.
    cross_model = False

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.codec = codecs.get(self.options.codec)
        self._previous: list[np.ndarray] = []  # last batch's payloads, for a shuffle of a 1-episode batch

    # -- to implement ----------------------------------------------------------------
    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        """One float array per sending context (batched on the shared backend)."""
        raise NotImplementedError

    def condition(self, ctx: AgentContext, payload: np.ndarray) -> Conditioning:
        """The receiver's conditioning from a decoded payload."""
        raise NotImplementedError

    def senders(self, ctxs: Sequence[AgentContext]) -> list[int]:
        """Indices of the contexts that send this round (default: holders, first round)."""
        return [i for i, c in enumerate(ctxs) if not c.is_answerer and c.round == 1]

    # -- send ------------------------------------------------------------------------
    def send(self, ctxs: Sequence[AgentContext]) -> list[Message | None]:
        out: list[Message | None] = [None] * len(ctxs)
        idx = self.senders(ctxs)
        if not idx:
            return out
        chosen = [ctxs[i] for i in idx]
        arrays = [np.asarray(a, dtype=np.float32) for a in self.payloads(chosen)]
        arrays = self.apply_control(chosen, arrays)
        for i, a in zip(idx, arrays):
            out[i] = self.encode(ctxs[i], a)
        return out

    def apply_control(self, ctxs: Sequence[AgentContext], arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The payloads after this channel's control (identity for control='none')."""
        control = self.options.control
        real = list(arrays)
        if control == "null":
            arrays = [np.zeros_like(a) for a in arrays]
        elif control == "random":
            arrays = [_same_norm_noise(a, self._rng(c, "random")) for c, a in zip(ctxs, arrays)]
        elif control == "shuffle":
            arrays = self._shuffle(arrays)
        self._previous = real
        return arrays

    def _shuffle(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) >= 2:  # rotate by one: a derangement, every episode gets another's payload
            return arrays[1:] + arrays[:1]
        if self._previous:
            return [self._previous[0] for _ in arrays]
        raise ChannelError(
            f"channel {self.name!r} with control='shuffle' needs another episode's payload: "
            "run at least 2 episodes per batch (batch_size >= 2)"
        )

    def _rng(self, ctx: AgentContext, what: str) -> np.random.Generator:
        key = zlib.crc32(f"{what}:{ctx.task.task_id}".encode())
        return np.random.default_rng([self.options.control_seed, key])

    def encode(self, ctx: AgentContext, payload: np.ndarray) -> Message:
        backend = lm(ctx).backend
        try:
            data = self.codec.encode(payload)
        except CodecError as e:
            raise ChannelError(
                f"channel {self.name!r}: cannot encode a payload of {payload.shape}: {e}"
            ) from e
        meta = {
            "channel": self.name,
            "codec": self.codec.spec,
            "shape": "x".join(map(str, payload.shape)),
            "fingerprint": backend.info.fingerprint,
        }
        return Message(ctx.name, (ctx.peer,), data, LATENT_KIND, self.codec.bits(payload.shape), meta)

    # -- receive ---------------------------------------------------------------------
    def decode(self, ctx: AgentContext, msg: Message) -> np.ndarray:
        """The payload of a latent message, after checking it is meant for this receiver's model."""
        meta = dict(msg.meta or {})
        backend = lm(ctx).backend
        fp = meta.get("fingerprint")
        if fp is None or "codec" not in meta or "shape" not in meta:
            raise LatentMismatchError(
                f"channel {self.name!r}: a latent message needs metadata fingerprint, codec and shape; "
                f"got keys {sorted(meta)}"
            )
        if fp != backend.info.fingerprint and not self.cross_model:
            raise LatentMismatchError(
                f"channel {self.name!r}: payload from model {fp[:12]}..., receiver is "
                f"{backend.info.name} ({backend.info.fingerprint[:12]}...); latent payloads only "
                "transfer between identical models unless the channel is cross-model"
            )
        try:
            shape = tuple(int(x) for x in meta["shape"].split("x"))
            codec = codecs.get(meta["codec"])
            return codec.decode(msg.payload, shape)
        except (ValueError, CodecError) as e:
            raise LatentMismatchError(f"channel {self.name!r}: undecodable latent payload: {e}") from e

    def receive(self, ctxs: Sequence[AgentContext]) -> list[Conditioning]:
        out = []
        for ctx in ctxs:
            latent = [m for m in ctx.received if m.kind == LATENT_KIND]
            if not latent:  # nothing arrived (e.g. over budget): the receiver answers unaided
                out.append(Conditioning())
                continue
            payload = self.decode(ctx, latent[-1])
            cond = self.condition(ctx, payload)
            if self.options.sensitivity_draws:
                t = time.perf_counter()
                ctx.diagnostics["sensitivity_kl"] = self.sensitivity(ctx, payload, cond)
                ctx.diagnostics["diagnostic_time_s"] = time.perf_counter() - t
            out.append(cond)
        return out

    def sensitivity(self, ctx: AgentContext, payload: np.ndarray, cond: Conditioning) -> float:
        """Mean KL(p || p_eps) of the receiver's next-token distribution under payload noise."""
        agent = lm(ctx)
        prompt = agent.prompt(agent.answer_turn(ctx.family, ctx.view, cond))
        p = _log_softmax(agent.backend.prompt_logits(prompt, _textless(cond)))
        rng = self._rng(ctx, "sensitivity")
        kls = []
        for _ in range(self.options.sensitivity_draws):
            noisy = payload + self.options.sensitivity_eps * _same_norm_noise(payload, rng)
            q = _log_softmax(agent.backend.prompt_logits(prompt, _textless(self.condition(ctx, noisy))))
            kls.append(float(np.sum(np.exp(p) * (p - q))))
        return float(np.mean(kls))


def lm(ctx: AgentContext) -> LMAgent:
    """The context's language-model agent, which must expose a white-box backend."""
    agent = ctx.agent
    if not isinstance(agent, LMAgent) or not hasattr(agent.backend, "forward"):
        raise ChannelError(
            f"latent channels need a white-box LMAgent (a lpca_models backend) for agent {ctx.name!r}, "
            f"got {type(agent).__name__}"
        )
    return agent


def forward_each(ctxs: Sequence[AgentContext], requests: Sequence[ForwardRequest]) -> list[Forward]:
    """``requests[i]`` run on ``ctxs[i]``'s backend: one batched pass per backend (`forward_batch`)."""
    groups: dict[int, list[int]] = {}
    for i, ctx in enumerate(ctxs):
        groups.setdefault(id(lm(ctx).backend), []).append(i)
    out: list[Forward | None] = [None] * len(requests)
    for idx in groups.values():
        backend = lm(ctxs[idx[0]]).backend
        batch = getattr(backend, "forward_batch", None)
        reqs = [requests[i] for i in idx]
        results = batch(reqs) if batch is not None else [backend.forward(**r.kwargs()) for r in reqs]
        for i, f in zip(idx, results):
            out[i] = f
    return out  # type: ignore[return-value]


def check_layer(ctx: AgentContext, layer: int, what: str) -> int:
    """`layer` as an index into 0..n_layers of the context's model, or a ChannelError naming the range."""
    n = lm(ctx).backend.info.n_layers
    if not -n - 1 <= layer <= n:
        raise ChannelError(
            f"{what} must be a layer in 0..{n} (0 = embeddings, {n} = last block) "
            f"or -1..-{n + 1}, got {layer}"
        )
    return layer % (n + 1)


def sender_prompt(ctx: AgentContext, role: str = "latent_sender") -> str:
    """The chat prompt of a sender role for this context's family and view.

    For ``latent_sender`` the family's ``latent_reply`` starts the assistant's turn, so
    the last position is about to state the information.
    """
    return lm(ctx).sender_prompt(ctx.family, ctx.view, role)


_TABLES: dict[tuple[str, str], np.ndarray] = {}


def embedding_table(backend: object) -> np.ndarray:
    """The backend's input-embedding matrix ``[V, d]``, read once per model and framework."""
    info = backend.info  # type: ignore[attr-defined]
    key = (info.fingerprint, info.framework)
    if key not in _TABLES:
        _TABLES.clear()  # one model at a time: the table is vocab x hidden floats
        _TABLES[key] = np.asarray(backend.input_embeddings(), dtype=np.float32)  # type: ignore[attr-defined]
    return _TABLES[key]


def _textless(cond: Conditioning) -> Conditioning:
    # the receiver's prompt already holds the conditioning text (LMAgent.answer_turn)
    return Conditioning(prefix=cond.prefix, injections=cond.injections, past=cond.past)


def _same_norm_noise(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with the norm of each vector (last axis) of `a`."""
    g = rng.standard_normal(a.shape).astype(np.float32)
    if a.ndim == 0:
        return g * abs(float(a))
    gn = np.linalg.norm(g, axis=-1, keepdims=True)
    an = np.linalg.norm(a, axis=-1, keepdims=True)
    return (g / np.maximum(gn, 1e-12) * an).astype(np.float32)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())
