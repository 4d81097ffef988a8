"""Backend-neutral records exchanged with a `Backend`: numpy arrays at the boundary, small (k x d)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

#: Put this string in a prompt to place prefix embeddings there instead of before the prompt.
PREFIX_MARKER = "<|lpca_prefix|>"

InjectFn = Callable[[Any, Any], Any]
InjectMode = Literal["replace", "add", "mean"] | InjectFn


@dataclass(frozen=True)
class ModelInfo:
    """What a channel needs to know about a model."""

    name: str
    framework: str
    architecture: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    dtype: str
    fingerprint: str
    has_chat_template: bool


@dataclass(frozen=True)
class Injection:
    """Combine `vector` into the residual stream after block `layer` (0 = embedding output).

    ``vector`` is ``[d]`` (broadcast to every position) or ``[n, d]`` (one row per
    position). ``positions`` index the forward's input sequence (prefix included;
    negative counts from the end; ``None`` = every position). ``mode``:
    ``replace`` (h := v), ``add`` (h := h + v), ``mean`` (h := (h + v) / 2) or a
    function ``f(h, v) -> h'`` on the backend's own arrays (torch tensors or mlx
    arrays, both support ``+ - * /``), with h of shape ``[n, d]``.
    """

    layer: int
    vector: np.ndarray
    positions: tuple[int, ...] | None = (-1,)
    mode: InjectMode = "replace"


@dataclass(frozen=True)
class KVCache:
    """A model's attention cache, exported as arrays.

    ``keys[i]`` and ``values[i]`` are ``[n_kv_heads, T_i, head_dim]`` for layer
    ``layers[i]`` (0-based transformer blocks): ``T_i == length`` for full-attention
    layers; sliding-window layers (Gemma-3) may hold only their last ``window - 1``
    positions. Only a cache with the receiving model's ``fingerprint`` can be imported.
    """

    keys: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    fingerprint: str
    length: int
    layers: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self.keys, self.values))


@dataclass(frozen=True)
class Forward:
    """Result of `Backend.forward`: logits, captured hidden states, optionally the cache."""

    logits: np.ndarray  # [T, V] (logits="all") or [V] (logits="last")
    hidden: dict[int, np.ndarray]  # layer -> [P, d] at the requested positions
    past: KVCache | None
    n_positions: int  # input positions of this call (prefix included)


@dataclass(frozen=True)
class ForwardRequest:
    """One sequence of a batched forward (`Backend.forward_batch`): the arguments of `Backend.forward`."""

    ids: Sequence[int]
    capture: Sequence[int] = ()
    positions: Sequence[int] | None = None
    inject: Sequence[Injection] = ()
    prefix: np.ndarray | None = None
    prefix_at: int = 0
    past: KVCache | None = None
    return_past: bool = False
    logits: str = "last"

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the equivalent single `forward` call (ids included)."""
        return {
            "ids": self.ids,
            "capture": self.capture,
            "positions": self.positions,
            "inject": self.inject,
            "prefix": self.prefix,
            "prefix_at": self.prefix_at,
            "past": self.past,
            "return_past": self.return_past,
            "logits": self.logits,
        }


@dataclass(frozen=True)
class Conditioning:
    """How a channel conditions a receiver, independent of framework.

    ``text`` is prepended to the prompt; ``prefix`` (``[k, d]`` input embeddings)
    is placed at `PREFIX_MARKER` in the prompt if present, else before the prompt;
    ``injections`` act on the prompt's forward pass; ``past`` is a KV cache the
    prompt continues from. ``primer`` is the text a receiver prompt puts before the
    prefix's marker (None: the prompt book's ``received_latent`` line; "": none).
    """

    text: str = ""
    prefix: np.ndarray | None = None
    injections: tuple[Injection, ...] = ()
    past: KVCache | None = None
    primer: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.text and self.prefix is None and not self.injections and self.past is None


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. ``temperature == 0`` is greedy; the seed makes sampling reproducible."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


GREEDY = Sampling()


@dataclass(frozen=True)
class Generation:
    """One generated continuation."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: Literal["eos", "stop", "length"]
    forward_passes: int = 0


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass
class Timing:
    """Counters a backend keeps so runners can report compute per phase."""

    forward_passes: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def as_rows(positions: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if positions is None else tuple(int(p) for p in positions)
