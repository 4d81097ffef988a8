"""Train a learned latent codec through a frozen receiver.

The base model is frozen; only the codec (resampler + decoder, and the VQ codebook by
EMA for kind='codebook') learns. One step:

    sender hidden states (cached dataset) -> resampler -> packet [B, k, m]
        (codebook: straight-through VQ, vector-quantize-pytorch, EMA + k-means init)
    -> decoder -> k prefix embeddings at the receiver prompt's marker
    -> frozen receiver forward (inputs_embeds) -> cross-entropy of the teacher's answer tokens

plus the optional terms of `ObjectiveConfig` (InfoNCE, anchor, reconstruction), each one
weight (0 = off). When every episode's receiver prompt has the same text before the marker
(true of the built-in prompts), that part's KV cache is computed once and shared.

Everything is a function of the config's seed (initialization, batch order, k-means init,
dead-code resampling through the saved RNG state), so a run killed at any point and
restarted with the same command continues from its last `train_state.pt` to the same codec.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_envs.errors import LPCAError
from lpca_protocols.channels._codec_nets import CodecSpec, save_checkpoint, torch_net
from lpca_protocols.training import dataset as ds
from lpca_protocols.training.config import TrainConfig, parse_config
from lpca_protocols.training.metrics import codebook_usage


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
        codebook_size=cfg.codec.codebook_size if cfg.codec.kind == "codebook" else 0,
        bounded=cfg.codec.bounded,
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
                self.net.dec.scale.copy_(3 * table.std(0).clamp(min=1e-4))
        self.table_n = F.normalize(table, dim=-1) if cfg.objective.anchor else None
        self.dtype = emb.dtype
        self.vq = None
        if spec.kind == "codebook":
            import vector_quantize_pytorch as vqp

            self.vq = vqp.VectorQuantize(  # one codebook per slot: heads = slots
                dim=spec.k * spec.m,
                codebook_dim=spec.m,
                heads=spec.k,
                separate_codebook_per_head=True,
                codebook_size=spec.codebook_size,
                decay=0.95,
                rotation_trick=False,
                kmeans_init=True,
                kmeans_iters=10,
                commitment_weight=cfg.objective.commitment,
            )
        self.recon = torch.nn.Linear(spec.k * spec.m, spec.d_src) if cfg.objective.reconstruction else None
        params = list(self.net.parameters()) + (list(self.recon.parameters()) if self.recon else [])
        self.opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.history: list[dict[str, Any]] = []
        self.quantizing = False
        self.last_eval = ""
        self.shared = self._shared_before()

    # -- the receiver --------------------------------------------------------------------
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
        """Receiver logits at the target positions [B, G, V], targets [B, G], mask [B, G]."""
        torch = self.torch
        emb = self.core.embed_tokens
        k = prefix.shape[1]
        parts, starts = [], []
        use_cache = self.shared is not None
        for r, i in enumerate(idx.tolist()):
            bl, al, gl = (int(data[n][i]) for n in ("before_len", "after_len", "target_len"))
            seq = [] if use_cache else [emb(data["before"][i, :bl])]
            seq += [prefix[r].to(self.dtype), emb(data["after"][i, :al]), emb(data["target"][i, : gl - 1])]
            parts.append(torch.cat(seq))
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
        h = self.core(inputs_embeds=x, attention_mask=mask, return_dict=True, **kwargs).last_hidden_state
        g = int(data["target_len"][idx].max())
        tgt = data["target"][idx, :g]
        tmask = torch.arange(g)[None] < data["target_len"][idx][:, None]
        pos = (torch.tensor(starts)[:, None] + torch.arange(g)[None]).clamp(max=t - 1)
        hs = h[torch.arange(b)[:, None], pos]
        return self.backend._logits(hs).float(), tgt, tmask

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
        self.quantizing = self.vq is not None and step > self.cfg.codec.quantize_after
        if self.quantizing:
            self.vq.train()
            if not bool(self.vq._codebook.initted):
                self._init_codebook()
            if self.cfg.codec.quantize_after and self.cfg.codec.freeze_encoder:
                self.net.enc.requires_grad_(False)
            q, _, commit = self.vq(packet.reshape(len(idx), 1, -1))
            loss = loss + commit.sum()
            logs["commit"] = float(commit.sum().detach())
            packet_in = q.view_as(packet)
        else:
            packet_in = packet
        prefix = self.net.decode(packet_in)
        if o.answer_ce:
            logits, tgt, tmask = self.answer_logits(prefix, self.train, idx)
            ce = F.cross_entropy(logits[tmask], tgt[tmask])
            loss = loss + o.answer_ce * ce
            logs["ce"] = float(ce.detach())
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
        """k-means init of each slot's codebook on the packets of (up to 2048) training episodes.

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
            g = torch.Generator().manual_seed(self.cfg.seed)
            cb = torch.stack([_kmeans(p[:, j], self.spec.codebook_size, g) for j in range(self.spec.k)])
            book = self.vq._codebook
            book.embed.copy_(cb)
            book.embed_avg.copy_(cb)
            book.cluster_size.fill_(1.0)
            book.initted.fill_(True)

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
                self.net.codebook.copy_(self.vq.codebook)
                return self.net.nearest(p)
            if self.vq is not None:  # still in the continuous warm-up
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
                losses, exact = [], []
                for i in range(0, n, self.cfg.optim.batch_size):
                    idx = torch.arange(i, min(i + self.cfg.optim.batch_size, n))
                    rows = self.net.rows(pk[idx]) if self.quantizing else pk[idx]
                    logits, tgt, tmask = self.answer_logits(self.net.decode(rows), self.eval, idx)
                    losses.append(float(self.F.cross_entropy(logits[tmask], tgt[tmask])) * len(idx))
                    ok = ((logits.argmax(-1) == tgt) | ~tmask).all(-1)
                    exact.extend(ok.tolist())
                out["loss" + name] = sum(losses) / n
                out["exact" + name] = sum(exact) / n
        if self.quantizing:
            out["codebook"] = codebook_usage(packets.numpy().reshape(-1), self.spec.codebook_size).as_dict()
        return out

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: Path, step: int) -> Path:
        if self.vq is not None:
            with self.torch.no_grad():
                self.net.codebook.copy_(self.vq.codebook)
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
            "vq": self.vq.state_dict() if self.vq is not None else {},
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
        if self.vq is not None:
            self.vq.load_state_dict(state["vq"])
        if self.recon is not None:
            self.recon.load_state_dict(state["recon"])
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        self.history[:] = json.loads(state["history"])
        return int(state["step"])


def _kmeans(x: Any, size: int, g: Any, iters: int = 25) -> Any:
    """Lloyd's k-means of rows `x` [n, m] into `size` centroids, seeded by farthest-point init
    (every well-separated cluster gets a centroid; a random init can merge two for good)."""
    import torch

    c = [x[int(torch.randint(len(x), (1,), generator=g))]]
    dist = torch.cdist(x, c[0][None])[:, 0]
    for _ in range(size - 1):
        c.append(x[int(dist.argmax())])
        dist = torch.minimum(dist, torch.cdist(x, c[-1][None])[:, 0])
    cent = torch.stack(c).clone()
    for _ in range(iters):
        a = torch.cdist(x, cent).argmin(1)
        for j in range(size):
            sel = a == j
            if sel.any():
                cent[j] = x[sel].mean(0)
    return cent


def _datasets(cfg: TrainConfig, layer: int, agent: Any) -> tuple[Any, Any]:
    root = Path(cfg.data_dir) if cfg.data_dir else Path(cfg.out) / "data"
    out = []
    for seed, n in ((cfg.train_seed, cfg.train_episodes), (cfg.eval_seed, cfg.eval_episodes)):
        spec = ds.DatasetSpec(
            cfg.model, cfg.env, cfg.level, seed, n, layer, cfg.tail, "truth", cfg.shard_size
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
