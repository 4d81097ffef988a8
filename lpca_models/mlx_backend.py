"""`MlxBackend`: the `Backend` interface on MLX + mlx-lm.

mlx-lm keeps a model's decoder blocks in a plain list and looks ``__call__`` up
on the type, so hidden states are read and written by swapping a block's class
for a subclass whose ``__call__`` wraps the original (the parameter tree is
untouched); the swap is always undone. Layer 0 is a hook on the *input* of the
first block: every prompt pass feeds a placeholder through the model's
``input_embeddings=`` path and the hook substitutes the exact embeddings, so any
scale the model applies (Gemma's sqrt(d), rounded through bfloat16 by mlx-lm) is
already in `embed` and is not applied twice to prefix vectors. `embed` itself runs
the model's own embedding path and stops at block 0, so it assumes (as for llama,
qwen2 and gemma3) that nothing but embedding and scaling happens before block 0.
transformers-5 configs are read through `zoo.mlx_compat_keys` (mlx-lm 0.32 would
otherwise ignore the nested RoPE settings).

Generation is really batched: left-padded rows share one pass, with mlx-lm's
``BatchKVCache`` / ``BatchRotatingKVCache`` supplying the padding mask and a
per-row RoPE offset, so row i's tokens sit at positions 0..n_i-1 as they would
alone. Like ``mlx_lm.generate``, the next decode step is queued before the
current tokens are read back; when every row has just finished, that one
speculative step is wasted (and counted in `Timing.forward_passes`).

KV caches: full-attention layers export their filled length. Sliding-window
layers (Gemma-3) export their whole history while it is still held, else the
last ``window - 1`` positions (all that a later token can attend to); imports
accept either form. Other cache kinds raise `ConditioningError`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, RotatingKVCache, make_prompt_cache
    from mlx_lm.models.cache import KVCache as MlxKVCache
except ImportError as e:  # pragma: no cover - exercised only without the mlx extra
    from lpca_models.errors import MissingPackageError

    raise MissingPackageError(
        f'MlxBackend needs mlx and mlx-lm ({e.name} is missing): pip install -c constraints.txt "lpca[mlx]"'
    ) from e

from lpca_models.backend import Backend, first_stop, read_model_meta
from lpca_models.errors import ConditioningError, ModelError
from lpca_models.types import (
    GREEDY,
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
from lpca_models.zoo import mlx_compat_keys

_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
_EMBED_CHUNK = 16384


class MlxBackend(Backend):
    """An mlx-lm causal LM loaded from an HF-format directory (the zoo's cache)."""

    def __init__(self, path: str | Path, *, dtype: str = "float32", name: str | None = None):
        path = Path(path)
        if not (path / "config.json").exists():
            raise ModelError(
                f"{path} is not a model directory (no config.json); use lpca_models.load(model_id)"
            )
        if dtype not in _DTYPES:
            raise ModelError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        meta = read_model_meta(path)
        cfg = json.loads((path / "config.json").read_text())
        try:
            self.model, wrapper = mlx_lm.load(str(path), model_config=mlx_compat_keys(cfg))
        except (ValueError, FileNotFoundError) as e:
            raise ModelError(f"mlx-lm cannot load {path}: {e}") from e
        self.model.set_dtype(_DTYPES[dtype])
        self.path = path
        # The transformers tokenizer inside mlx-lm's wrapper: same ids and templates as TorchBackend.
        self.tokenizer = getattr(wrapper, "_tokenizer", wrapper)
        self._core = self.model.model
        self._layers = self._core.layers
        self._dtype = _DTYPES[dtype]
        args = self.model.args
        self._softcap = getattr(args, "final_logit_softcapping", None)
        self._eos = _eos_ids(path, cfg, self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos or {0})
        self.info = ModelInfo(
            name=name or meta.get("id", path.name),
            framework="mlx",
            architecture=cfg.get("model_type", args.model_type),
            n_layers=len(self._layers),
            hidden_size=int(getattr(args, "hidden_size", cfg.get("hidden_size"))),
            vocab_size=int(self._core.embed_tokens.weight.shape[0]),
            dtype=dtype,
            fingerprint=meta["fingerprint"],
            has_chat_template=bool(self.tokenizer.chat_template),
        )
        self.timing = Timing()
        self._bos = self.tokenizer.bos_token

    # -- text ------------------------------------------------------------------------
    # -- arrays ----------------------------------------------------------------------
    def embed(self, ids: Sequence[int]) -> np.ndarray:
        return _np(self._embed(self._check_ids(ids)))

    def _embed(self, ids: list[int]) -> mx.array:
        """What the first block reads for `ids`: the model's own embedding path, stopped at block 0."""
        if not ids:
            return mx.zeros((0, self.info.hidden_size), self._dtype)
        seen: list[mx.array] = []

        def stop(x: mx.array) -> mx.array:
            seen.append(x)
            raise _ReachedBlock0

        # One token per row: no mask and no position enters the embedding.
        with self._hooked({0: stop}), contextlib.suppress(_ReachedBlock0):
            self._core(mx.array(ids, dtype=mx.int32)[:, None])
        return seen[0][:, 0]

    def input_embeddings(self) -> np.ndarray:
        v = self.info.vocab_size
        chunks = [list(range(i, min(i + _EMBED_CHUNK, v))) for i in range(0, v, _EMBED_CHUNK)]
        return np.concatenate([_np(self._embed(c)) for c in chunks])

    def unembed(self, hidden: np.ndarray) -> np.ndarray:
        h = np.asarray(hidden)
        if h.shape[-1:] != (self.info.hidden_size,):
            self._check_vectors(h, "hidden")
        x = mx.array(h.astype(np.float32)).astype(self._dtype)
        return _np(self._logits(self._core.norm(x)))

    def _logits(self, normed: mx.array) -> mx.array:
        head = getattr(self.model, "lm_head", None)
        logits = head(normed) if head is not None else self._core.embed_tokens.as_linear(normed)
        if self._softcap:
            logits = mx.tanh(logits / self._softcap) * self._softcap
        return logits

    # -- forward -----------------------------------------------------------------------
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
        ids, pre, n, layers, cap_pos, injections, past = self._check_forward(
            ids, capture, positions, inject, prefix, prefix_at, past, logits
        )
        x = self._embed(ids)
        if pre is not None:
            x = mx.concatenate([x[:prefix_at], self._mx(pre), x[prefix_at:]])
        cache = self._import_cache(past) if past is not None else None
        if cache is None and return_past:
            cache = make_prompt_cache(self.model)
        captured: dict[int, mx.array] = {}
        plan = _Plan(injections, [0] * len(injections), [0] * len(injections), cap_pos, layers)
        h = self._prompt_pass(x[None], cache, plan, captured)[0]
        if logits == "last":
            lg = self._logits(h[-1])
        elif logits == "all":
            lg = self._logits(h)
        else:
            lg = mx.zeros((0,), mx.float32)
        hidden = {layer: captured[layer][0] for layer in layers}
        mx.eval(lg, hidden, [c.state for c in cache] if cache is not None else [])
        self.timing.forward_passes += 1
        self.timing.prompt_tokens += n
        exported = self._export_cache(cache) if return_past else None
        return Forward(_np(lg), {k: _np(v) for k, v in hidden.items()}, exported, n)

    # -- batched forward ---------------------------------------------------------------
    def forward_batch(self, requests: Sequence[ForwardRequest]) -> list[Forward]:
        """Rows without an imported cache share one left-padded pass (mlx-lm's batch caches give
        each row its own padding mask and RoPE offset); a row continuing a cache, or exporting one
        from a model with sliding-window layers, runs alone."""
        reqs = self._check_requests(requests)
        checked = [
            self._check_forward(
                r.ids, r.capture, r.positions, r.inject, r.prefix, r.prefix_at, r.past, r.logits
            )
            for r in reqs
        ]
        rotating = any(type(c) is not MlxKVCache for c in make_prompt_cache(self.model))
        together = [
            i
            for i, (r, c) in enumerate(zip(reqs, checked))
            if c[6] is None and not (r.return_past and rotating)
        ]
        if len(together) < 2:
            together = []
        out: list[Forward | None] = [None] * len(reqs)
        for i, r in enumerate(reqs):
            if i not in together:
                out[i] = self.forward(**r.kwargs())
        if together:
            rows = [checked[i] for i in together]
            for i, f in zip(together, self._forward_rows(rows, [reqs[i] for i in together])):
                out[i] = f
        return out  # type: ignore[return-value]

    def _forward_rows(self, rows: list[tuple], reqs: list[ForwardRequest]) -> list[Forward]:
        xs = []
        for (ids, pre, *_), r in zip(rows, reqs):
            x = self._embed(ids)
            if pre is not None:
                x = mx.concatenate([x[: r.prefix_at], self._mx(pre), x[r.prefix_at :]])
            xs.append(x)
        cache, x, pads = self._padded(xs)
        width = x.shape[1]
        captured: dict[int, mx.array] = {}
        plan = _Plan(
            [inj for row in rows for inj in row[5]],
            [pads[i] for i, row in enumerate(rows) for _ in row[5]],
            [i for i, row in enumerate(rows) for _ in row[5]],
            None,
            sorted({layer for row in rows for layer in row[3]}),
        )
        h = self._prompt_pass(x, cache, plan, captured)
        mx.eval(h, captured, [c.state for c in cache])
        self.timing.forward_passes += 1
        self.timing.prompt_tokens += sum(row[2] for row in rows)
        out = []
        for i, ((_, _, n, layers, cap_pos, _, _), r) in enumerate(zip(rows, reqs)):
            pad = pads[i]
            if r.logits == "last":
                lg = self._logits(h[i, -1])
            elif r.logits == "all":
                lg = self._logits(h[i, pad:])
            else:
                lg = mx.zeros((0,), mx.float32)
            cols = mx.array([p + pad for p in cap_pos], dtype=mx.int32)
            hidden = {layer: _np(captured[layer][i][cols]) for layer in layers}
            exported = None
            if r.return_past:  # full-attention layers only (checked by forward_batch)
                keys = tuple(_np(c.keys[i, :, pad:width]) for c in cache)
                values = tuple(_np(c.values[i, :, pad:width]) for c in cache)
                exported = KVCache(keys, values, self.info.fingerprint, n, tuple(range(len(keys))))
            out.append(Forward(_np(lg), hidden, exported, n))
        return out

    def _padded(self, xs: list[mx.array]) -> tuple[list, mx.array, list[int]]:
        """Left-padded rows ``[B, T, d]`` and a batch cache that masks the padding."""
        t = max(len(x) for x in xs)
        pads = [t - len(x) for x in xs]
        zeros = mx.zeros((t, self.info.hidden_size), self._dtype)
        x = mx.stack([mx.concatenate([zeros[:p], r]) for p, r in zip(pads, xs)])
        return self._batch_cache(pads), x, pads

    def decode_embeddings(
        self,
        prompts: Sequence[Sequence[int]],
        steps: int,
        step: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> list[np.ndarray]:
        rows = [self._check_ids(p) for p in self._check_prompts_ids(prompts)]
        self._check_steps(steps)
        b = len(rows)
        cache, x, _ = self._padded([self._embed(ids) for ids in rows])
        empty = _Plan([], [], [], None, [])
        h = self._prompt_pass(x, cache, empty, {})[:, -1]
        self.timing.forward_passes += 1
        self.timing.prompt_tokens += sum(len(ids) for ids in rows)

        def advance(v: np.ndarray) -> np.ndarray:
            self.timing.forward_passes += 1
            return _np(self._logits(self._prompt_pass(self._mx(v)[:, None], cache, empty, {})[:, -1]))

        return self._emit_loop(b, steps, step, _np(self._logits(h)), advance)

    def _prompt_pass(
        self, x: mx.array, cache: list | None, plan: _Plan, captured: dict[int, mx.array]
    ) -> mx.array:
        """Final-normed hidden states of `x` ([B, T, d] block-0 inputs) with the plan's hooks."""
        fns: dict[int, Callable[[mx.array], mx.array]] = {0: lambda _placeholder: plan.apply(0, x, captured)}
        for layer in plan.layers_touched() - {0}:
            fns[layer] = lambda h, layer=layer: plan.apply(layer, h, captured)
        with self._hooked(fns):
            # The placeholder only carries the shape: block 0 reads `x` (see the module docstring).
            return self._core(mx.zeros(x.shape[:2], mx.int32), cache=cache, input_embeddings=mx.zeros_like(x))

    @contextlib.contextmanager
    def _hooked(self, fns: dict[int, Callable[[mx.array], mx.array]]) -> Iterator[None]:
        """Apply ``fns[l]`` to the residual stream at layer l (0: input of block 0, l: output of block l)."""
        swapped: list[tuple[Any, type]] = []
        try:
            for layer, fn in sorted(fns.items()):
                block = self._layers[max(layer - 1, 0)]
                swapped.append((block, type(block)))
                block.__class__ = _hooked_class(type(block), fn, before=layer == 0)
            yield
        finally:
            for block, cls in reversed(swapped):
                block.__class__ = cls

    def _mx(self, a: np.ndarray) -> mx.array:
        return mx.array(np.asarray(a, dtype=np.float32)).astype(self._dtype)

    # -- KV cache ----------------------------------------------------------------------
    def _export_cache(self, cache: list) -> KVCache:
        keys, values, lengths = [], [], []
        for i, c in enumerate(cache):
            if type(c) is MlxKVCache:
                k, v = c.keys[..., : c.offset, :], c.values[..., : c.offset, :]
            elif type(c) is RotatingKVCache and c.keep == 0:
                k, v = _temporal(c, c.keys), _temporal(c, c.values)
                if k.shape[2] < c.offset:  # rotated: keep what a later token can still attend to
                    k, v = k[..., -(c.max_size - 1) :, :], v[..., -(c.max_size - 1) :, :]
            else:
                raise ConditioningError(
                    f"cannot export layer {i}'s {type(c).__name__} (only KVCache and RotatingKVCache)"
                )
            keys.append(_np(k[0]))
            values.append(_np(v[0]))
            lengths.append(int(c.offset))
        layers = tuple(range(len(keys)))
        return KVCache(tuple(keys), tuple(values), self.info.fingerprint, max(lengths), layers)

    def _import_cache(self, past: KVCache) -> list:
        if past.layers != tuple(range(self.info.n_layers)):
            raise ConditioningError(
                f"this backend imports caches of all {self.info.n_layers} layers; got layers {past.layers}"
            )
        cache = make_prompt_cache(self.model)
        t = past.length
        for i, (c, k, v) in enumerate(zip(cache, past.keys, past.values)):
            k, v = np.asarray(k), np.asarray(v)
            if k.ndim != 3 or v.ndim != 3 or k.shape[:2] != v.shape[:2]:
                raise ConditioningError(
                    f"cache layer {i}: keys and values must be [n_kv_heads, length, head_dim], "
                    f"got {k.shape} and {v.shape}"
                )
            s = k.shape[1]
            km, vm = self._mx(k)[None], self._mx(v)[None]
            if type(c) is MlxKVCache:
                if s != t:
                    raise ConditioningError(f"cache layer {i} holds {s} positions, expected {t}")
                c.keys, c.values, c.offset = km, vm, t
            elif type(c) is RotatingKVCache and c.keep == 0:
                w = c.max_size - 1
                if s == t:  # the whole history, as after a prompt pass
                    c.keys, c.values, c.offset, c._idx = km, vm, t, s
                elif s >= w:  # a window: one free slot in front makes it a full ring about to rotate
                    pad = mx.zeros((1, km.shape[1], 1, km.shape[3]), km.dtype)
                    padv = mx.zeros((1, vm.shape[1], 1, vm.shape[3]), vm.dtype)
                    c.keys = mx.concatenate([pad, km[:, :, -w:]], axis=2)
                    c.values = mx.concatenate([padv, vm[:, :, -w:]], axis=2)
                    c.offset, c._idx = t, c.max_size
                else:
                    raise ConditioningError(
                        f"cache layer {i} is a sliding-window layer of {c.max_size} tokens: it needs all {t} "
                        f"positions or the last {w}, got {s}"
                    )
            else:
                raise ConditioningError(f"cannot import into layer {i}'s {type(c).__name__}")
        return cache

    # -- generation --------------------------------------------------------------------
    def generate(
        self,
        prompts: str | Sequence[str],
        conditioning: Conditioning | Sequence[Conditioning] | None = None,
        *,
        max_new_tokens: int = 64,
        sampling: Sampling = GREEDY,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        prompts, conds = self._check_generate(prompts, conditioning, max_new_tokens, sampling)
        rows = [self._row(p, c) for p, c in zip(prompts, conds)]
        if len(rows) > 1 and any(c.past is not None for c in conds):
            # mlx-lm's batch caches are left-padded from an empty start: a row continuing its own
            # imported cache is decoded alone (same tokens, one row's passes each)
            return [
                self._decode([r], [c], max_new_tokens, sampling, tuple(stop))[0] for r, c in zip(rows, conds)
            ]
        return self._decode(rows, conds, max_new_tokens, sampling, tuple(stop))

    def _row(self, prompt: str, cond: Conditioning) -> tuple[mx.array, list, int]:
        """Input embeddings of one prompt with its conditioning, its injections, its token count."""
        ids_a, ids_b, pre, marked = self._prompt_parts(prompt, cond)
        parts = [self._embed(ids_a)] if ids_a else []
        if pre is not None:
            # at the marker, or before the whole prompt when there is none (as forward's prefix_at=0)
            parts.insert(len(parts) if marked else 0, self._mx(pre))
        if ids_b:
            parts.append(self._embed(ids_b))
        if not parts:
            raise ModelError("empty prompt with no prefix: nothing to condition generation on")
        x = mx.concatenate(parts)
        injections = self._check_injections(cond.injections, len(x))
        if cond.past is not None:
            self._check_past(cond.past)
        return x, injections, len(ids_a) + len(ids_b)

    def _decode(
        self, rows: list, conds: list[Conditioning], max_new: int, sampling: Sampling, stop: tuple[str, ...]
    ) -> list[Generation]:
        b = len(rows)
        lengths = [len(r[0]) for r in rows]
        t = max(lengths)
        pads = [t - n for n in lengths]
        if b == 1:
            past = conds[0].past
            cache = self._import_cache(past) if past is not None else make_prompt_cache(self.model)
            x = rows[0][0][None]
        else:
            cache = self._batch_cache(pads)
            zeros = mx.zeros((t, self.info.hidden_size), self._dtype)
            x = mx.stack([mx.concatenate([zeros[:p], r[0]]) for p, r in zip(pads, rows)])  # left padding
        plan = _Plan(
            [inj for r in rows for inj in r[1]],
            [p for p, r in zip(pads, rows) for _ in r[1]],
            [i for i, r in enumerate(rows) for _ in r[1]],
            None,
            [],
        )
        h = self._prompt_pass(x, cache, plan, {})
        key = mx.random.key(sampling.seed)
        nxt, key = self._pick(self._logits(h[:, -1]), sampling, key)
        mx.async_eval(nxt)
        passes = 1
        tokens: list[list[int]] = [[] for _ in range(b)]
        done = [""] * b
        for step in range(max_new):
            if step < max_new - 1:
                # Queue the next step before reading this one back; finished rows keep decoding, unread.
                h = self._core(nxt[:, None], cache=cache)
                following, key = self._pick(self._logits(h[:, -1]), sampling, key)
                mx.async_eval(following)
                passes += 1
            for i, tok in enumerate(nxt.tolist()):
                if done[i]:
                    continue
                tokens[i].append(tok)
                if tok in self._eos:
                    done[i] = "eos"
                elif stop and first_stop(self.detokenize(tokens[i]), stop) >= 0:
                    done[i] = "stop"
            if all(done) or step == max_new - 1:
                break
            nxt = following
        self.timing.forward_passes += passes
        self.timing.prompt_tokens += sum(r[2] for r in rows)
        self.timing.generated_tokens += sum(len(tk) for tk in tokens)
        results = []
        for i in range(b):
            ids = tokens[i]
            reason = done[i] or "length"
            body = ids[:-1] if reason == "eos" else ids
            text = self.detokenize(body, skip_special_tokens=False)
            if reason == "stop":
                text = text[: first_stop(text, stop)]
            results.append(Generation(text, tuple(ids), rows[i][2], reason, passes))  # type: ignore[arg-type]
        return results

    def _batch_cache(self, pads: list[int]) -> list:
        out = []
        for i, c in enumerate(make_prompt_cache(self.model)):
            if type(c) is MlxKVCache:
                out.append(BatchKVCache(pads))
            elif type(c) is RotatingKVCache and c.keep == 0:
                out.append(BatchRotatingKVCache(c.max_size, pads))
            else:
                raise ConditioningError(f"batched generation does not support layer {i}'s {type(c).__name__}")
        return out

    def _pick(self, logits: mx.array, sampling: Sampling, key: mx.array) -> tuple[mx.array, mx.array]:
        if sampling.temperature == 0:
            return mx.argmax(logits, axis=-1), key
        lg = logits.astype(mx.float32) / sampling.temperature
        if sampling.top_k:
            k = min(sampling.top_k, lg.shape[-1])
            kth = mx.sort(lg, axis=-1)[:, -k:][:, :1]
            lg = mx.where(lg < kth, -mx.inf, lg)
        if sampling.top_p < 1:
            order = mx.argsort(-lg, axis=-1)
            sorted_lg = mx.take_along_axis(lg, order, axis=-1)
            probs = mx.softmax(sorted_lg, axis=-1)
            drop = mx.cumsum(probs, axis=-1) - probs > sampling.top_p
            sorted_lg = mx.where(drop, -mx.inf, sorted_lg)
            lg = mx.take_along_axis(sorted_lg, mx.argsort(order, axis=-1), axis=-1)
        key, sub = mx.random.split(key)
        return mx.random.categorical(lg, key=sub), key


class _ReachedBlock0(Exception):
    """Raised by `_embed`'s hook: the embedding is known, the rest of the pass is not needed."""


def _hooked_class(base: type, fn: Callable[[mx.array], mx.array], before: bool) -> type:
    if before:

        def call(self: Any, x: mx.array, *args: Any, **kwargs: Any) -> Any:
            return base.__call__(self, fn(x), *args, **kwargs)
    else:

        def call(self: Any, x: mx.array, *args: Any, **kwargs: Any) -> Any:
            return fn(base.__call__(self, x, *args, **kwargs))

    return type(f"Hooked{base.__name__}", (base,), {"__call__": call})


class _Plan:
    """Injections and captures to apply at each layer of one prompt pass.

    In a batch, ``offsets[j]`` shifts injection j's positions by its row's left
    padding and ``batch_rows[j]`` names its row.
    """

    def __init__(
        self,
        injections: list,
        offsets: list[int],
        batch_rows: list[int],
        cap_pos: list[int] | None,
        capture: list[int],
    ):
        self.injections = injections
        self.offsets = offsets
        self.batch_rows = batch_rows
        self.cap_pos = cap_pos
        self.capture = set(capture)

    def layers_touched(self) -> set[int]:
        return {inj[0] for inj in self.injections} | self.capture

    def apply(self, layer: int, h: mx.array, captured: dict[int, mx.array]) -> mx.array:
        todo = [j for j, inj in enumerate(self.injections) if inj[0] == layer]
        if todo:
            h = mx.array(h)  # a copy: item assignment below must not reach arrays the model still holds
            for j in todo:
                _, pos, vec, mode = self.injections[j]
                rows = mx.array([p + self.offsets[j] for p in pos], dtype=mx.int32)
                b = self.batch_rows[j]
                v = mx.array(np.asarray(vec, dtype=np.float32)).astype(h.dtype)
                cur = h[b, rows]
                if mode == "replace":
                    new = mx.broadcast_to(v, cur.shape)
                elif mode == "add":
                    new = cur + v
                elif mode == "mean":
                    new = (cur + v) / 2
                else:
                    new = mode(cur, v)
                    if not isinstance(new, mx.array) or tuple(new.shape) != tuple(cur.shape):
                        got = tuple(new.shape) if hasattr(new, "shape") else type(new).__name__
                        raise ConditioningError(
                            f"injection function must return an mlx array of shape {tuple(cur.shape)}, "
                            f"got {got}"
                        )
                h[b, rows] = new.astype(h.dtype)
        if layer in self.capture and layer not in captured:
            captured[layer] = h if self.cap_pos is None else h[:, mx.array(self.cap_pos, dtype=mx.int32)]
        return h


def _temporal(c: RotatingKVCache, a: mx.array) -> mx.array:
    """A rotating cache's filled entries, oldest first (mlx-lm's own rule, with keep == 0)."""
    if c._idx == a.shape[2]:
        return a
    if c._idx < c.offset:
        return mx.concatenate([a[..., c._idx :, :], a[..., : c._idx, :]], axis=2)
    return a[..., : c._idx, :]


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32) if a.dtype != mx.float32 else a)


def _eos_ids(path: Path, cfg: dict, tokenizer_eos: int | None) -> set[int]:
    """The generation config's eos ids (the model config's when it has none) plus the tokenizer's."""
    gen_file = path / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer_eos is not None:
        ids.add(tokenizer_eos)
    return ids


#: The one derivation of the flat keys mlx-lm reads (`zoo.mlx_compat_keys`), under its old name.
mlx_config_overrides = mlx_compat_keys
