"""`TorchBackend`: the `Backend` interface on PyTorch + transformers.

Hidden states are read and written with forward hooks on the decoder layers
(layer 0 is handled on the input embeddings directly, since the model is always
driven through ``inputs_embeds``). The generation loop is our own so that prefix
embeddings, injections and imported caches apply identically to batched and
unbatched prompts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
    from transformers.utils import logging as hf_logging
except ImportError as e:  # pragma: no cover - exercised only without the torch extra
    from lpca_models.errors import MissingPackageError

    raise MissingPackageError(
        f"TorchBackend needs torch and transformers ({e.name} is missing): "
        'pip install -c constraints.txt "lpca[torch]"'
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

hf_logging.disable_progress_bar()  # loading from the local cache is instant; bars only clutter logs

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchBackend(Backend):
    """A transformers causal LM loaded from an HF-format directory (the zoo's cache)."""

    def __init__(
        self, path: str | Path, *, dtype: str = "float32", device: str = "cpu", name: str | None = None
    ):
        path = Path(path)
        if not (path / "config.json").exists():
            raise ModelError(
                f"{path} is not a model directory (no config.json); use lpca_models.load(model_id)"
            )
        if dtype not in _DTYPES:
            raise ModelError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        meta = read_model_meta(path)
        self.path = path
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype]).to(self.device).eval()
        cfg = self.model.config.get_text_config()
        self._core = self.model.model
        self._layers = self._core.layers
        self._dtype = _DTYPES[dtype]
        self._softcap = getattr(cfg, "final_logit_softcapping", None)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self._eos = eos_ids
        self._pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids or {0})
        )
        self.info = ModelInfo(
            name=name or meta.get("id", path.name),
            framework="torch",
            architecture=cfg.model_type,
            n_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            vocab_size=self.model.get_input_embeddings().num_embeddings,
            dtype=dtype,
            fingerprint=meta["fingerprint"],
            has_chat_template=bool(self.tokenizer.chat_template),
        )
        self.timing = Timing()
        self._bos = self.tokenizer.bos_token
        types = getattr(cfg, "layer_types", None) or ()
        window = getattr(cfg, "sliding_window", None)
        #: Batched passes pad rows; a sliding-window layer must hold every position for that to be exact.
        self._window = int(window) if window and any("sliding" in t for t in types) else None

    # -- text ------------------------------------------------------------------------
    # -- arrays ----------------------------------------------------------------------
    def embed(self, ids: Sequence[int]) -> np.ndarray:
        ids = self._check_ids(ids)
        with torch.inference_mode():
            return self._embed(ids).float().cpu().numpy()

    def _embed(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor(ids, dtype=torch.long, device=self.device)
        return self._core.embed_tokens(t)

    def input_embeddings(self) -> np.ndarray:
        with torch.inference_mode():
            return self._embed(list(range(self.info.vocab_size))).float().cpu().numpy()

    def unembed(self, hidden: np.ndarray) -> np.ndarray:
        h = np.asarray(hidden)
        if h.shape[-1:] != (self.info.hidden_size,):
            self._check_vectors(h, "hidden")
        with torch.inference_mode():
            x = torch.as_tensor(h, dtype=self._dtype, device=self.device)
            return self._logits(self._core.norm(x)).float().cpu().numpy()

    def _logits(self, normed: torch.Tensor) -> torch.Tensor:
        logits = self.model.lm_head(normed)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    # -- training access: torch tensors that keep their graph ---------------------------
    @property
    def core(self) -> Any:
        """The decoder body (``embed_tokens``, blocks, final norm) as an ``nn.Module``: codec training
        runs it on ``inputs_embeds`` and reads ``last_hidden_state`` (final norm applied)."""
        return self._core

    @property
    def blocks(self) -> Sequence[Any]:
        """The decoder blocks; ``blocks[l - 1]``'s output is layer l's residual stream (hookable)."""
        return self._layers

    def head_logits(self, normed: torch.Tensor) -> torch.Tensor:
        """LM head (and logit soft-capping) on final-normed states, differentiably (`unembed` is
        this plus the final norm, as numpy)."""
        return self._logits(normed)

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
        with torch.inference_mode():
            x = self._embed(ids)
            if pre is not None:
                p = torch.as_tensor(pre, dtype=x.dtype, device=self.device)
                x = torch.cat([x[:prefix_at], p, x[prefix_at:]])
            x = x[None]
            cache = self._import_cache(past) if past is not None else None
            if cache is None and return_past:
                cache = DynamicCache(config=self.model.config)
            captured: dict[int, torch.Tensor] = {}
            plan = _Plan(injections, [0] * 1, cap_pos, layers)
            x = plan.apply(0, x, captured)
            with self._hooks(plan, captured):
                out = self._core(inputs_embeds=x, cache=cache, use_cache=cache is not None, return_dict=True)
            self.timing.forward_passes += 1
            self.timing.prompt_tokens += n
            h = out.last_hidden_state[0]
            if logits == "last":
                lg = self._logits(h[-1]).float().cpu().numpy()
            elif logits == "all":
                lg = self._logits(h).float().cpu().numpy()
            else:
                lg = np.zeros((0,), np.float32)
            hidden = {layer: captured[layer][0].float().cpu().numpy() for layer in layers}
            exported = self._export_cache(out.cache) if return_past else None
        return Forward(lg, hidden, exported, n)

    # -- batched forward ---------------------------------------------------------------
    #: Rows of a batch that share at least this many leading tokens read them once: one pass
    #: over the shared tokens, its cache broadcast to every row (role prompts, chat templates).
    shared_prefix_min = 16

    def forward_batch(self, requests: Sequence[ForwardRequest]) -> list[Forward]:
        reqs = self._check_requests(requests)
        rows = [
            _Row(
                *self._check_forward(
                    r.ids, r.capture, r.positions, r.inject, r.prefix, r.prefix_at, r.past, r.logits
                ),
                prefix_at=r.prefix_at,
                return_past=r.return_past,
                logits=r.logits,
            )
            for r in reqs
        ]
        together = [i for i, row in enumerate(rows) if self._batchable(row)]
        if len(together) < 2:
            together = []
        out: list[Forward | None] = [None] * len(reqs)
        for i, r in enumerate(reqs):
            if i not in together:  # a lone row, or a cache a padded batch cannot hold exactly
                out[i] = self.forward(**r.kwargs())
        if together:
            with torch.inference_mode():
                for i, f in zip(together, self._forward_rows([rows[i] for i in together])):
                    out[i] = f
        return out  # type: ignore[return-value]

    def decode_embeddings(
        self,
        prompts: Sequence[Sequence[int]],
        steps: int,
        step: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    ) -> list[np.ndarray]:
        ids_rows = [self._check_ids(p) for p in self._check_prompts_ids(prompts)]
        self._check_steps(steps)
        rows = [_Row(ids, None, len(ids), [], [], [], None, 0, False, "last") for ids in ids_rows]
        if not all(self._batchable(r, extra=steps) for r in rows):
            return super().decode_embeddings(prompts, steps, step)
        b = len(rows)
        with torch.inference_mode():
            p = self._batch_pass(rows, {}, need_cache=True)
            self.timing.forward_passes += p.passes
            self.timing.prompt_tokens += sum(r.n for r in rows)
            state = {"mask": p.mask, "pos": p.pos[:, -1]}

            def advance(v: np.ndarray) -> np.ndarray:
                state["mask"] = torch.cat(
                    [state["mask"], torch.ones((b, 1), dtype=torch.long, device=self.device)], 1
                )
                state["pos"] = state["pos"] + 1
                out = self._core(
                    inputs_embeds=torch.as_tensor(v, dtype=self._dtype, device=self.device)[:, None],
                    attention_mask=state["mask"],
                    position_ids=state["pos"][:, None],
                    cache=p.cache,
                    use_cache=True,
                    return_dict=True,
                )
                self.timing.forward_passes += 1
                return self._logits(out.last_hidden_state[:, -1]).float().cpu().numpy()

            first = self._logits(p.hidden[:, -1]).float().cpu().numpy()
            return self._emit_loop(b, steps, step, first, advance)

    def _batchable(self, row: _Row, extra: int = 0) -> bool:
        """Whether a row can share a padded pass exactly: its cache (if any) holds every position of
        every layer, and a sliding-window layer would still hold the whole padded row."""
        if row.past is not None and any(
            np.ndim(k) != 3 or k.shape[1] != row.past.length for k in row.past.keys
        ):
            return False
        if self._window is not None:
            total = (row.past.length if row.past is not None else 0) + row.n + extra
            return total < self._window - 1
        return True

    def _shared_prefix(self, rows: list[_Row], embs: list[torch.Tensor]) -> int:
        """Leading positions every row has in common (the same input vectors, no capture or
        injection of its own there), or 0 when fewer than `shared_prefix_min`."""
        if len(rows) < 2 or any(r.past is not None or r.logits == "all" for r in rows):
            return 0
        k = min(len(e) for e in embs)
        for r in rows:
            k = min(k, r.n - 1)  # every row keeps a position of its own (its last logits)
            if r.layers:
                k = min(k, min(r.cap_pos))
            for inj in r.injections:
                k = min(k, min(inj[1]))
        if k < self.shared_prefix_min:
            return 0
        head = embs[0][:k]
        for e in embs[1:]:
            same = (e[:k] == head).all(-1)
            if not bool(same.all()):
                k = int(same.to(torch.int8).argmin())
                if k < self.shared_prefix_min:
                    return 0
                head = head[:k]
        return k

    def _forward_rows(self, rows: list[_Row]) -> list[Forward]:
        captured: dict[int, torch.Tensor] = {}
        p = self._batch_pass(rows, captured, need_cache=any(r.return_past for r in rows))
        self.timing.forward_passes += p.passes
        self.timing.prompt_tokens += sum(r.n for r in rows)
        out = []
        for i, r in enumerate(rows):
            pad = p.pads[i]
            if r.logits == "last":
                lg = self._logits(p.hidden[i, -1]).float().cpu().numpy()
            elif r.logits == "all":
                lg = self._logits(p.hidden[i, pad:]).float().cpu().numpy()
            else:
                lg = np.zeros((0,), np.float32)
            cols = [c - p.shared + pad for c in r.cap_pos]
            hidden = {layer: captured[layer][i, cols].float().cpu().numpy() for layer in r.layers}
            exported = None
            if r.return_past:
                real = list(range(p.past_len - p.row_past[i], p.past_len))
                real += list(range(p.past_len + pad, p.past_len + p.width))
                exported = self._export_row(p.cache, i, real)
            out.append(Forward(lg, hidden, exported, r.n))
        return out

    def _batch_pass(
        self,
        rows: list[_Row],
        captured: dict[int, torch.Tensor],
        need_cache: bool,
        embs: list[torch.Tensor] | None = None,
    ) -> _Pass:
        """One padded pass over `rows` (their input embeddings `embs`, else built from ids and prefix):
        a shared head read once, each row's own past left-padded to the longest, each row's remaining
        positions left-padded to the widest (mask gaps, explicit positions), injections and
        captures placed at each row's columns. Timing counters are the caller's."""
        b, d = len(rows), self.info.hidden_size
        if embs is None:
            embs = []
            for r in rows:
                x = (
                    self._embed(r.ids)
                    if r.ids
                    else torch.zeros((0, d), dtype=self._dtype, device=self.device)
                )
                if r.pre is not None:
                    pre = torch.as_tensor(r.pre, dtype=x.dtype, device=self.device)
                    x = torch.cat([x[: r.prefix_at], pre, x[r.prefix_at :]])
                embs.append(x)
        shared = self._shared_prefix(rows, embs)
        cache = None
        passes = 1
        if shared:
            head = self._core(
                inputs_embeds=embs[0][:shared][None],
                cache=DynamicCache(config=self.model.config),
                use_cache=True,
                return_dict=True,
            ).cache
            passes += 1
            cache = DynamicCache(config=self.model.config)
            for i, layer in enumerate(head.layers):
                cache.layers[i].update(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1))
            row_past = [shared] * b
        else:
            row_past = [r.past.length if r.past is not None else 0 for r in rows]
            if b == 1 and rows[0].past is not None:
                cache = self._import_cache(rows[0].past)  # may be a sliding-window cache holding a window
            elif max(row_past):
                cache = self._import_caches([r.past for r in rows], max(row_past))
        past_len = max(row_past)
        if cache is None and need_cache:
            cache = DynamicCache(config=self.model.config)
        tails = [e[shared:] for e in embs]
        width = max(len(t) for t in tails)
        pads = [width - len(t) for t in tails]
        x = torch.zeros((b, width, d), dtype=self._dtype, device=self.device)
        mask = torch.zeros((b, past_len + width), dtype=torch.long, device=self.device)
        for i, t in enumerate(tails):
            x[i, pads[i] :] = t
            mask[i, past_len - row_past[i] : past_len] = 1
            mask[i, past_len + pads[i] :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        injections = [inj for r in rows for inj in r.injections]
        plan = _Plan(
            injections,
            [pads[i] - shared for i, r in enumerate(rows) for _ in r.injections],
            None,
            sorted({layer for r in rows for layer in r.layers}),
        )
        plan.batch_rows = [i for i, r in enumerate(rows) for _ in r.injections]
        x = plan.apply(0, x, captured)
        with self._hooks(plan, captured):
            out = self._core(
                inputs_embeds=x,
                attention_mask=mask,
                position_ids=pos,
                cache=cache,
                use_cache=cache is not None,
                return_dict=True,
            )
        return _Pass(out.last_hidden_state, cache, mask, pos, pads, shared, row_past, past_len, width, passes)

    def _import_caches(self, pasts: list[KVCache | None], length: int) -> Any:
        """Per-row caches as one batch cache, each left-padded to `length` positions."""
        b, parts = len(pasts), [self._past_tensors(p) if p is not None else None for p in pasts]
        ref = next(p for p in parts if p is not None)
        cache = DynamicCache(config=self.model.config)
        for li, (k0, v0) in enumerate(ref):
            keys = torch.zeros((b, k0.shape[0], length, k0.shape[2]), dtype=self._dtype, device=self.device)
            values = torch.zeros((b, v0.shape[0], length, v0.shape[2]), dtype=self._dtype, device=self.device)
            for i, part in enumerate(parts):
                if part is not None:
                    k, v = part[li]
                    keys[i, :, length - k.shape[1] :] = k
                    values[i, :, length - v.shape[1] :] = v
            cache.layers[li].update(keys, values)
        return cache

    def _export_row(self, cache: Any, row: int, cols: list[int]) -> KVCache:
        idx = torch.tensor(cols, dtype=torch.long, device=self.device)
        keys = tuple(layer.keys[row][:, idx].float().cpu().numpy() for layer in cache.layers)
        values = tuple(layer.values[row][:, idx].float().cpu().numpy() for layer in cache.layers)
        return KVCache(keys, values, self.info.fingerprint, len(cols), tuple(range(len(keys))))

    @contextlib.contextmanager
    def _hooks(self, plan: _Plan, captured: dict[int, torch.Tensor]) -> Iterator[None]:
        handles = []
        for layer in plan.layers_touched():
            if layer == 0:
                continue

            def hook(_mod: Any, _args: Any, out: Any, layer: int = layer) -> Any:
                h = out[0] if isinstance(out, tuple) else out
                h2 = plan.apply(layer, h, captured)
                if h2 is h:
                    return None
                return (h2, *out[1:]) if isinstance(out, tuple) else h2

            handles.append(self._layers[layer - 1].register_forward_hook(hook))
        try:
            yield
        finally:
            for hd in handles:
                hd.remove()

    # -- KV cache ----------------------------------------------------------------------
    def _export_cache(self, cache: Any) -> KVCache:
        keys, values = [], []
        for layer in cache.layers:
            keys.append(layer.keys[0].float().cpu().numpy())
            values.append(layer.values[0].float().cpu().numpy())
        length = cache.get_seq_length()
        return KVCache(
            tuple(keys), tuple(values), self.info.fingerprint, int(length), tuple(range(len(keys)))
        )

    def _import_cache(self, past: KVCache) -> Any:
        cache = DynamicCache(config=self.model.config)
        for i, (kt, vt) in enumerate(self._past_tensors(past)):
            cache.layers[i].update(kt[None], vt[None])
            if hasattr(cache.layers[i], "cumulative_length"):
                cache.layers[i].cumulative_length = past.length  # sliding layers keep only a window
        return cache

    def _past_tensors(self, past: KVCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A cache's (keys, values) per layer as tensors ``[heads, T, head_dim]``, checked."""
        if past.layers != tuple(range(self.info.n_layers)):
            raise ConditioningError(
                f"this backend imports caches of all {self.info.n_layers} layers; got layers {past.layers}"
            )
        cfg = self.model.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        for i, (k, v) in enumerate(zip(past.keys, past.values)):
            k, v = np.asarray(k), np.asarray(v)
            if k.ndim != 3 or k.shape != v.shape or k.shape[0] != heads or k.shape[2] != head_dim:
                raise ConditioningError(
                    f"KV cache layer {i}: expected keys/values of shape [{heads}, T, {head_dim}], "
                    f"got {k.shape} and {v.shape}"
                )
        return [
            (
                torch.as_tensor(np.asarray(k), dtype=self._dtype, device=self.device),
                torch.as_tensor(np.asarray(v), dtype=self._dtype, device=self.device),
            )
            for k, v in zip(past.keys, past.values)
        ]

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
        with torch.inference_mode():
            rows = [self._row(p, c) for p, c in zip(prompts, conds)]
            if len(rows) > 1 and not all(
                self._batchable(
                    _Row([], None, len(r[0]), [], [], [], c.past, 0, False, "last"), max_new_tokens
                )
                for r, c in zip(rows, conds)
            ):  # a cache a padded batch cannot hold exactly: one prompt at a time
                return [
                    self._decode([r], [c], max_new_tokens, sampling, tuple(stop))[0]
                    for r, c in zip(rows, conds)
                ]
            return self._decode(rows, conds, max_new_tokens, sampling, tuple(stop))

    def _row(self, prompt: str, cond: Conditioning) -> tuple[torch.Tensor, list, int]:
        """Input embeddings of one prompt with its conditioning, its injections, its token count."""
        ids_a, ids_b, pre, marked = self._prompt_parts(prompt, cond)
        parts = [self._embed(ids_a)] if ids_a else []
        if pre is not None:
            # at the marker, or before the whole prompt when there is none (as forward's prefix_at=0)
            parts.insert(
                len(parts) if marked else 0,
                torch.as_tensor(pre, dtype=self._dtype, device=self.device),
            )
        if ids_b:
            parts.append(self._embed(ids_b))
        if not parts:
            raise ModelError("empty prompt with no prefix: nothing to condition generation on")
        x = torch.cat(parts)
        injections = self._check_injections(cond.injections, len(x))
        if cond.past is not None:
            self._check_past(cond.past)
        return x, injections, len(ids_a) + len(ids_b)

    def _decode(
        self, rows: list, conds: list[Conditioning], max_new: int, sampling: Sampling, stop: tuple[str, ...]
    ) -> list[Generation]:
        b = len(rows)
        prows = [
            _Row([], None, len(r[0]), [], [], r[1], c.past, 0, False, "last") for r, c in zip(rows, conds)
        ]
        p = self._batch_pass(prows, {}, need_cache=True, embs=[r[0] for r in rows])
        mask, pos, out_h, cache = p.mask, p.pos, p.hidden, p.cache
        passes = p.passes
        gen = torch.Generator(device="cpu").manual_seed(sampling.seed)
        tokens: list[list[int]] = [[] for _ in range(b)]
        done = [""] * b
        texts = [""] * b
        last_pos = pos[:, -1]
        h = out_h[:, -1]
        for step in range(max_new):
            nxt = self._pick(self._logits(h), sampling, gen)
            for i in range(b):
                if done[i]:
                    continue
                tok = int(nxt[i])
                tokens[i].append(tok)
                if tok in self._eos:
                    done[i] = "eos"
                elif stop:
                    texts[i] = self.detokenize(tokens[i])
                    if first_stop(texts[i], stop) >= 0:
                        done[i] = "stop"
            if all(done) or step == max_new - 1:
                break
            feed = torch.tensor(
                [tokens[i][-1] if not done[i] else self._pad_id for i in range(b)], device=self.device
            )
            mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long, device=self.device)], 1)
            last_pos = last_pos + 1
            out = self._core(
                inputs_embeds=self._core.embed_tokens(feed)[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                cache=cache,
                use_cache=True,
                return_dict=True,
            )
            passes += 1
            h = out.last_hidden_state[:, -1]
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

    def _pick(self, logits: torch.Tensor, sampling: Sampling, gen: torch.Generator) -> torch.Tensor:
        if sampling.temperature == 0:
            return logits.argmax(-1)
        lg = logits.float() / sampling.temperature
        if sampling.top_k:
            kth = torch.topk(lg, min(sampling.top_k, lg.shape[-1]), dim=-1).values[:, -1:]
            lg = lg.masked_fill(lg < kth, float("-inf"))
        if sampling.top_p < 1:
            sorted_lg, idx = torch.sort(lg, descending=True, dim=-1)
            probs = sorted_lg.softmax(-1)
            drop = probs.cumsum(-1) - probs > sampling.top_p
            sorted_lg = sorted_lg.masked_fill(drop, float("-inf"))
            lg = torch.full_like(lg, float("-inf")).scatter(-1, idx, sorted_lg)
        return torch.multinomial(lg.softmax(-1).cpu(), 1, generator=gen)[:, 0].to(self.device)


class _Plan:
    """Injections and captures to apply at each layer of one forward call.

    In a batch, ``offsets[j]`` shifts injection j's positions by its row's left
    padding and ``batch_rows[j]`` names its row.
    """

    def __init__(self, injections: list, offsets: list[int], cap_pos: list[int] | None, capture: list[int]):
        self.injections = injections
        self.offsets = offsets
        self.batch_rows = [0] * len(injections)
        self.cap_pos = cap_pos
        self.capture = set(capture)
        self.fired: set[int] = set()

    def layers_touched(self) -> set[int]:
        return {inj[0] for inj in self.injections} | self.capture

    def apply(self, layer: int, h: torch.Tensor, captured: dict[int, torch.Tensor]) -> torch.Tensor:
        todo = [j for j, inj in enumerate(self.injections) if inj[0] == layer]
        # Injections act on the prompt pass only; later decode steps reuse its cache.
        if todo and layer not in self.fired:
            self.fired.add(layer)
            h = h.clone()
            for j in todo:
                _, pos, vec, mode = self.injections[j]
                rows = [p + self.offsets[j] for p in pos]
                v = torch.as_tensor(vec, dtype=h.dtype, device=h.device)
                cur = h[self.batch_rows[j], rows]
                if mode == "replace":
                    new = v.expand_as(cur)
                elif mode == "add":
                    new = cur + v
                elif mode == "mean":
                    new = (cur + v) / 2
                else:
                    new = mode(cur, v)
                    if tuple(new.shape) != tuple(cur.shape):
                        raise ConditioningError(
                            f"injection function returned shape {tuple(new.shape)}, "
                            f"expected {tuple(cur.shape)}"
                        )
                h[self.batch_rows[j], rows] = new.to(h.dtype)
        if layer in self.capture and layer not in captured:
            captured[layer] = h if self.cap_pos is None else h[:, self.cap_pos]
        return h


@dataclass
class _Row:
    """One checked request of a batched pass (the fields of `Backend._check_forward`)."""

    ids: list[int]
    pre: np.ndarray | None
    n: int
    layers: list[int]
    cap_pos: list[int]
    injections: list
    past: KVCache | None
    prefix_at: int
    return_past: bool
    logits: str


@dataclass
class _Pass:
    """A padded batch pass: final-normed states ``[B, width, d]`` and the layout that produced them."""

    hidden: torch.Tensor
    cache: Any
    mask: torch.Tensor
    pos: torch.Tensor
    pads: list[int]
    shared: int
    row_past: list[int]
    past_len: int
    width: int
    passes: int
