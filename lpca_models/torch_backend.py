"""`TorchBackend`: the `Backend` interface on PyTorch + transformers.

Hidden states are read and written with forward hooks on the decoder layers
(layer 0 is handled on the input embeddings directly, since the model is always
driven through ``inputs_embeds``). The generation loop is our own so that prefix
embeddings, injections and imported caches apply identically to batched and
unbatched prompts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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
                out = self._core(
                    inputs_embeds=x, past_key_values=cache, use_cache=cache is not None, return_dict=True
                )
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
            exported = self._export_cache(out.past_key_values) if return_past else None
        return Forward(lg, hidden, exported, n)

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
        cache = DynamicCache(config=self.model.config)
        for i, (k, v) in enumerate(zip(past.keys, past.values)):
            kt = torch.as_tensor(k, dtype=self._dtype, device=self.device)[None]
            vt = torch.as_tensor(v, dtype=self._dtype, device=self.device)[None]
            cache.layers[i].update(kt, vt)
            if hasattr(cache.layers[i], "cumulative_length"):
                cache.layers[i].cumulative_length = past.length  # sliding layers keep only a window
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
        with torch.inference_mode():
            rows = [self._row(p, c) for p, c in zip(prompts, conds)]
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
        lengths = [len(r[0]) for r in rows]
        t = max(lengths)
        d = self.info.hidden_size
        x = torch.zeros((b, t, d), dtype=self._dtype, device=self.device)
        mask = torch.zeros((b, t), dtype=torch.long, device=self.device)
        for i, (emb, _, _) in enumerate(rows):
            x[i, t - len(emb) :] = emb  # left padding
            mask[i, t - len(emb) :] = 1
        offsets = [t - n for n in lengths]
        past = conds[0].past if b == 1 else None
        cache = self._import_cache(past) if past is not None else DynamicCache(config=self.model.config)
        if past is not None:
            mask = torch.cat([torch.ones((1, past.length), dtype=torch.long, device=self.device), mask], 1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -t:]
        plan = _Plan(
            [inj for r in rows for inj in r[1]], [o for o, r in zip(offsets, rows) for _ in r[1]], None, []
        )
        plan.batch_rows = [i for i, r in enumerate(rows) for _ in r[1]]
        captured: dict[int, torch.Tensor] = {}
        x = plan.apply(0, x, captured)
        with self._hooks(plan, captured):
            out = self._core(
                inputs_embeds=x,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
        passes = 1
        gen = torch.Generator(device="cpu").manual_seed(sampling.seed)
        tokens: list[list[int]] = [[] for _ in range(b)]
        done = [""] * b
        texts = [""] * b
        last_pos = pos[:, -1]
        h = out.last_hidden_state[:, -1]
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
                past_key_values=out.past_key_values,
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
            captured[layer] = h[:, self.cap_pos]
        return h
