"""The frozen receiver's differentiable forward over cached episodes (torch), for codec training.

The decoded vectors go in as prefix embeddings at the receiver prompt's marker or, with the spec's
``inject_layer``, through a forward hook into the residual stream after that block at k zero
placeholders there; out come the logits at the teacher's answer tokens. When every episode's
receiver prompt has the same text before the marker, `Receiver.shared_before` computes its KV
cache once and `answer_logits` reuses it for every batch.

torch loads on first use (importing this module is light).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lpca_protocols.packet_codec import CodecSpec


class Receiver:
    """A torch backend's frozen model, seen as the receiver of a codec with `spec`."""

    def __init__(self, backend: Any, spec: CodecSpec) -> None:
        self.backend, self.spec = backend, spec
        self.core = backend.core
        self.dtype = self.core.embed_tokens.weight.dtype

    def residual_sample(self, data: dict[str, Any], layer: int) -> Any:
        """The receiver's residual stream after block `layer` over a few training prompts [P, d]
        (the scale a mid-layer injection's vectors start at; position 0 is skipped: attention sinks)."""
        import torch

        rows = []
        with torch.no_grad():
            for i in range(min(8, len(data["seeds"]))):
                bl, al = int(data["before_len"][i]), int(data["after_len"][i])
                ids = torch.cat([data["before"][i, :bl], data["after"][i, :al]])
                out = self.core(input_ids=ids[None], output_hidden_states=True, return_dict=True)
                rows.append(out.hidden_states[layer][0, 1:].float())
        return torch.cat(rows)

    def shared_before(self, *datasets: dict[str, Any]) -> Any:
        """KV cache of the text before the marker when every episode shares it, else None."""
        import torch

        rows = set()
        for data in datasets:
            for b, n in zip(data["before"], data["before_len"]):
                rows.add(tuple(b[: int(n)].tolist()))
        if len(rows) != 1:
            return None
        ids = torch.tensor(next(iter(rows)))
        with torch.no_grad():
            out = self.core(inputs_embeds=self.core.embed_tokens(ids)[None], use_cache=True, return_dict=True)
        kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        return len(ids), kv

    def answer_logits(self, prefix: Any, data: dict[str, Any], idx: Any, shared: Any) -> tuple[Any, Any, Any]:
        """Receiver logits at the target positions [B, G, V], targets [B, G], mask [B, G].

        `prefix` [B, k, d] are the decoded vectors: prefix embeddings at the marker, or (the spec's
        inject_layer) the states its injection puts at k zero placeholders there. `shared` is
        `shared_before`'s cache (None: every episode's full prompt runs).
        """
        import torch

        emb = self.core.embed_tokens
        kv = self.spec.kind == "kv"  # prefix [B, n, T, d]: what each fused layer adds at T placeholders
        k = prefix.shape[2] if kv else prefix.shape[1]
        inject = self.spec.inject_layer
        if kv:
            slots = torch.zeros((prefix.shape[0], k, prefix.shape[-1]), dtype=prefix.dtype)
            by_layer = {t: prefix[:, i] for i, t in enumerate(self.spec.kv_targets)}
            mode = "add"
        else:
            slots = torch.zeros_like(prefix) if inject is not None else prefix
            by_layer = {inject: prefix} if inject is not None else {}
            mode = self.spec.inject_mode
        parts, starts, at = [], [], []
        use_cache = shared is not None
        for r, i in enumerate(idx.tolist()):
            bl, al, gl = (int(data[n][i]) for n in ("before_len", "after_len", "target_len"))
            seq = [] if use_cache else [emb(data["before"][i, :bl])]
            seq += [slots[r].to(self.dtype), emb(data["after"][i, :al]), emb(data["target"][i, : gl - 1])]
            parts.append(torch.cat(seq))
            at.append(0 if use_cache else bl)
            starts.append((0 if use_cache else bl) + k + al - 1)
        lens = [len(p) for p in parts]
        b, t = len(parts), max(lens)
        x = torch.zeros((b, t, prefix.shape[-1]), dtype=self.dtype)
        mask = torch.zeros((b, t), dtype=torch.long)
        for r, p in enumerate(parts):
            x[r, : len(p)] = p
            mask[r, : len(p)] = 1
        kwargs: dict[str, Any] = {}
        if use_cache:
            from transformers import DynamicCache

            plen, kv = shared
            cache = DynamicCache(config=self.backend.model.config)
            for li, (kk, vv) in enumerate(kv):
                cache.layers[li].update(kk.expand(b, *kk.shape[1:]), vv.expand(b, *vv.shape[1:]))
            kwargs = {
                "cache": cache,
                "use_cache": True,
                "position_ids": (plen + torch.arange(t))[None].expand(b, t),
            }
            mask = torch.cat([torch.ones((b, plen), dtype=torch.long), mask], 1)
        with self.injection(by_layer, at, mode) as put:
            x = put(0, x)
            h = self.core(inputs_embeds=x, attention_mask=mask, return_dict=True, **kwargs).last_hidden_state
        g = int(data["target_len"][idx].max())
        tgt = data["target"][idx, :g]
        tmask = torch.arange(g)[None] < data["target_len"][idx][:, None]
        pos = (torch.tensor(starts)[:, None] + torch.arange(g)[None]).clamp(max=t - 1)
        hs = h[torch.arange(b)[:, None], pos]
        return self.backend.head_logits(hs).float(), tgt, tmask

    @contextlib.contextmanager
    def injection(self, by_layer: dict[int, Any], at: list[int], mode: str = "replace") -> Iterator[Any]:
        """`put(layer, h)`: h with `by_layer[layer]` [B, k, d] combined in (``mode``: replace or add) at
        rows `at[b]` .. + k, for each layer of `by_layer` (differentiably; forward hooks apply it after
        each block l >= 1, and `put(0, x)` on the input embeddings)."""
        import torch

        if not by_layer:

            def same(layer: int, h: Any) -> Any:
                return h

            yield same
            return
        k = next(iter(by_layer.values())).shape[1]
        cols = torch.tensor(at)[:, None] + torch.arange(k)[None]
        rows = torch.arange(len(at))[:, None].expand_as(cols)

        def put(layer: int, h: Any) -> Any:
            if layer not in by_layer:
                return h
            v = by_layer[layer].to(h.dtype)
            return h.index_put((rows, cols), v if mode == "replace" else h[rows, cols] + v)

        handles = []
        for layer in by_layer:
            if not layer:
                continue

            def hook(_mod: Any, _args: Any, out: Any, layer: int = layer) -> Any:
                h = out[0] if isinstance(out, tuple) else out
                h2 = put(layer, h)
                return (h2, *out[1:]) if isinstance(out, tuple) else h2

            handles.append(self.backend.blocks[layer - 1].register_forward_hook(hook))
        try:
            yield put
        finally:
            for handle in handles:
                handle.remove()
