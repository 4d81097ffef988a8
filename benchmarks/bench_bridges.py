"""Cross-model bridges on real pairs: train, gate, and the cross-model text baselines on the same seeds.

For one (sender, receiver) pair and one task this trains a `latent-bridge` through the frozen
receiver (`lpca_protocols.training.train_codec` with ``receiver``), gates it on held-out seeds
(`run_gate`: normal vs shuffle / null / random and the receiver's P0, one-sided two-proportion
test, >= 200 episodes) and runs, on the same gate seeds and the same agents, the cross-model
text baselines: P1 (free text, the sender's model writes, the receiver's reads) and P2
(text cut to ``--p2-bits`` bits per message, default the bridge's own bits rounded up to a byte).

    .venv/bin/python benchmarks/bench_bridges.py --sender smollm2-135m --receiver qwen2.5-coder-0.5b \\
        --env lpca/SecretRelay-v0 --level 0 --codec codebook:k=2,K=8,warmup=75 --layer 24 --tail 16 \\
        --steps 150 --lr 3e-3 --infonce 1.0 --out /work/runs_bridge_smol_q05

``--ablate`` trains the variants of the ablation table beside the full bridge, on the same data
(one flag each): ``no-normalizer`` (raw sender states, no recolouring), ``no-tanh`` (unbounded
output), ``infonce-0``, ``anchor-mse`` vs ``anchor-cos`` (anchor weight ``--anchor`` or 0.1),
``no-primer`` (the k vectors alone in the receiver's prompt). Each variant gets the gate.

Runs resume: a finished training run is reused (its directory holds the final codec). Rows
append to OUT/results.jsonl; nothing is tuned on the gate's seeds (training 0.., evaluation
during training 1_000_000.., the gate 2_000_000..).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import lpca_envs
from lpca_protocols.packet_codec import load_checkpoint
from lpca_protocols.runner import load_agents, run
from lpca_protocols.training import run_gate, train_codec
from lpca_protocols.training.gate import bridge_models

SEED = 2_000_000

ABLATIONS = {
    "full": {},
    "no-normalizer": {"codec": {"whiten": False, "recolour": False}},
    "no-tanh": {"codec": {"bounded": False}},
    "infonce-0": {"objective": {"infonce": 0.0}},
    "anchor-cos": {"objective": {"anchor_metric": "cosine"}, "anchor": True},
    "anchor-mse": {"objective": {"anchor_metric": "mse"}, "anchor": True},
    "no-primer": {"primer": ""},
}


def codec_config(spec: str) -> dict:
    """``prefix:k=K,m=M``, ``codebook:k=K,K=SIZE,warmup=STEPS`` (resampler bridges, `latent-bridge`) or
    ``kv:fuse=N,width=R`` (the C2C-style `kv-bridge`: N fused receiver layers, 0 = all, rank R)."""
    kind, _, rest = spec.partition(":")
    opts = dict(item.split("=") for item in rest.split(",") if item)
    if kind == "kv":
        return {"kind": "kv", "fuse": int(opts.get("fuse", 0)), "width": int(opts.get("width", 32))}
    cfg: dict = {"kind": kind, "k": int(opts.get("k", 4)), "m": int(opts.get("m", 16)), "recolour": True}
    if "pos" in opts:
        cfg["positions"] = int(opts["pos"])
    if kind == "codebook":
        cfg["codebook_size"] = int(opts.get("K", 16))
        cfg["quantize_after"] = int(opts.get("warmup", 0))
    return cfg


def config(a: argparse.Namespace, variant: str) -> dict:
    v = ABLATIONS[variant]
    codec = codec_config(a.codec) | v.get("codec", {})
    objective = {"infonce": a.infonce, "anchor": a.anchor or (0.1 if v.get("anchor") else 0.0)}
    if codec["kind"] == "kv":  # the kv bridge trains on the answer alone
        objective = {}
    objective |= v.get("objective", {})
    cfg = {
        "model": a.sender,
        "receiver": a.receiver,
        "env": a.env,
        "level": a.level,
        "out": str(Path(a.out) / (variant if codec["kind"] != "kv" else f"kv-{variant}")),
        "data_dir": str(Path(a.out) / "data"),
        "layer": a.layer,
        "tail": a.tail,
        "train_episodes": a.train_episodes,
        "eval_episodes": a.eval_episodes,
        "threads": a.threads,
        "codec": codec,
        "objective": objective,
        "optim": {
            "steps": a.steps,
            "batch_size": a.batch_size,
            "lr": a.lr,
            "eval_every": max(1, a.steps // 4),
            "checkpoint_every": max(1, a.steps // 4),
        },
    }
    if "primer" in v:
        cfg["primer"] = v["primer"]
        cfg["data_dir"] = str(Path(a.out) / "data-no-primer")
    return cfg


def main(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(lpca_envs.get_family(a.env).agents)
    pool: dict = {}
    rows = []
    variants = list(ABLATIONS) if a.ablate else ["full"]
    spec_models = None
    for variant in variants:
        cfg = config(a, variant)
        probe = {"sender": a.sender, "receiver": a.receiver}
        t = time.perf_counter()
        # sender and receiver agents come from one pool: each model loads once for the whole bench
        agents = load_agents(f"A={a.sender},B={a.receiver}", ("A", "B"), loaded=pool)
        res = train_codec(cfg, agent=agents["A"], receiver=agents["B"])
        train_s = time.perf_counter() - t
        ckpt = load_checkpoint(res.checkpoint)
        spec_models = bridge_models(ckpt, a.env)
        gate_agents = load_agents(spec_models, names, loaded=pool)
        t = time.perf_counter()
        report = run_gate(
            res.checkpoint, env_id=a.env, level=a.level, agent=gate_agents, episodes=a.gate_episodes,
            codec=a.serializer,
        )  # fmt: skip
        print(report.table(), flush=True)
        last = res.history[-1] if res.history else {}
        row = {
            **probe,
            "env": a.env,
            "level": a.level,
            "variant": variant,
            "codec": a.codec,
            "bits": report.bits_per_episode,
            "success": report.rate,
            **{r.name: r.rate for r in report.references},
            "p_values": {r.name: r.p_value for r in report.references},
            "passed": report.passed,
            "episodes": report.episodes,
            "train_steps": res.step,
            "train_wall_s": train_s,
            "gate_wall_s": time.perf_counter() - t,
            "diagnostics": {k: last.get(k) for k in ("exact", "exact_shuffle", "collapse_kl", "first_token",
                                                    "first_token_shuffle", "norm_ratio", "nearest_cos")},
        }  # fmt: skip
        rows.append(row)
        with (out / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    if a.baselines:
        spec_models = spec_models or f"A={a.sender},B={a.receiver}"
        agents = load_agents(spec_models, names, loaded=pool)
        p2_bits = a.p2_bits or max(8, -(-int(rows[0]["bits"]) // 8) * 8)
        for label, channel, budget in (
            ("P1 text", "text", None),
            (f"P2 text {p2_bits} bits", "text-budget", p2_bits),
        ):
            s = run(
                a.env, channel, spec_models, agent=agents, out_dir=None, episodes=a.gate_episodes,
                level=a.level, seed=SEED, budget_bits_per_message=budget,
            ).summary  # fmt: skip
            row = {
                "sender": a.sender,
                "receiver": a.receiver,
                "env": a.env,
                "level": a.level,
                "variant": label,
                "bits": s["mean_bits"],
                "success": s["success_rate"],
                "episodes": s["episodes"],
            }
            print(row, flush=True)
            rows.append(row)
            with (out / "results.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    print(
        "\n| pair | task | row | bits/episode | success | shuffle | null | random | P0 | gate | collapse KL |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        d = r.get("diagnostics") or {}
        print(
            f"| {r['sender']} -> {r['receiver']} | {r['env'].removeprefix('lpca/')} L{r['level']} | "
            f"{r['variant']} | {r['bits']:.0f} | {r['success']:.1%} | "
            + " | ".join(f"{r[c]:.1%}" if c in r else "-" for c in ("shuffle", "null", "random", "p0"))
            + f" | {'pass' if r.get('passed') else 'FAIL' if 'passed' in r else '-'} | "
            + (f"{d['collapse_kl']:.3f}" if d.get("collapse_kl") is not None else "-")
            + " |"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sender", required=True)
    p.add_argument("--receiver", required=True)
    p.add_argument("--env", default="lpca/SecretRelay-v0")
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--codec", default="codebook:k=2,K=8,warmup=75")
    p.add_argument("--serializer", default="fp16", help="Continuous bridges: the packet's tensor codec.")
    p.add_argument("--layer", type=int, default=-1, help="Sender layer the resampler reads.")
    p.add_argument("--tail", type=int, default=0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--infonce", type=float, default=1.0)
    p.add_argument("--anchor", type=float, default=0.0)
    p.add_argument("--train-episodes", type=int, default=256)
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--gate-episodes", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ablate", action="store_true", help="Train and gate every ablation variant.")
    p.add_argument("--baselines", action="store_true", help="Cross-model P1 and P2 on the gate seeds.")
    p.add_argument("--p2-bits", type=int, default=0)
    p.add_argument("--out", required=True)
    main(p.parse_args())
