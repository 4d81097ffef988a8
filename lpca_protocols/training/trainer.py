"""Train a learned latent codec through a frozen receiver.

The base model is frozen; only the codec (resampler + decoder, and the quantizer for
kind='codebook': VQ / RVQ codebooks by EMA, FSQ projections by gradient) learns. One step:

    sender hidden states (cached dataset) -> resampler -> packet [B, k, m]
        (codebook: straight-through VQ / RVQ / FSQ, vector-quantize-pytorch, `quantizers.py`)
    -> decoder -> k vectors: prefix embeddings at the receiver prompt's marker, or (inject_layer l)
       zero placeholders there whose residual stream after block l a forward hook replaces / adds to
    -> frozen receiver forward (inputs_embeds) -> cross-entropy of the teacher's answer tokens

plus the optional terms of `ObjectiveConfig` (teacher KL, InfoNCE, answer probe, anchor, reconstruction),
each one weight (0 = off). When every episode's receiver prompt has the same text before the marker
(true of the built-in prompts), that part's KV cache is computed once and shared.

The receiver's forward is `receiver.py`, the teacher-KL and InfoNCE terms `objectives.py`, the
run directory, its datasets and the progress bar `rundir.py`.

Everything is a function of the config's seed (initialization, batch order, k-means init,
dead-code resampling through the saved RNG state), so a run killed at any point and
restarted with the same command continues from its last `train_state.pt` to the same codec.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_envs.errors import LPCAError
from lpca_protocols.packet_codec import CodecSpec, make_quantizer, save_checkpoint, torch_net
from lpca_protocols.training.config import TrainConfig, is_bridge, parse_config
from lpca_protocols.training.metrics import codebook_usage, slot_usage
from lpca_protocols.training.objectives import answer_probe, infonce, teacher_kl
from lpca_protocols.training.receiver import Receiver
from lpca_protocols.training.rundir import claim_run_dir, load_datasets, progress_bar


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
    receiver: Any = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Run (or resume) the training run `config`; returns where its final codec checkpoint is.

    `agent` is the sender's loaded LMAgent (else `config.model` is loaded); for a bridge
    (`config.receiver` another model) `receiver` is the receiver's (else it is loaded).
    """
    import torch

    cfg = parse_config(config)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, agent, receiver, progress, stop_after)
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: TrainConfig, agent: Any, receiver: Any, progress: bool, stop_after: int | None
) -> TrainResult:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    claim_run_dir(out, cfg, TrainError)
    import lpca_models
    from lpca_models.agents import LMAgent

    if agent is None:
        agent = LMAgent(lpca_models.load(cfg.model, backend="torch"))
    if not is_bridge(cfg):
        receiver = None
    elif receiver is None:
        receiver = LMAgent(lpca_models.load(cfg.receiver, backend="torch"))
    if receiver is not None and receiver.backend.info.fingerprint == agent.backend.info.fingerprint:
        raise TrainError(
            f"receiver {cfg.receiver!r} is the same model as the sender {cfg.model!r}: train a codec "
            "(`lpca train codec`), not a bridge"
        )
    backend = (receiver or agent).backend  # the frozen model the gradients flow through
    if getattr(backend.info, "framework", None) != "torch" or not hasattr(backend, "model"):
        raise TrainError("codec training needs a torch backend (gradients through the frozen receiver)")
    n_layers = agent.backend.info.n_layers
    if not -n_layers - 1 <= cfg.layer <= n_layers:
        raise TrainError(f"layer must be in 0..{n_layers} or -1..-{n_layers + 1}, got {cfg.layer}")
    layer = cfg.layer % (n_layers + 1)
    inject = cfg.codec.inject_layer
    r_layers = backend.info.n_layers
    if inject is not None and inject >= r_layers:
        raise TrainError(
            f"codec.inject_layer must be in 0..{r_layers - 1} for {backend.info.name} "
            f"({r_layers} blocks; l = after block l, 0 = embedding output), got {inject}"
        )
    kv_layers, kv_targets = kv_plan(cfg, agent.backend.info.n_layers, r_layers)
    train_data, eval_data = _datasets(cfg, layer, agent, receiver, kv_layers)
    d = backend.info.hidden_size
    if cfg.codec.kind == "kv":
        d_src = agent.backend.info.hidden_size
        spec = CodecSpec(
            kind="kv",
            k=len(kv_layers),
            m=d_src,
            d_src=d_src,
            d_out=d,
            source_layer=kv_layers[0],
            tail=cfg.tail,
            width=cfg.codec.width,
            heads=1,
            bounded=False,
            kv_layers=kv_layers,
            kv_targets=kv_targets,
            primer=cfg.primer,
        )
    else:
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
            recolour=cfg.codec.recolour,
            primer=cfg.primer,
        )
    run = _Run(cfg, spec, backend, train_data, eval_data, sender=agent.backend.info)
    state_file = out / "train_state.pt"
    start = 0
    if state_file.exists():
        start = run.load_state(state_file)
    history = run.history
    bar = progress_bar(progress, cfg.optim.steps, start)
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

    def __init__(
        self, cfg: TrainConfig, spec: CodecSpec, backend: Any, train: Any, evald: Any, sender: Any = None
    ) -> None:
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.cfg, self.spec, self.backend = cfg, spec, backend
        self.sender = sender if sender is not None else backend.info
        for p in backend.model.parameters():
            p.requires_grad_(False)
        backend.model.eval()
        self.receiver = Receiver(backend, spec)
        self.train = {k: torch.from_numpy(v) for k, v in train.arrays.items()}
        self.eval = {k: torch.from_numpy(v) for k, v in evald.arrays.items()}
        torch.manual_seed(cfg.seed)
        self.net = torch_net(spec)
        with torch.no_grad():
            hid, hl = self.train["hidden"], self.train["hidden_len"]
            real = hid[torch.arange(hid.shape[1])[None] < hl[:, None]]  # [positions, d]
            if (
                spec.kind == "kv"
            ):  # per fused layer: the states of layer i sit side by side [positions, n x d]
                real = real.view(-1, spec.k, spec.d_src)
                if cfg.codec.whiten:
                    self.net.kv.mu.copy_(real.mean(0))
                    self.net.kv.sd.copy_(real.std(0).clamp(min=1e-3))
            elif cfg.codec.whiten:  # the normalizer's sender half (else mu = 0, sd = 1: raw states)
                self.net.enc.mu.copy_(real.mean(0))
                self.net.enc.sd.copy_(real.std(0).clamp(min=1e-3))
            table = torch.from_numpy(backend.input_embeddings())
            inject = spec.inject_layer
            if spec.kind == "kv":
                inject = None
            target = table if not inject else self.receiver.residual_sample(self.train, inject)
            if spec.bounded:
                self.net.dec.scale.copy_(3 * target.std(0).clamp(min=1e-4))
            if spec.recolour:  # the normalizer's receiver half
                self.net.dec.shift.copy_(target.mean(0))
        self.table = table
        self.table_n = F.normalize(table, dim=-1)
        self.embed_norm = float(table.norm(dim=-1).mean())
        self.quant = make_quantizer(spec, cfg.objective.commitment) if spec.kind == "codebook" else None
        self.recon = torch.nn.Linear(spec.k * spec.m, spec.d_src) if cfg.objective.reconstruction else None
        params = list(self.net.parameters()) + (list(self.recon.parameters()) if self.recon else [])
        self.probe = None
        if cfg.objective.answer_probe:  # training-only read-out; never part of the checkpoint
            g = self.train["target"].shape[1]
            self.probe = torch.nn.Linear(spec.k * spec.m, g * table.shape[1])
            self.probe_table = table
            params += list(self.probe.parameters())
        params += self.quant.parameters() if self.quant is not None else []
        self.opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.history: list[dict[str, Any]] = []
        self.quantizing = False
        self.last_eval = ""
        self.shared = self.receiver.shared_before(self.train, self.eval)

    def answer_logits(self, prefix: Any, data: dict[str, Any], idx: Any) -> tuple[Any, Any, Any]:
        """`Receiver.answer_logits` with this run's shared prompt cache (`shared`; None: none)."""
        return self.receiver.answer_logits(prefix, data, idx, self.shared)

    # -- codec ---------------------------------------------------------------------------
    def packets(self, data: dict[str, Any], idx: Any) -> Any:
        torch = self.torch
        h = data["hidden"][idx]
        if self.spec.kind == "kv":  # the packet is the states themselves: [B, n, T, d_src]
            b, t, _ = h.shape
            return h.view(b, t, self.spec.k, self.spec.d_src).transpose(1, 2)
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
            kl = teacher_kl(logits, tmask, self.train, idx)
            loss = loss + o.teacher_kl * kl
            logs["kl"] = float(kl.detach())
        if o.infonce:
            loss = loss + o.infonce * infonce(packet, self.train, idx, o.infonce_temperature)
        if o.anchor:
            flat = prefix.reshape(-1, prefix.shape[-1])
            cos = F.normalize(flat, dim=-1) @ self.table_n.T
            if o.anchor_metric == "cosine":
                loss = loss + o.anchor * (1 - cos.max(-1).values).mean()
            else:  # mse to the nearest embedding (by cosine): the scale-mismatched ablation
                near = self.table[cos.argmax(-1)]
                loss = loss + o.anchor * F.mse_loss(flat, near)
        if self.probe is not None:
            probe = answer_probe(self.probe, self.probe_table, packet, self.train, idx)
            loss = loss + o.answer_probe * probe
            logs["probe"] = float(probe.detach())
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
        """Teacher-forced exact match on held-out seeds (= greedy success) for the packet and controls,
        and the bridge diagnostics:

        - ``collapse_kl``: mean KL between the receiver's answer distributions under the real packet
          and under another episode's (per answer token). Near 0 the receiver ignores the packet
          (posterior collapse), whatever its loss;
        - ``first_token`` (``_shuffle``): how often the answer's first token (the answer entity) is
          the receiver's top-1 with the real (a shuffled) packet: the entity's transfer rate;
        - ``norm_ratio``: the decoded vectors' mean norm over the receiver's embeddings' mean norm,
          and ``nearest_cos``: their mean cosine to the nearest real embedding (drift: vectors in
          dead regions of the embedding space have a norm far from 1x or a low cosine).
        """
        torch, F = self.torch, self.F
        packets = self.eval_packets()
        n = len(self.eval["seeds"])
        variants = {"": packets, "_shuffle": torch.roll(packets, 1, 0), "_null": torch.zeros_like(packets)}
        out: dict[str, Any] = {}
        logps: dict[str, list[Any]] = {}
        with torch.no_grad():
            for name, pk in variants.items():
                losses, exact, kls, first = [], [], [], []
                norms, coss = [], []
                for i in range(0, n, self.cfg.optim.batch_size):
                    idx = torch.arange(i, min(i + self.cfg.optim.batch_size, n))
                    rows = self.net.rows(pk[idx]) if self.quantizing else pk[idx]
                    prefix = self.net.decode(rows)
                    logits, tgt, tmask = self.answer_logits(prefix, self.eval, idx)
                    losses.append(float(F.cross_entropy(logits[tmask], tgt[tmask])) * len(idx))
                    ok = ((logits.argmax(-1) == tgt) | ~tmask).all(-1)
                    exact.extend(ok.tolist())
                    first.extend((logits[:, 0].argmax(-1) == tgt[:, 0]).tolist())
                    if name in ("", "_shuffle"):
                        logps.setdefault(name, []).append((F.log_softmax(logits, -1), tmask))
                    if name == "" and self.spec.kind != "kv":  # kv vectors live in the residual stream
                        flat = prefix.reshape(-1, prefix.shape[-1]).float()
                        norms.append(flat.norm(dim=-1))
                        coss.append((F.normalize(flat, dim=-1) @ self.table_n.T).max(-1).values)
                    if self.cfg.objective.teacher_kl:
                        kls.append(float(teacher_kl(logits, tmask, self.eval, idx)) * len(idx))
                out["loss" + name] = sum(losses) / n
                out["exact" + name] = sum(exact) / n
                out["first_token" + name] = sum(first) / n
                if kls:
                    out["kl" + name] = sum(kls) / n
                if norms:
                    out["norm_ratio"] = float(torch.cat(norms).mean()) / max(self.embed_norm, 1e-12)
                    out["nearest_cos"] = float(torch.cat(coss).mean())
        total, count = 0.0, 0
        for (lp, m), (lq, _) in zip(logps[""], logps["_shuffle"]):
            kl = (lp.exp() * (lp - lq)).sum(-1)  # [B, G]
            total += float(kl[m].sum())
            count += int(m.sum())
        out["collapse_kl"] = total / max(count, 1)
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
        info, sender = self.backend.info, self.sender
        return save_checkpoint(
            path,
            self.spec,
            self.net.weights(),
            info.name,
            info.fingerprint,
            meta,
            sender_model=sender.name,
            sender_fingerprint=sender.fingerprint,
        )

    def save_state(self, path: Path, step: int) -> None:
        torch = self.torch
        state = {
            "step": step,
            "net": self.net.state_dict(),
            "vq": self.quant.module.state_dict() if self.quant is not None else {},
            "recon": self.recon.state_dict() if self.recon is not None else {},
            "probe": self.probe.state_dict() if self.probe is not None else {},
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
        if self.probe is not None:
            self.probe.load_state_dict(state.get("probe", {}))
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        self.history[:] = json.loads(state["history"])
        return int(state["step"])


def _datasets(
    cfg: TrainConfig, layer: int, agent: Any, receiver: Any = None, layers: tuple[int, ...] = ()
) -> tuple[Any, Any]:
    """(train, eval) datasets of `cfg` (`rundir.load_datasets`), a wrong model's a `TrainError`."""
    return load_datasets(cfg, layer, agent, TrainError, receiver, layers)


def kv_plan(
    cfg: TrainConfig, sender_layers: int, receiver_layers: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A kv bridge's (sender layers, receiver targets): `codec.fuse` receiver layers evenly spaced
    from the embedding output (0: all), each reading the sender layer at the same relative depth.
    ((), ()) for the other kinds."""
    if cfg.codec.kind != "kv":
        return (), ()
    n = cfg.codec.fuse or receiver_layers
    if n > receiver_layers:
        raise TrainError(f"codec.fuse = {n} but the receiver has {receiver_layers} layers to fuse into")
    targets = tuple(sorted({round(i * receiver_layers / n) for i in range(n)}))
    layers = tuple(round(t * sender_layers / receiver_layers) for t in targets)
    return layers, targets
