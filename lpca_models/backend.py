"""`Backend`: the white-box interface every channel talks to, identical on every framework.

Conventions (both backends):
- Layer ``l`` is the residual stream *after* transformer block ``l`` (1..L);
  layer 0 is the embedding output (what the first block reads). Layer L is the
  raw residual after the last block, before the final norm; `unembed` applies
  the final norm and the LM head (the logit lens).
- Positions index the sequence of one `forward` call, prefix embeddings included;
  negative positions count from the end.
- `embed(ids)` returns exactly what the first block reads for those tokens (any
  embedding scale included), and `input_embeddings()` is the matrix E with
  ``embed(ids) == E[ids]``; prefix embeddings live in that same space.
- Arrays cross this boundary as numpy; heavy work stays inside the backend.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpca_models.errors import (
    ConditioningError,
    FingerprintMismatchError,
    HiddenSizeError,
    LayerError,
    ModelError,
    PositionError,
)
from lpca_models.types import (
    GREEDY,
    PREFIX_MARKER,
    ChatMessage,
    Conditioning,
    Forward,
    ForwardRequest,
    Generation,
    Injection,
    KVCache,
    ModelInfo,
    Sampling,
    Timing,
)

_MODES = ("replace", "add", "mean")


class Backend(ABC):
    """One loaded model. A single instance serves any number of agents."""

    info: ModelInfo
    timing: Timing
    tokenizer: Any
    """The transformers tokenizer: both frameworks read the same one, so ids and templates agree."""
    _bos: str | None

    # -- text ------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise ModelError(f"tokenize expects str, got {type(text).__name__}")
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str | None:
        """The tokenizer's chat template applied, or None when the model has none."""
        if not self.tokenizer.chat_template:
            return None
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of a prompt, with BOS added unless the text already starts with it."""
        # Base tokenizers add BOS by themselves; a chat-templated prompt already starts with it.
        add = not (self._bos and text.startswith(self._bos))
        return self.tokenize(text, add_special_tokens=add)

    def split_prompt(self, text: str) -> tuple[str, str | None]:
        """Split at the prefix marker: (before, after) or (text, None) when absent."""
        if PREFIX_MARKER not in text:
            return text, None
        before, _, after = text.partition(PREFIX_MARKER)
        if PREFIX_MARKER in after:
            raise ConditioningError(f"the prompt contains {PREFIX_MARKER!r} more than once")
        return before, after

    def marker_position(self, prompt: str) -> int:
        """Where prefix rows go in `prompt` as `forward` and `generate` count positions (BOS
        included): the token index of `PREFIX_MARKER`, or 0 when the prompt has none."""
        before, after = self.split_prompt(prompt)
        return len(self.prompt_ids(before)) if after is not None else 0

    def sender_states(self, prompt: str, layer: int, tail: int = 0) -> np.ndarray:
        """Hidden states ``[T, d]`` after block `layer` over `prompt` (its last `tail` positions;
        0: all): what a sender's latent message is read from, in serving and in training alike."""
        ids = self.prompt_ids(prompt)
        positions = list(range(len(ids) - min(tail, len(ids)), len(ids))) if tail else None
        return self.forward(ids, capture=[layer], positions=positions, logits="none").hidden[layer]

    def chat(
        self,
        messages: Sequence[ChatMessage | Mapping[str, str]],
        add_generation_prompt: bool = True,
    ) -> str:
        """Prompt text for `messages`: the chat template, or a plain template for base models."""
        msgs = [_as_message_dict(m) for m in messages]
        out = self._chat_template(msgs, add_generation_prompt)
        if out is not None:
            return out
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in msgs]
        if add_generation_prompt:
            lines.append("Assistant:")
        return "\n\n".join(lines)

    # -- core ------------------------------------------------------------------------
    @abstractmethod
    def forward(
        self,
        ids: Sequence[int],
        *,
        capture: Sequence[int] = (),
        positions: Sequence[int] | None = None,
        inject: Sequence[Injection] = (),
        prefix: np.ndarray | None = None,
        prefix_at: int = 0,
        past: KVCache | None = None,
        return_past: bool = False,
        logits: str = "last",
    ) -> Forward:
        """One forward pass over `ids` (with `prefix` embeddings inserted at token index `prefix_at`).

        `capture` lists layers whose hidden states are returned at `positions`
        (None = all). `inject` combines vectors into the residual stream (captures
        see the stream after injection). `past` continues from a cache of this
        model; `return_past` exports the cache after this call. `logits` is
        "last" ([V]), "all" ([T, V]) or "none".
        """

    def forward_batch(self, requests: Sequence[ForwardRequest]) -> list[Forward]:
        """`forward` over many sequences at once: result ``i`` is what ``forward(**requests[i].kwargs())``
        returns, up to float rounding (batched matmuls, padding masks).

        Each request keeps its own ids, prefix, captures, positions, injections, past and
        logits choice; positions index each request's own input sequence. Backends run
        the batch in shared passes where they can (this default runs one `forward` each).
        """
        return [self.forward(**r.kwargs()) for r in self._check_requests(requests)]

    def decode_embeddings(
        self,
        prompts: Sequence[Sequence[int]],
        steps: int,
        step: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> list[np.ndarray]:
        """Feed-back decoding in embedding space, a whole batch at once.

        Each prompt (token ids) is read; then, for up to `steps` steps, ``step(logits, t)``
        receives the next-token logits ``[B, V]`` of every row and returns the vectors
        ``[B, d]`` each row emits (the row's next *input embedding*, as CIPHER's soft tokens
        or a continuous thought) and a ``[B]`` bool array of rows that stop *before*
        emitting at this step. Returns the emitted vectors of each row, ``[n_i, d]``
        (``n_i >= 1``: a row's stop is ignored at step 0). Rows that stopped are still fed
        (their outputs are dropped), so a batch costs the same passes as its longest row.
        This default runs one row at a time through `forward` and its exported cache.
        """
        rows = [self._check_ids(p) for p in self._check_prompts_ids(prompts)]
        self._check_steps(steps)
        out = []
        for ids in rows:
            fwd = [self.forward(ids, return_past=True)]

            def advance(v: np.ndarray, fwd: list[Forward] = fwd) -> np.ndarray:
                fwd[0] = self.forward([], prefix=v[:1], past=fwd[0].past, return_past=True)
                return np.asarray(fwd[0].logits, dtype=np.float32)[None]

            out += self._emit_loop(1, steps, step, np.asarray(fwd[0].logits, dtype=np.float32)[None], advance)
        return out

    def _emit_loop(
        self,
        b: int,
        steps: int,
        step: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
        logits: np.ndarray,
        advance: Callable[[np.ndarray], np.ndarray],
    ) -> list[np.ndarray]:
        """The bookkeeping of `decode_embeddings`, shared by every backend: ask `step` for each
        row's vector, keep it unless the row stops, and `advance` (feed the vectors ``[b, d]``,
        get the next logits ``[b, V]``) until every row stopped or `steps` ran."""
        vecs: list[list[np.ndarray]] = [[] for _ in range(b)]
        done = [False] * b
        for t in range(steps):
            v, stop = self._check_step_output(*step(logits, t), b)
            for i in range(b):
                if done[i]:
                    continue
                if stop[i] and vecs[i]:
                    done[i] = True
                else:
                    vecs[i].append(v[i])
            if all(done) or t + 1 == steps:
                break
            logits = advance(v)
        return [np.stack(x) for x in vecs]

    def sender_states_batch(self, prompts: Sequence[str], layer: int, tail: int = 0) -> list[np.ndarray]:
        """`sender_states` for many prompts in one batched forward."""
        reqs = []
        for prompt in prompts:
            ids = self.prompt_ids(prompt)
            positions = list(range(len(ids) - min(tail, len(ids)), len(ids))) if tail else None
            reqs.append(ForwardRequest(ids, capture=[layer], positions=positions, logits="none"))
        return [f.hidden[layer] for f in self.forward_batch(reqs)]

    def _check_requests(self, requests: Sequence[ForwardRequest]) -> list[ForwardRequest]:
        if isinstance(requests, ForwardRequest) or not isinstance(requests, Sequence):
            raise ModelError(f"forward_batch expects a list of ForwardRequest, got {type(requests).__name__}")
        out = list(requests)
        bad = [type(r).__name__ for r in out if not isinstance(r, ForwardRequest)]
        if bad:
            raise ModelError(f"forward_batch expects ForwardRequest records, got {bad[0]}")
        return out

    @staticmethod
    def _check_prompts_ids(prompts: Sequence[Sequence[int]]) -> list[Sequence[int]]:
        if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence) or not prompts:
            raise ModelError("prompts must be a non-empty list of token-id lists")
        out = list(prompts)
        if any(isinstance(p, str | bytes) or not isinstance(p, Sequence) or not p for p in out):
            raise ModelError("each prompt must be a non-empty list of token ids (tokenize text first)")
        return out

    @staticmethod
    def _check_steps(steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ModelError(f"steps must be a positive int, got {steps!r}")

    def _check_step_output(self, vectors: Any, stop: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(vectors, dtype=np.float32)
        d = self.info.hidden_size
        if v.shape != (rows, d) or not np.isfinite(v).all():
            raise HiddenSizeError(
                f"the step function must return finite vectors of shape [{rows}, {d}], got {v.shape}"
            )
        s = np.asarray(stop, dtype=bool).reshape(-1)
        if s.shape != (rows,):
            raise ModelError(f"the step function must return {rows} stop flags, got shape {s.shape}")
        return v, s

    @abstractmethod
    def generate(
        self,
        prompts: str | Sequence[str],
        conditioning: Conditioning | Sequence[Conditioning] | None = None,
        *,
        max_new_tokens: int = 64,
        sampling: Sampling = GREEDY,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """Continue each prompt (batched, left-padded); greedy batched == greedy unbatched."""

    def prompt_logits(self, prompt: str, conditioning: Conditioning | None = None) -> np.ndarray:
        """Next-token logits ``[V]`` after `prompt` under `conditioning`: what `generate` starts from.

        The conditioning applies exactly as in `generate` (text prepended, prefix at
        `PREFIX_MARKER` or before the prompt, injections, past), in one forward pass.
        """
        cond = conditioning if conditioning is not None else Conditioning()
        if not isinstance(cond, Conditioning):
            raise ConditioningError(f"expected a Conditioning, got {type(cond).__name__}")
        ids_a, ids_b, pre, marked = self._prompt_parts(prompt, cond)
        at = len(ids_a) if marked else 0
        out = self.forward(
            ids_a + ids_b, prefix=pre, prefix_at=at, inject=cond.injections, past=cond.past, logits="last"
        )
        return out.logits

    @property
    def eos_ids(self) -> frozenset[int]:
        """Token ids that end a generation (EOS and end-of-turn)."""
        return frozenset(getattr(self, "_eos", ()))

    def resume(
        self, hidden: np.ndarray, layer: int, *, logits: str = "last", capture: Sequence[int] = ()
    ) -> Forward:
        """Run blocks ``layer+1 .. L`` from the residual stream `hidden` (``[T, d]``) after block `layer`.

        This is the receiving half of a split forward: the sender ran blocks
        ``1..layer`` and shipped the states. Implemented as a forward over
        placeholder tokens whose stream is replaced at `layer` at every position;
        the placeholder work below `layer` is wasted but exact.
        """
        (layer,) = self._check_layers([layer])
        h = self._check_vectors(hidden, "resumed hidden states")
        h = h[None] if h.ndim == 1 else h
        if layer == 0:
            return self.forward([], prefix=h, logits=logits, capture=capture)
        placeholder = [0] * len(h)
        return self.forward(
            placeholder, inject=[Injection(layer, h, positions=None)], logits=logits, capture=capture
        )

    @abstractmethod
    def embed(self, ids: Sequence[int]) -> np.ndarray: ...

    @abstractmethod
    def unembed(self, hidden: np.ndarray) -> np.ndarray:
        """Final norm + LM head on ``[..., d]`` hidden states -> ``[..., V]`` logits."""

    @abstractmethod
    def input_embeddings(self) -> np.ndarray: ...

    # -- shared validation -------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        if isinstance(ids, str | bytes):
            raise ModelError("ids must be a sequence of token ids; use tokenize(text) first")
        out = [int(i) for i in ids]
        v = self.info.vocab_size
        bad = [i for i in out if not 0 <= i < v]
        if bad:
            raise ModelError(f"token ids must be in [0, {v}); got {bad[:5]}")
        return out

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        n = self.info.n_layers
        out = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer <= n:
                raise LayerError(
                    f"layer {layer!r} is out of range for {self.info.name}: expected 0..{n} "
                    "(0 = embedding output, l = residual after block l)"
                )
            out.append(int(layer))
        return out

    def _check_positions(self, positions: Sequence[int] | None, length: int) -> list[int]:
        if positions is None:
            return list(range(length))
        out = []
        for p in positions:
            if isinstance(p, bool) or not isinstance(p, int | np.integer) or not -length <= p < length:
                raise PositionError(f"position {p!r} is outside a sequence of {length} positions")
            out.append(int(p) % length)
        return out

    def _check_vectors(self, arr: Any, what: str, rows: int | None = None) -> np.ndarray:
        a = np.asarray(arr)
        d = self.info.hidden_size
        if a.ndim not in (1, 2) or a.shape[-1] != d or not np.issubdtype(a.dtype, np.floating):
            raise HiddenSizeError(
                f"{what} must be a float array of shape [{d}] or [n, {d}] for {self.info.name}; "
                f"got {a.dtype} {a.shape}"
            )
        if rows is not None and a.ndim == 2 and a.shape[0] not in (1, rows):
            raise HiddenSizeError(f"{what} has {a.shape[0]} rows for {rows} positions")
        if not np.isfinite(a).all():
            raise HiddenSizeError(f"{what} contains NaN or infinite values")
        return a

    def _check_prefix(self, prefix: Any) -> np.ndarray | None:
        if prefix is None:
            return None
        a = self._check_vectors(prefix, "prefix")
        return a[None] if a.ndim == 1 else a

    def _check_injections(
        self, inject: Sequence[Injection], length: int
    ) -> list[tuple[int, list[int], np.ndarray, Any]]:
        out = []
        for inj in inject:
            if not isinstance(inj, Injection):
                raise ConditioningError(f"inject expects Injection records, got {type(inj).__name__}")
            (layer,) = self._check_layers([inj.layer])
            pos = self._check_positions(inj.positions, length)
            vec = self._check_vectors(inj.vector, f"injection vector at layer {layer}", rows=len(pos))
            if not callable(inj.mode) and inj.mode not in _MODES:
                raise ConditioningError(
                    f"injection mode must be one of {_MODES} or a function, got {inj.mode!r}"
                )
            out.append((layer, pos, vec, inj.mode))
        return out

    def _check_forward(
        self,
        ids: Sequence[int],
        capture: Sequence[int],
        positions: Sequence[int] | None,
        inject: Sequence[Injection],
        prefix: Any,
        prefix_at: int,
        past: KVCache | None,
        logits: str,
    ) -> tuple[list[int], np.ndarray | None, int, list[int], list[int], list, KVCache | None]:
        """Every `forward` argument checked: (ids, prefix, n, layers, positions, injections, past)."""
        ids = self._check_ids(ids)
        pre = self._check_prefix(prefix)
        if logits not in ("last", "all", "none"):
            raise ModelError(f"logits must be 'last', 'all' or 'none', got {logits!r}")
        if not 0 <= prefix_at <= len(ids):
            raise ModelError(f"prefix_at must be in 0..{len(ids)}, got {prefix_at}")
        n = len(ids) + (0 if pre is None else len(pre))
        if n == 0:
            raise ModelError("forward needs at least one token or prefix vector")
        layers = self._check_layers(capture)
        cap_pos = self._check_positions(positions, n)
        injections = self._check_injections(inject, n)
        return ids, pre, n, layers, cap_pos, injections, self._check_past(past)

    def _check_past(self, past: KVCache | None) -> KVCache | None:
        if past is None:
            return None
        if not isinstance(past, KVCache):
            raise ConditioningError(f"past must be a KVCache, got {type(past).__name__}")
        if past.fingerprint != self.info.fingerprint:
            raise FingerprintMismatchError(
                f"KV cache was produced by model {past.fingerprint[:12]}..., "
                f"this is {self.info.name} ({self.info.fingerprint[:12]}...)"
            )
        return past

    def _prompt_parts(
        self, prompt: str, cond: Conditioning
    ) -> tuple[list[int], list[int], np.ndarray | None, bool]:
        """(ids before the marker, ids after it, the checked prefix, whether the marker is there)
        of `prompt` under `cond`, as `generate` and `prompt_logits` both build it."""
        before, after = self.split_prompt(cond.text + prompt)
        pre = self._check_prefix(cond.prefix)
        # A continuation of a cached prefix must not restart the sequence with BOS.
        ids_a = self.tokenize(before) if cond.past is not None else self.prompt_ids(before)
        ids_b = self.tokenize(after) if after is not None else []
        return ids_a, ids_b, pre, after is not None

    def _check_generate(
        self,
        prompts: str | Sequence[str],
        conditioning: Conditioning | Sequence[Conditioning] | None,
        max_new_tokens: int,
        sampling: Sampling,
    ) -> tuple[list[str], list[Conditioning]]:
        """Every `generate` argument checked: (prompts, one conditioning per prompt)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ModelError("prompts must be a str or a non-empty list of str")
        check_sampling(sampling, max_new_tokens)
        return prompts, self._conditionings(len(prompts), conditioning)

    def _conditionings(
        self, n: int, conditioning: Conditioning | Sequence[Conditioning] | None
    ) -> list[Conditioning]:
        if conditioning is None:
            return [Conditioning()] * n
        if isinstance(conditioning, Conditioning):
            return [conditioning] * n
        conds = list(conditioning)
        if len(conds) != n or not all(isinstance(c, Conditioning) for c in conds):
            raise ConditioningError(f"expected one Conditioning or a list of {n}, got {conditioning!r}")
        return conds


def check_sampling(sampling: Sampling, max_new_tokens: int) -> None:
    if not isinstance(sampling, Sampling):
        raise ModelError(f"sampling must be a Sampling, got {type(sampling).__name__}")
    if not (math.isfinite(sampling.temperature) and sampling.temperature >= 0):
        raise ModelError(f"temperature must be >= 0, got {sampling.temperature}")
    if not 0 < sampling.top_p <= 1 or sampling.top_k < 0:
        raise ModelError(f"need 0 < top_p <= 1 and top_k >= 0, got {sampling}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ModelError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")


def first_stop(text: str, stop: Sequence[str]) -> int:
    """Index where the earliest stop string starts in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else -1


def read_model_meta(path: Path) -> dict[str, Any]:
    """`lpca_model.json` written by the zoo, or a fingerprint computed from the files."""
    meta_file = path / "lpca_model.json"
    if meta_file.exists():
        return json.loads(meta_file.read_text())
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        f = path / name
        if f.exists():
            h.update(name.encode() + b"\0" + f.read_bytes())
    st = (path / "model.safetensors").stat() if (path / "model.safetensors").exists() else None
    if st is not None:
        h.update(f"{st.st_size}".encode())
    return {"id": path.name, "fingerprint": h.hexdigest()}


def _as_message_dict(m: ChatMessage | Mapping[str, str]) -> dict[str, str]:
    if isinstance(m, ChatMessage):
        return {"role": m.role, "content": m.content}
    if isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str):
        return {"role": m["role"], "content": m["content"]}
    raise ModelError(f"chat messages must be ChatMessage or {{'role': str, 'content': str}}, got {m!r}")
