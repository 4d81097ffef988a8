"""Learned latent codecs on a real model: train, then gate against the controls, beside P0/P1/graft.

For each task level and each codec of the grid, this trains a codec through the frozen
SmolLM2 receiver (`lpca_protocols.training.train_codec`), then runs the gate on held-out
seeds (`run_gate`: normal vs shuffle / null / random and P0, one-sided two-proportion
test), and prints one row: success vs bits per episode, each control, and the training
wall-clock and steps. ``--references`` adds P1 (text) and activation-graft (layer 24,
replace) with its shuffled control on the same seeds.

    .venv/bin/python benchmarks/bench_codecs_learned.py --levels 0 --codecs prefix:k=4,m=16 codebook:k=2,K=16

Runs resume: a finished training run is reused (its directory holds the final codec).
Results append to OUT/results.jsonl. Nothing is tuned on the gate's seeds: training uses
seeds 0.., evaluation during training 1_000_000.., the gate 2_000_000...
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import lpca_models
from lpca_models.agents import LMAgent
from lpca_protocols.runner import run
from lpca_protocols.training import run_gate, train_codec


@dataclass
class Bench:
    model: str = "smollm2-135m"
    """Base model (sender and receiver are the same frozen weights)."""
    env: str = "lpca/SecretRelay-v0"
    levels: tuple[int, ...] = (0,)
    layer: int = 24
    """Sender layer the resampler reads (activation grafting works from layer ~24 on SmolLM2)."""
    tail: int = 16
    """Last positions of the sender prompt the resampler reads (the secret sits in them)."""
    train_episodes: int = 256
    eval_episodes: int = 64
    steps: int = 120
    batch_size: int = 8
    lr: float = 3e-3
    gate_episodes: int = 200
    """Episodes per gate row (the gate needs >= 200 to pass)."""
    threads: int = 1
    """torch threads; on a shared 2-core machine 1 thread is ~10x faster than 2 contending."""
    out: str = "runs/bench_codecs_learned"
    codecs: list[str] = field(default_factory=lambda: ["prefix:k=4,m=16"])
    references: bool = False
    infonce: float = 0.0
    """Weight of the supervised InfoNCE term on the packets (0: task loss alone)."""
    anchor: float = 0.0
    """Weight of the anchor term (decoded vectors near the receiver's input embeddings)."""
    inject_layer: int | None = None
    """Continuous codec: write the decoded vectors into the receiver's residual after this block
    instead of reading them as prefix embeddings."""


def codec_config(spec: str) -> dict:
    kind, _, rest = spec.partition(":")
    opts = dict(item.split("=") for item in rest.split(",") if item)
    cfg: dict = {"kind": kind, "k": int(opts.get("k", 4)), "m": int(opts.get("m", 16))}
    if kind == "codebook":
        cfg["codebook_size"] = int(opts.get("K", 16))
        cfg["quantize_after"] = int(opts.get("warmup", 0))
    return cfg


def main(b: Bench) -> None:
    torch.set_num_threads(b.threads)
    out = Path(b.out)
    out.mkdir(parents=True, exist_ok=True)
    agent = LMAgent(lpca_models.load(b.model), max_new_tokens=24)
    rows = []
    for level in b.levels:
        if b.references:
            rows += references(b, agent, level)
        for spec in b.codecs:
            tag = spec.replace(":", "-").replace(",", "-").replace("=", "")
            name = f"L{level}-{tag}-nce{b.infonce:g}-l{b.layer}t{b.tail}"
            if b.anchor:
                name += f"-anchor{b.anchor:g}"
            if b.inject_layer is not None:
                name += f"-inj{b.inject_layer}"
            cfg = {
                "model": b.model,
                "env": b.env,
                "level": level,
                "out": str(out / name),
                "data_dir": str(out / "data"),
                "layer": b.layer,
                "tail": b.tail,
                "train_episodes": b.train_episodes,
                "eval_episodes": b.eval_episodes,
                "threads": b.threads,
                "codec": codec_config(spec)
                | ({} if b.inject_layer is None else {"inject_layer": b.inject_layer}),
                "objective": {"infonce": b.infonce, "anchor": b.anchor},
                "optim": {
                    "steps": b.steps,
                    "batch_size": b.batch_size,
                    "lr": b.lr,
                    "eval_every": max(1, b.steps // 4),
                    "checkpoint_every": max(1, b.steps // 4),
                },
            }
            t = time.perf_counter()
            res = train_codec(cfg, agent=agent)
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            report = run_gate(
                res.checkpoint, env_id=b.env, level=level, agent=agent, episodes=b.gate_episodes
            )
            print(report.table(), flush=True)
            row = {
                "level": level,
                "codec": spec,
                "infonce": b.infonce,
                "bits": report.bits_per_episode,
                "success": report.rate,
                **{r.name: r.rate for r in report.references},
                "p_values": {r.name: r.p_value for r in report.references},
                "passed": report.passed,
                "episodes": report.episodes,
                "train_steps": res.step,
                "train_wall_s": train_s,
                "train_history": res.history,
                "gate_wall_s": time.perf_counter() - t,
            }
            rows.append(row)
            with (out / "results.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    print("\n| level | protocol | bits/episode | success | shuffle | null | random | P0 | gate |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['level']} | {r['codec']} | {r['bits']:.0f} | {r['success']:.1%} | "
            + " | ".join(f"{r[c]:.1%}" if c in r else "-" for c in ("shuffle", "null", "random", "p0"))
            + f" | {'pass' if r.get('passed') else 'FAIL' if 'passed' in r else '-'} |"
        )
    (out / "bench.json").write_text(json.dumps(asdict(b), indent=2))


def references(b: Bench, agent: LMAgent, level: int) -> list[dict]:
    """P1 text and activation-graft (+ shuffle) on the gate's seeds."""
    common = dict(agent=agent, out_dir=None, episodes=b.gate_episodes, level=level, seed=2_000_000)
    out = []
    graft = {"source_layer": 24, "target_layer": 24}
    for label, channel, opts in (
        ("P1 text", "text", {}),
        ("graft L24", "activation-graft", graft),
        ("graft L24 shuffle", "activation-graft", {**graft, "control": "shuffle"}),
    ):
        s = run(b.env, channel, b.model, channel_options=opts, **common).summary
        out.append({"level": level, "codec": label, "bits": s["mean_bits"], "success": s["success_rate"]})
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = Bench()
    p.add_argument("--model", default=d.model)
    p.add_argument("--levels", type=int, nargs="+", default=list(d.levels))
    p.add_argument("--codecs", nargs="*", default=d.codecs)  # none: only --references
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--train-episodes", type=int, default=d.train_episodes)
    p.add_argument("--gate-episodes", type=int, default=d.gate_episodes)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", default=d.out)
    p.add_argument("--references", action="store_true")
    p.add_argument("--infonce", type=float, default=d.infonce)
    p.add_argument("--tail", type=int, default=d.tail)
    p.add_argument("--layer", type=int, default=d.layer)
    p.add_argument("--anchor", type=float, default=d.anchor)
    p.add_argument("--inject-layer", type=int, default=None)
    a = p.parse_args()
    main(
        Bench(
            model=a.model,
            levels=tuple(a.levels),
            codecs=a.codecs,
            steps=a.steps,
            batch_size=a.batch_size,
            lr=a.lr,
            train_episodes=a.train_episodes,
            gate_episodes=a.gate_episodes,
            threads=a.threads,
            out=a.out,
            references=a.references,
            infonce=a.infonce,
            tail=a.tail,
            layer=a.layer,
            anchor=a.anchor,
            inject_layer=a.inject_layer,
        )
    )
