"""Learned latent codecs on a real model: train, then gate against the controls, beside P0/P1/graft.

For each task level and each codec of the grid, this trains a codec through the frozen
SmolLM2 receiver (`lpca_protocols.training.train_codec`), then runs the gate on held-out
seeds (`run_gate`: normal vs shuffle / null / random and P0, one-sided two-proportion
test), and prints one row: success vs bits per episode, each control, and the training
wall-clock and steps. ``--references`` adds P1 (text) and activation-graft (layer 24,
replace) with its shuffled control on the same seeds.

    .venv/bin/python benchmarks/bench_codecs_learned.py --levels 0 --codecs prefix:k=4,m=16 codebook:k=2,K=16

A codec spec is ``prefix:k=K,m=M`` or ``codebook:k=K,K=SIZE,warmup=STEPS``, plus ``pos=P`` for P
learned position embeddings of the resampler's inputs (needed for ordered content, e.g. PinRelay).

Rate-success curves: ``--serializers fp16 q8_0 rotq:bits=3`` evaluates each trained continuous
codec through every serializer (one training, several bit rates), and ``--gate-episodes 0``
replaces the gate by a cheaper curve point per codec and serializer: normal vs shuffle on
``--curve-episodes`` held-out episodes (the leaderboard's 96), so a k x K grid fits the machine.

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
    probe: float = 0.0
    """Weight of the answer-probe term (the answer's tokens read off the packet by a linear map)."""
    inject_layer: int | None = None
    """Continuous codec: write the decoded vectors into the receiver's residual after this block
    instead of reading them as prefix embeddings."""
    serializers: tuple[str, ...] = ("fp16",)
    """Continuous codecs: the tensor codecs the packet crosses through (the first one is gated)."""
    curve_episodes: int = 96
    """Episodes per curve point (normal and shuffle) for serializers after the first, or for
    every codec when the gate is off (``gate_episodes = 0``)."""


def codec_config(spec: str) -> dict:
    kind, _, rest = spec.partition(":")
    opts = dict(item.split("=") for item in rest.split(",") if item)
    cfg: dict = {"kind": kind, "k": int(opts.get("k", 4)), "m": int(opts.get("m", 16))}
    if "pos" in opts:  # learned position embeddings of the resampler's inputs (ordered content)
        cfg["positions"] = int(opts["pos"])
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
            refs = references(b, agent, level)
            rows += refs
            with (out / "results.jsonl").open("a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in refs)
        for spec in b.codecs:
            tag = spec.replace(":", "-").replace(",", "-").replace("=", "")
            family = b.env.removeprefix("lpca/").split("-v")[0]
            name = "" if family == "SecretRelay" else f"{family}-"  # SecretRelay runs keep their names
            name += f"L{level}-{tag}-nce{b.infonce:g}-l{b.layer}t{b.tail}"
            if b.anchor:
                name += f"-anchor{b.anchor:g}"
            if b.probe:
                name += f"-probe{b.probe:g}"
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
                "objective": {"infonce": b.infonce, "anchor": b.anchor, "answer_probe": b.probe},
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
            base = {
                "env": b.env,
                "level": level,
                "codec": spec,
                "infonce": b.infonce,
                "anchor": b.anchor,
                "probe": b.probe,
                "inject_layer": b.inject_layer,
                "train_steps": res.step,
                "train_wall_s": train_s,
            }
            serializers = b.serializers if spec.startswith("prefix") else ("index",)
            if b.gate_episodes == 0:
                curve = serializers
            else:
                curve = serializers[1:]
                rows.append(gate_row(b, agent, level, res, serializers[0], base))
            for ser in curve:
                rows.append(curve_point(b, agent, level, res.checkpoint, ser, base))
            with (out / "results.jsonl").open("a") as fh:
                for r in rows[-len(serializers) :]:
                    fh.write(json.dumps(r) + "\n")
    print(
        "\n| env | level | protocol | serializer | bits/episode | success "
        "| shuffle | null | random | P0 | gate |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r.get('env', b.env).removeprefix('lpca/')} | {r['level']} | {r['codec']} | "
            f"{r.get('serializer', '-')} | {r['bits']:.0f} | {r['success']:.1%} | "
            + " | ".join(f"{r[c]:.1%}" if c in r else "-" for c in ("shuffle", "null", "random", "p0"))
            + f" | {'pass' if r.get('passed') else 'FAIL' if 'passed' in r else '-'} |"
        )
    (out / "bench.json").write_text(json.dumps(asdict(b), indent=2))


def gate_row(b: Bench, agent: LMAgent, level: int, res, serializer: str, base: dict) -> dict:
    """The gate (>= 200 held-out episodes: normal vs shuffle / null / random and P0)."""
    t = time.perf_counter()
    codec = serializer if serializer != "index" else "fp16"
    report = run_gate(
        res.checkpoint, env_id=b.env, level=level, agent=agent, episodes=b.gate_episodes, codec=codec
    )
    print(report.table(), flush=True)
    return {
        **base,
        "serializer": serializer,
        "bits": report.bits_per_episode,
        "success": report.rate,
        **{r.name: r.rate for r in report.references},
        "p_values": {r.name: r.p_value for r in report.references},
        "passed": report.passed,
        "episodes": report.episodes,
        "train_history": res.history,
        "gate_wall_s": time.perf_counter() - t,
    }


def curve_point(b: Bench, agent: LMAgent, level: int, checkpoint, serializer: str, base: dict) -> dict:
    """Normal and shuffle on the gate's first `curve_episodes` seeds through one serializer."""
    t = time.perf_counter()
    channel = "latent-prefix" if base["codec"].startswith("prefix") else "latent-codebook"
    opts = {"checkpoint": str(checkpoint)} | ({"codec": serializer} if serializer != "index" else {})
    common = dict(agent=agent, out_dir=None, episodes=b.curve_episodes, level=level, seed=2_000_000)
    res = {
        c: run(b.env, channel, b.model, channel_options={**opts, "control": c}, **common)
        for c in ("none", "shuffle")
    }
    s = {c: r.summary for c, r in res.items()}
    row = {
        **base,
        "serializer": serializer,
        "bits": s["none"]["mean_bits"],
        "success": s["none"]["success_rate"],
        "score": sum(r["score"] for r in res["none"].records) / max(1, len(res["none"].records)),
        "shuffle": s["shuffle"]["success_rate"],
        "episodes": b.curve_episodes,
        "curve_wall_s": time.perf_counter() - t,
    }
    print(row, flush=True)
    return row


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
        out.append(
            {
                "env": b.env,
                "level": level,
                "codec": label,
                "bits": s["mean_bits"],
                "success": s["success_rate"],
                "episodes": s["episodes"],
                "reference": True,
            }
        )
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
    p.add_argument("--probe", type=float, default=d.probe)
    p.add_argument("--inject-layer", type=int, default=None)
    p.add_argument("--env", default=d.env)
    p.add_argument("--serializers", nargs="+", default=list(d.serializers))
    p.add_argument("--curve-episodes", type=int, default=d.curve_episodes)
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
            probe=a.probe,
            inject_layer=a.inject_layer,
            env=a.env,
            serializers=tuple(a.serializers),
            curve_episodes=a.curve_episodes,
        )
    )
