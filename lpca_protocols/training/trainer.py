"""Train a learned latent codec through a frozen receiver.

The base model is frozen; only the codec (resampler + decoder, and the quantizer for
kind='codebook': VQ / RVQ codebooks by EMA, FSQ projections by gradient) learns. One step:

    sender hidden states (cached dataset) -> resampler -> packet [B, k, m]
        (codebook: straight-through VQ / RVQ / FSQ, vector-quantize-pytorch, `quantizers.py`)
    -> decoder -> k vectors: prefix embeddings at the receiver prompt's marker, or (inject_layer l)
       zero placeholders there whose residual stream after block l a forward hook replaces / adds to
    -> frozen receiver forward (inputs_embeds) -> cross-entropy of the teacher's answer tokens

plus the optional terms of `ObjectiveConfig` (teacher KL, InfoNCE, anchor, reconstruction),
each one weight (0 = off). When every episode's receiver prompt has the same text before the marker
(true of the built-in prompts), that part's KV cache is computed once and shared.

Everything is a function of the config's seed (initialization, batch order, k-means init,
dead-code resampling through the saved RNG state), so a run killed at any point and
restarted with the same command continues from its last `train_state.pt` to the same codec.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_envs.errors import LPCAError
from lpca_protocols.channels._codec_nets import CodecSpec, save_checkpoint, torch_net
from lpca_protocols.training import dataset as ds
from lpca_protocols.training.config import TrainConfig, parse_config
from lpca_protocols.training.metrics import codebook_usage, slot_usage
from lpca_protocols.training.quantizers import make_quantizer


class TrainError(LPCAError, RuntimeError):
    """A training run cannot start or resume (wrong backend, another run's directory...)."""


@dataclass
class TrainResult:
    checkpoint: Path | None
    """The final codec directory (None when stopped early by `stop_after`)."""
    step: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0


def train_codec(
    config: TrainConfig | dict[str, Any],
    *,
    agent: Any = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Run (or resume) the training run `config`; returns where its final codec checkpoint is."""
    import torch

    cfg = parse_config(config)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, agent, progress, stop_after)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, agent: Any, progress: bool, stop_after: int | None) -> TrainResult:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _claim_run_dir(out, cfg)
    if agent is None:
        import lpca_models
        from lpca_models.agents import LMAgent

        agent = LMAgent(lpca_models.load(cfg.model, backend="torch"))
    backend = agent.backend
    if getattr(backend.info, "framework", None) != "torch" or not hasattr(backend, "model"):
        raise TrainError("codec training needs a torch backend (gradients through the frozen receiver)")
    n_layers = backend.info.n_layers
    if not -n_layers - 1 <= cfg.layer <= n_layers:
        raise TrainError(f"layer must be in 0..{n_layers} or -1..-{n_layers + 1}, got {cfg.layer}")
    layer = cfg.layer % (n_layers + 1)
    inject = cfg.codec.inject_layer
    if inject is not None and inject >= n_layers:
        raise TrainError(
            f"codec.inject_layer must be in 0..{n_layers - 1} for {backend.info.name} "
            f"({n_layers} blocks; l = after block l, 0 = embedding output), got {inject}"
        )
    train_data, eval_data = _datasets(cfg, layer, agent)
    d = backend.info.hidden_size
    spec = CodecSpec(
        kind=cfg.codec.kind,
        k=cfg.codec.k,
        m=cfg.codec.m,
        d_src=train_data.arrays["hidden"].shape[-1],
        d_out=d,
        source_layer=layer,
        tail=cfg.tail,
        width=cfg.codec.width,
        heads=cfg.codec.heads,
        codebook_size=cfg.codec.alphabet if cfg.codec.kind == "codebook" else 0,
        bounded=cfg.codec.bounded,
        quantizer=cfg.codec.quantizer,
        rvq_levels=cfg.codec.rvq_levels,
        fsq_levels=cfg.codec.fsq_levels,
        inject_layer=inject,
        inject_mode=cfg.codec.inject_mode,
        positions=cfg.codec.positions,
    )
    run = _Run(cfg, spec, backend, train_data, eval_data)
    state_file = out / "train_state.pt"
    start = 0
    if state_file.exists():
        start = run.load_state(state_file)
    history = run.history
    bar = _progress(progress, cfg.optim.steps, start)
    step = start
    try:
        for step in range(start + 1, cfg.optim.steps + 1):
            logs = run.step(step)
            if bar is not None:
                bar[0].update(bar[1], completed=step, loss=logs["loss"], ev=run.last_eval)
            if step % cfg.optim.eval_every == 0 or step == cfg.optim.steps:
                ev = run.evaluate()
                ev.update(step=step, train_loss=logs["loss"], wall_s=time.perf_counter() - t0)
                history.append(ev)
                with (out / "history.jsonl").open("a") as fh:
                    fh.write(json.dumps(ev) + "\n")
                run.last_eval = f"eval exact {ev['exact']:.0%} (shuffle {ev['exact_shuffle']:.0%})"
            if step % cfg.optim.checkpoint_every == 0 or step == cfg.optim.steps:
                run.save_state(state_file, step)
                run.save(out / "checkpoints" / f"step-{step:06d}", step)
            if stop_after is not None and step >= stop_after:
                run.save_state(state_file, step)
                return TrainResult(None, step, time.perf_counter() - t0, history, start)
    finally:
        if bar is not None:
            bar[0].stop()
    final = run.save(out / "codec", step)
    return TrainResult(final, step, time.perf_counter() - t0, history, start)


class _Run:
    """The trainable codec, its frozen receiver and the cached data, as torch tensors."""

    def __init__(self, cfg: TrainConfig, spec: CodecSpec, backend: Any, train: Any, evald: Any) -> None:
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.cfg, self.spec, self.backend = cfg, spec, backend
        self.core = backend.model.model
        for p in backend.model.parameters():
            p.requires_grad_(False)
        backend.model.eval()
        self.train = {k: torch.from_numpy(v) for k, v in train.arrays.items()}
        self.eval = {k: torch.from_numpy(v) for k, v in evald.arrays.items()}
        torch.manual_seed(cfg.seed)
        self.net = torch_net(spec)
        emb = self.core.embed_tokens.weight.detach()
        with torch.no_grad():
            hid, hl = self.train["hidden"], self.train["hidden_len"]
            real = hid[torch.arange(hid.shape[1])[None] < hl[:, None]]  # [positions, d]
            self.net.enc.mu.copy_(real.mean(0))
            self.net.enc.sd.copy_(real.std(0).clamp(min=1e-3))
            table = backend._embed(list(range(backend.info.vocab_size))).float()
            if spec.bounded:
                target = table if not spec.inject_layer else self._residual_sample(spec.inject_layer)
                self.net.dec.scale.copy_(3 * target.std(0).clamp(min=1e-4))
        self.table_n = F.normalize(table, dim=-1) if cfg.objective.anchor else None
        self.dtype = emb.dtype
        self.quant = make_quantizer(spec, cfg.objective.commitment) if spec.kind == "codebook" else None
        self.recon = torch.nn.Linear(spec.k * spec.m, spec.d_src) if cfg.objective.reconstruction else None
        params = list(self.net.parameters()) + (list(self.recon.parameters()) if self.recon else [])
        params += self.quant.parameters() if self.quant is not None else []
        self.opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.history: list[dict[str, Any]] = []
        self.quantizing = False
        self.last_eval = ""
        self.shared = self._shared_before()

    # -- the receiver --------------------------------------------------------------------
    def _residual_sample(self, layer: int) -> Any:
        """The receiver's residual stream after block `layer` over a few training prompts [P, d]
        (the scale a mid-layer injection's vectors start at; position 0 is skipped: attention sinks)."""
        torch, d = self.torch, self.train
        rows = []
        with torch.no_grad():
            for i in range(min(8, len(d["seeds"]))):
                bl, al = int(d["before_len"][i]), int(d["after_len"][i])
                ids = torch.cat([d["before"][i, :bl], d["after"][i, :al]])
                out = self.core(input_ids=ids[None], output_hidden_states=True, return_dict=True)
                rows.append(out.hidden_states[layer][0, 1:].float())
        return torch.cat(rows)

    def _shared_before(self) -> Any:
        """KV cache of the text before the marker when every episode shares it, else None."""
        torch = self.torch
        rows = set()
        for data in (self.train, self.eval):
            for b, n in zip(data["before"], data["before_len"]):
                rows.add(tuple(b[: int(n)].tolist()))
        if len(rows) != 1:
            return None
        ids = torch.tensor(next(iter(rows)))
        with torch.no_grad():
            out = self.core(inputs_embeds=self.core.embed_tokens(ids)[None], use_cache=True, return_dict=True)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return len(ids), kv

    def answer_logits(self, prefix: Any, data: dict[str, Any], idx: Any) -> tuple[Any, Any, Any]:
        """Receiver logits at the target positions [B, G, V], targets [B, G], mask [B, G].

        `prefix` [B, k, d] are the decoded vectors: prefix embeddings at the marker, or (the spec's
        inject_layer) the states its injection puts at k zero placeholders there.
        """
        torch = self.torch
        emb = self.core.embed_tokens
        k = prefix.shape[1]
        inject = self.spec.inject_layer
        slots = torch.zeros_like(prefix) if inject is not None else prefix
        parts, starts, at = [], [], []
        use_cache = self.shared is not None
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

            plen, kv = self.shared
            cache = DynamicCache(config=self.backend.model.config)
            for li, (kk, vv) in enumerate(kv):
                cache.layers[li].update(kk.expand(b, *kk.shape[1:]), vv.expand(b, *vv.shape[1:]))
            kwargs = {
                "past_key_values": cache,
                "use_cache": True,
                "position_ids": (plen + torch.arange(t))[None].expand(b, t),
            }
            mask = torch.cat([torch.ones((b, plen), dtype=torch.long), mask], 1)
        with self._injection(prefix, at) as put:
            x = put(0, x)
            h = self.core(inputs_embeds=x, attention_mask=mask, return_dict=True, **kwargs).last_hidden_state
        g = int(data["target_len"][idx].max())
        tgt = data["target"][idx, :g]
        tmask = torch.arange(g)[None] < data["target_len"][idx][:, None]
        pos = (torch.tensor(starts)[:, None] + torch.arange(g)[None]).clamp(max=t - 1)
        hs = h[torch.arange(b)[:, None], pos]
        return self.backend._logits(hs).float(), tgt, tmask

    @contextlib.contextmanager
    def _injection(self, vectors: Any, at: list[int]) -> Iterator[Any]:
        """`put(layer, h)`: h with `vectors` [B, k, d] combined in at rows `at[b]` .. + k when `layer`
        is the spec's inject_layer (differentiably; a forward hook applies it after that block)."""
        torch, spec = self.torch, self.spec
        cols = torch.tensor(at)[:, None] + torch.arange(vectors.shape[1])[None]
        rows = torch.arange(len(at))[:, None].expand_as(cols)

        def put(layer: int, h: Any) -> Any:
            if layer != spec.inject_layer:
                return h
            v = vectors.to(h.dtype)
            return h.index_put((rows, cols), v if spec.inject_mode == "replace" else h[rows, cols] + v)

        handle = None
        if spec.inject_layer:

            def hook(_mod: Any, _args: Any, out: Any) -> Any:
                h = out[0] if isinstance(out, tuple) else out
                h2 = put(spec.inject_layer, h)
                return (h2, *out[1:]) if isinstance(out, tuple) else h2

            handle = self.backend._layers[spec.inject_layer - 1].register_forward_hook(hook)
        try:
            yield put
        finally:
            if handle is not None:
                handle.remove()

    # -- codec ---------------------------------------------------------------------------
    def packets(self, data: dict[str, Any], idx: Any) -> Any:
        torch = self.torch
        h = data["hidden"][idx]
        hm = torch.arange(h.shape[1])[None] < data["hidden_len"][idx][:, None]
        return self.net.encode(h, hm)

    def step(self, step: int) -> dict[str, float]:
        torch, F, o = self.torch, self.F, self.cfg.objective
        idx = self._batch(step)
        self.net.train()
        packet = self.packets(self.train, idx)
        loss = torch.zeros(())
        logs: dict[str, float] = {}
        self.quantizing = self.quant is not None and step > self.cfg.codec.quantize_after
        if self.quantizing:
            self.quant.module.train()
            if not self.quant.initted:
                self._init_codebook()
            if self.cfg.codec.quantize_after and self.cfg.codec.freeze_encoder:
                self.net.enc.requires_grad_(False)
            packet_in, aux = self.quant(packet)
            loss = loss + aux
            logs["commit"] = float(aux.detach())
        else:
            packet_in = packet
        prefix = self.net.decode(packet_in)
        if o.answer_ce or o.teacher_kl:
            logits, tgt, tmask = self.answer_logits(prefix, self.train, idx)
        if o.answer_ce:
            ce = F.cross_entropy(logits[tmask], tgt[tmask])
            loss = loss + o.answer_ce * ce
            logs["ce"] = float(ce.detach())
        if o.teacher_kl:
            kl = self._teacher_kl(logits, tmask, self.train, idx)
            loss = loss + o.teacher_kl * kl
            logs["kl"] = float(kl.detach())
        if o.infonce:
            loss = loss + o.infonce * self._infonce(packet, idx)
        if o.anchor:
            cos = F.normalize(prefix.reshape(-1, prefix.shape[-1]), dim=-1) @ self.table_n.T
            loss = loss + o.anchor * (1 - cos.max(-1).values).mean()
        if self.recon is not None:
            h = self.train["hidden"][idx, self.train["hidden_len"][idx] - 1]
            want = F.layer_norm(h, (h.shape[-1],))
            loss = loss + o.reconstruction * F.mse_loss(self.recon(packet.flatten(1)), want)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        logs["loss"] = float(loss.detach())
        return logs

    def _init_codebook(self) -> None:
        """k-means init of each slot's codebook(s) on the packets of (up to 2048) training episodes.

        vector-quantize-pytorch would k-means its first batch only; a batch rarely holds every
        message, and codes for missing ones start far from where the packets are.
        """
        torch = self.torch
        n = min(len(self.train["seeds"]), 2048)
        with torch.no_grad():
            self.net.eval()
            p = torch.cat(
                [self.packets(self.train, torch.arange(i, min(i + 64, n))) for i in range(0, n, 64)]
            )
            self.net.train()
            self.quant.init(p, torch.Generator().manual_seed(self.cfg.seed))

    def _teacher_kl(self, logits: Any, tmask: Any, data: dict[str, Any], idx: Any) -> Any:
        """Mean over answer positions of KL(teacher || receiver), the teacher renormalized over its
        stored top tokens (the receiver's mass outside them only raises the loss)."""
        F = self.F
        g = logits.shape[1]
        t_lp = F.log_softmax(data["teacher_logp"][idx, :g].float(), -1)  # [B, G, TOPK]
        s_lp = F.log_softmax(logits, -1).gather(-1, data["teacher_ids"][idx, :g])
        return (t_lp.exp() * (t_lp - s_lp)).sum(-1)[tmask].mean()

    def _infonce(self, packet: Any, idx: Any) -> Any:
        """Supervised InfoNCE over the batch: a packet's positives are the packets of episodes with
        the same teacher answer, its negatives every other packet (rows without a positive skip)."""
        torch, F = self.torch, self.F
        tgt = self.train["target"][idx]
        same = (tgt[:, None] == tgt[None]).all(-1)
        eye = torch.eye(len(idx), dtype=torch.bool)
        z = F.normalize(packet.flatten(1), dim=-1)
        sim = (z @ z.T / self.cfg.objective.infonce_temperature).masked_fill(eye, float("-inf"))
        pos = same & ~eye
        rows = pos.any(1)
        if not rows.any():
            return sim.new_zeros(())
        num = torch.logsumexp(sim.masked_fill(~pos, float("-inf")), 1)
        return (torch.logsumexp(sim, 1) - num)[rows].mean()

    def _batch(self, step: int) -> Any:
        torch = self.torch
        n, b = len(self.train["seeds"]), self.cfg.optim.batch_size
        per = max(1, n // b)
        epoch, j = divmod(step - 1, per)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)[j * b : (j + 1) * b]

    # -- evaluation ----------------------------------------------------------------------
    def eval_packets(self) -> Any:
        """Every eval episode's packet as the channel would send it (quantized / serialized)."""
        torch = self.torch
        n = len(self.eval["seeds"])
        with torch.no_grad():
            self.net.eval()
            p = torch.cat([self.packets(self.eval, torch.arange(i, min(i + 64, n))) for i in range(0, n, 64)])
            if self.quantizing:
                self.net.load_quantizer(self.quant.export())
                return self.net.nearest(p)
            if self.quant is not None:  # still in the continuous warm-up
                return p
            from lpca_protocols import codecs

            ser = codecs.get(self.cfg.codec.serializer)
            back = [ser.decode(ser.encode(a), a.shape) for a in p.numpy()]
            return torch.from_numpy(np.stack(back))

    def evaluate(self) -> dict[str, Any]:
        """Teacher-forced exact match on held-out seeds (= greedy success) for the packet and controls."""
        torch = self.torch
        packets = self.eval_packets()
        n = len(self.eval["seeds"])
        variants = {"": packets, "_shuffle": torch.roll(packets, 1, 0), "_null": torch.zeros_like(packets)}
        out: dict[str, Any] = {}
        with torch.no_grad():
            for name, pk in variants.items():
                losses, exact, kls = [], [], []
                for i in range(0, n, self.cfg.optim.batch_size):
                    idx = torch.arange(i, min(i + self.cfg.optim.batch_size, n))
                    rows = self.net.rows(pk[idx]) if self.quantizing else pk[idx]
                    logits, tgt, tmask = self.answer_logits(self.net.decode(rows), self.eval, idx)
                    losses.append(float(self.F.cross_entropy(logits[tmask], tgt[tmask])) * len(idx))
                    ok = ((logits.argmax(-1) == tgt) | ~tmask).all(-1)
                    exact.extend(ok.tolist())
                    if self.cfg.objective.teacher_kl:
                        kls.append(float(self._teacher_kl(logits, tmask, self.eval, idx)) * len(idx))
                out["loss" + name] = sum(losses) / n
                out["exact" + name] = sum(exact) / n
                if kls:
                    out["kl" + name] = sum(kls) / n
        if self.quantizing:  # symbol statistics: all symbols, then per position in the message
            sym, size = packets.numpy(), self.spec.codebook_size
            out["codebook"] = codebook_usage(sym.reshape(-1), size).as_dict()
            out["codebook_slots"] = [u.as_dict() for u in slot_usage(sym, size)]
        return out

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: Path, step: int) -> Path:
        if self.quant is not None:
            self.net.load_quantizer(self.quant.export())
        meta = {
            "step": step,
            "config": self.cfg.model_dump(),
            "eval": self.history[-1] if self.history else None,
        }
        info = self.backend.info
        return save_checkpoint(path, self.spec, self.net.weights(), info.name, info.fingerprint, meta)

    def save_state(self, path: Path, step: int) -> None:
        torch = self.torch
        state = {
            "step": step,
            "net": self.net.state_dict(),
            "vq": self.quant.module.state_dict() if self.quant is not None else {},
            "recon": self.recon.state_dict() if self.recon is not None else {},
            "opt": self.opt.state_dict(),
            "rng": torch.get_rng_state(),
            "history": json.dumps(self.history),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def load_state(self, path: Path) -> int:
        torch = self.torch
        try:
            state = torch.load(path, weights_only=True)
        except Exception as e:
            raise TrainError(f"{path} is unreadable ({e}); delete it to restart the run from scratch") from e
        self.net.load_state_dict(state["net"])
        if self.quant is not None:
            self.quant.module.load_state_dict(state["vq"])
        if self.recon is not None:
            self.recon.load_state_dict(state["recon"])
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        self.history[:] = json.loads(state["history"])
        return int(state["step"])


def _datasets(cfg: TrainConfig, layer: int, agent: Any) -> tuple[Any, Any]:
    root = Path(cfg.data_dir) if cfg.data_dir else Path(cfg.out) / "data"
    out = []
    for seed, n in ((cfg.train_seed, cfg.train_episodes), (cfg.eval_seed, cfg.eval_episodes)):
        spec = ds.DatasetSpec(
            cfg.model, cfg.env, cfg.level, seed, n, layer, cfg.tail, cfg.teacher, cfg.shard_size
        )
        key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
        path = root / f"{cfg.env.replace('/', '_')}-L{cfg.level}-{seed}-{n}-{key}"
        ds.collect(spec, path, agent)
        data = ds.load(path)
        if data.fingerprint != agent.backend.info.fingerprint:
            raise TrainError(f"dataset {path} was collected with another model")
        out.append(data)
    return out[0], out[1]


def _claim_run_dir(out: Path, cfg: TrainConfig) -> None:
    f = out / "config.json"
    want = cfg.model_dump()
    if f.exists():
        have = json.loads(f.read_text())
        with contextlib.suppress(LPCAError):  # keys added since that run was started take their defaults
            have = json.loads(json.dumps(parse_config(have).model_dump()))
        if have != json.loads(json.dumps(want)):
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise TrainError(
                f"{out} holds another training run (config differs in {diff}); use another --out"
            )
        return
    f.write_text(json.dumps(want, indent=2))


def _progress(enabled: bool, total: int, start: int) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("train codec"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ev]}"),
        TimeRemainingColumn(),
    )
    task = bar.add_task("train", total=total, completed=start, loss=math.nan, ev="")
    bar.start()
    return bar, task
