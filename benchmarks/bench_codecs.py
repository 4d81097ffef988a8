"""Codecs: speed, rate-distortion on real SmolLM2 hidden states, and next-token KL after a resume.

1. Speed. Encode and decode GB/s (float32 bytes in or out per second) of every codec on
   one bulk buffer, next to `np.copy` of the same buffer, and the latency of encode +
   decode of one 576-float vector (SmolLM2's width). Targets: q8_0 encode+decode of
   one vector <= 20 us; bulk q8_0 >= 1 GB/s. q8_0 and q4_0 run numba-compiled kernels
   when numba is installed (the `fast` extra), and so does rotq-tcq's trellis search;
   their "(numpy)" rows time the numpy code.
2. Rate-distortion. Hidden states of SmolLM2 at several layers (every position of ~100
   varied texts, duplicates removed), split into train (learned codebooks) and test
   rows. Normalized MSE = mean over test rows of |x - x^|^2 / |x|^2, against bits per
   coordinate (everything counted: scales, norms, indices). The Gaussian bound
   D(R) = 2^(-2R) is on the plot; the gap of a codec is R - R_bound(D) =
   R + log2(D) / 2 bits. Target: rotq within 0.6 bit of the bound at 3-4 bits (rotq-tcq,
   the trellis-coded variant at the same bits, is listed beside it).
3. Next-token KL after resume: hidden states at `kl_layer` go through each codec and
   `Backend.resume` runs the remaining blocks; KL(uninterrupted || resumed) of the
   last position's next-token distribution, averaged over held-out texts.

    python benchmarks/bench_codecs.py                 # everything (several minutes on 2 cores)
    python benchmarks/bench_codecs.py --only speed
    python benchmarks/bench_codecs.py --only speed --codecs rotq-tcq:bits=4 --bulk-mb 8   # one codec, short
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import random
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpca_protocols import codecs
from lpca_protocols.codecs import ggml, learned, tcq

SPEED_CODECS = [
    "fp32",
    "fp16",
    "bf16",
    "q8_0",
    "q4_0",
    "rotq:bits=1",
    "rotq:bits=2",
    "rotq:bits=3",
    "rotq:bits=4",
    "rotq-tcq:bits=4",
]
#: Codecs with a compiled path: each also gets a "(numpy)" row, timed with ``jit=False``.
JIT_CODECS = ("q8_0", "q4_0", "rotq-tcq:bits=4")
RD_CODECS = [
    "fp16",
    "bf16",
    "q8_0",
    "q4_0",
    "rotq:bits=1",
    "rotq:bits=2",
    "rotq:bits=3",
    "rotq:bits=4",
    "rotq:bits=5",
    "rotq:bits=6",
    "rotq:bits=3,search=1",
    "rotq:bits=4,search=1",
    "rotq-tcq:bits=1",
    "rotq-tcq:bits=2",
    "rotq-tcq:bits=3",
    "rotq-tcq:bits=4",
    "rotq-tcq:bits=5",
    "rotq-tcq:bits=6",
]


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Zoo id of the model whose hidden states are coded."""
    layers: tuple[int, ...] = (6, 12, 18, 24, 29)
    """Layers (residual after block l) whose hidden states are measured."""
    texts: int = 120
    """Texts run through the model; the first 80% train learned codebooks, the rest are the test set."""
    learned_layers: tuple[int, ...] = (12, 24)
    """Layers at which the learned codecs are trained and measured (training is the slow part)."""
    kl_layer: int = 24
    """Layer at which the state is cut for the resume-KL measurement."""
    kl_texts: int = 12
    """Held-out texts in the resume-KL measurement."""
    bulk_mb: int = 64
    """Size of the bulk buffer for the GB/s figures (rotq and learned codecs use 1/8 of it)."""
    repeats: int = 5
    """Timed repetitions; the best is reported (the machine is shared and noisy)."""
    learned: bool = True
    """Train and measure the learned codecs (vq, rvq, fsq, pq)."""
    speed_codecs: tuple[str, ...] = tuple(SPEED_CODECS)
    """Codecs timed in the speed section."""
    png: str = "benchmarks/figures/codecs_rate_distortion.png"
    """Where the rate-distortion plot is written."""
    learned_specs: list[tuple[str, dict]] = field(
        default_factory=lambda: [
            ("vq", {"group": 8, "size": 256}),  # 1 bit/coord
            ("vq", {"group": 4, "size": 256}),  # 2
            ("rvq", {"group": 8, "size": 256, "stages": 2}),  # 2
            ("rvq", {"group": 8, "size": 256, "stages": 4}),  # 4
            ("fsq", {"group": 8, "levels": (8, 5, 5, 5)}),  # 1.25
            ("fsq", {"group": 4, "levels": (8, 8, 6, 5, 5)}),  # 3.5
            ("pq", {"subspaces": 72, "nbits": 8}),  # 1
            ("pq", {"subspaces": 144, "nbits": 8}),  # 2
            ("pq", {"subspaces": 288, "nbits": 8}),  # 4
        ]
    )
    """Learned codecs: (kind, training parameters)."""


# ------------------------------------------------------------------------------------------ speed


def best(fn, repeats: int, number: int = 1) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number


def speed(cfg: Config, extra: dict[str, codecs.Codec]) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = (cfg.bulk_mb << 20) // (576 * 4)
    bulk = rng.standard_normal((rows, 576)).astype(np.float32)
    small = bulk[: max(64, rows // 8)]
    vec = bulk[0].copy()
    out = []
    specs = []
    for s in cfg.speed_codecs:
        specs.append((s, codecs.get(s)))
        if s in JIT_CODECS:
            specs.append((f"{s} (numpy)", codecs.get(s, jit=False)))
    specs += list(extra.items())
    for name, c in specs:
        buf = bulk if c.name in ("fp32", "fp16", "bf16", "q8_0", "q4_0") else small
        copy_s = best(lambda buf=buf: np.copy(buf), cfg.repeats)
        enc = c.encode(buf)
        enc_s = best(lambda buf=buf, c=c: c.encode(buf), cfg.repeats)
        dec_s = best(lambda c=c, enc=enc, buf=buf: c.decode(enc, buf.shape), cfg.repeats)
        e1 = c.encode(vec)
        n = 2000 if c.name in ("fp32", "fp16", "bf16", "q8_0", "q4_0") else 200
        vec_enc = best(lambda c=c: c.encode(vec), cfg.repeats, n)
        vec_dec = best(lambda c=c, e1=e1: c.decode(e1, vec.shape), cfg.repeats, n)
        vec_both = best(lambda c=c: c.decode(c.encode(vec), vec.shape), cfg.repeats, n)
        out.append(
            {
                "codec": name,
                "MB": buf.nbytes / 2**20,
                "copy": buf.nbytes / copy_s / 1e9,
                "enc": buf.nbytes / enc_s / 1e9,
                "dec": buf.nbytes / dec_s / 1e9,
                "vec_enc_us": vec_enc * 1e6,
                "vec_dec_us": vec_dec * 1e6,
                "vec_us": vec_both * 1e6,
                "bytes_576": len(e1),
            }
        )
    return out


# ------------------------------------------------------------------------------------------ data


SUBJECTS = [
    "The old lighthouse keeper",
    "A small red fox",
    "The committee",
    "My neighbour's daughter",
    "The quantum computer",
    "An orchestra",
    "The river",
    "Every student in the class",
    "The spaceship",
    "Grandma",
]
VERBS = [
    "carefully counted",
    "quietly painted",
    "argued about",
    "forgot",
    "discovered",
    "sold",
    "measured",
    "wrote a poem about",
    "dreamed of",
    "repaired",
]
OBJECTS = [
    "seventeen green bottles",
    "the secret colour of the door",
    "a map of the northern islands",
    "the price of bread in 1923",
    "an unfinished symphony",
    "the broken clock",
    "three prime numbers",
    "a recipe for plum cake",
    "the password 'tangerine'",
    "the shortest path to the station",
]


def texts(n: int, seed: int = 0) -> list[str]:
    """Varied English plus LPCA task views: no shared prefix, so no duplicated hidden states."""
    import lpca_envs

    rng = random.Random(seed)
    out = []
    fams = [lpca_envs.get_family(i) for i in lpca_envs.list_envs()]
    for i in range(n):
        if i % 3 == 2:
            fam = fams[i % len(fams)]
            task = fam.sample(rng, rng.choice(fam.levels))
            out.append(" ".join(task.views.values())[:400])
        else:
            k = rng.randint(2, 4)
            out.append(
                " ".join(
                    f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
                    f" on day {rng.randint(1, 400)}."
                    for _ in range(k)
                )
            )
    return out


def hidden_states(b, cfg: Config, corpus: list[str]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """(train, test) rows per layer. Texts share their first tokens (BOS at least), and a causal model
    gives identical states for identical prefixes: test rows that also occur in train are dropped."""
    split = int(0.8 * len(corpus))
    per: dict[int, list[list[np.ndarray]]] = {layer: [[], []] for layer in cfg.layers}
    for i, t in enumerate(corpus):
        f = b.forward(b.tokenize(t, add_special_tokens=True), capture=cfg.layers, logits="none")
        for layer in cfg.layers:
            per[layer][i >= split].append(f.hidden[layer])
    train, test = {}, {}
    for layer, (tr, te) in per.items():
        train[layer] = np.unique(np.concatenate(tr), axis=0)
        seen = {row.tobytes() for row in train[layer]}
        te_rows = np.unique(np.concatenate(te), axis=0)
        test[layer] = te_rows[[row.tobytes() not in seen for row in te_rows]]
    return train, test


def train_learned(cfg: Config, train: np.ndarray, layer: int) -> dict[str, codecs.Codec]:
    out: dict[str, codecs.Codec] = {}
    for kind, params in cfg.learned_specs:
        p = dict(params)
        meta = {"layer": str(layer), "model": cfg.model}
        if kind == "vq":
            cb = learned.train_vq(train, p["group"], p["size"], epochs=2, meta=meta)
        elif kind == "rvq":
            cb = learned.train_vq(train, p["group"], p["size"], stages=p["stages"], epochs=2, meta=meta)
        elif kind == "fsq":
            cb = learned.train_fsq(train, p["group"], p["levels"], steps=3000, lr=1e-2, meta=meta)
        else:
            cb = learned.train_pq(train, p["subspaces"], p["nbits"], meta=meta)
        label = f"{kind}:" + ",".join(f"{k}={v}" for k, v in p.items()).replace(" ", "")
        out[label] = codecs.get(kind, codebook=cb)
    return out


def nmse(c: codecs.Codec, x: np.ndarray) -> float:
    y = c.decode(c.encode(x), x.shape)
    return float((((y - x) ** 2).sum(1) / (x**2).sum(1)).mean())


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    p = p_logits.astype(np.float64) - p_logits.max()
    q = q_logits.astype(np.float64) - q_logits.max()
    lp, lq = p - np.log(np.exp(p).sum()), q - np.log(np.exp(q).sum())
    return float((np.exp(lp) * (lp - lq)).sum())


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["speed", "rd"], default=None)
    ap.add_argument("--no-learned", action="store_true")
    ap.add_argument("--texts", type=int, default=Config.texts)
    ap.add_argument("--codecs", default=None, help="speed: only these comma-separated specs (default: all)")
    ap.add_argument("--bulk-mb", type=int, default=Config.bulk_mb, help="speed: size of the bulk buffer")
    ap.add_argument("--states", default=None, help="cache the hidden states in this .npz (reused if present)")
    ap.add_argument("--png", default=Config.png, help="where the rate-distortion plot is written")
    args = ap.parse_args()
    cfg = Config(learned=not args.no_learned, texts=args.texts, png=args.png, bulk_mb=args.bulk_mb)
    if args.codecs:
        cfg.speed_codecs = tuple(filter(None, args.codecs.split(",")))

    if args.only in (None, "speed"):
        print("## Speed (GB/s of float32; 576-float vector latency)\n")
        rows = speed(cfg, {})
        if ggml.jit_enabled():
            print(f"q8_0 and q4_0: numba {importlib.metadata.version('numba')} kernels\n")
        else:
            print("q8_0 and q4_0: numpy (numba is not installed, or LPCA_NO_JIT is set)\n")
        print(f"rotq-tcq: {'numba kernels' if tcq.jit_enabled() else 'numpy'}\n")
        print(
            "| codec | buffer MB | np.copy GB/s | encode GB/s | decode GB/s | 576-vec encode us | "
            "576-vec decode us | 576-vec encode+decode us | bytes for 576 floats |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['codec']} | {r['MB']:.0f} | {r['copy']:.2f} | {r['enc']:.3f} | {r['dec']:.3f} | "
                f"{r['vec_enc_us']:.1f} | {r['vec_dec_us']:.1f} | {r['vec_us']:.1f} | {r['bytes_576']} |"
            )
        print()
    if args.only == "speed":
        return

    import lpca_models

    b = lpca_models.load(cfg.model)
    corpus = texts(cfg.texts)
    t0 = time.perf_counter()
    if args.states and Path(args.states).exists():
        with np.load(args.states) as z:
            train = {layer: z[f"train{layer}"] for layer in cfg.layers}
            test = {layer: z[f"test{layer}"] for layer in cfg.layers}
    else:
        train, test = hidden_states(b, cfg, corpus)
        if args.states:
            np.savez(
                args.states,
                **{f"train{k}": v for k, v in train.items()},
                **{f"test{k}": v for k, v in test.items()},
            )
    print(
        f"hidden states: {len(corpus)} texts, {time.perf_counter() - t0:.0f} s; rows per layer "
        f"train/test: "
        + ", ".join(f"{layer}: {len(train[layer])}/{len(test[layer])}" for layer in cfg.layers)
    )
    d = b.info.hidden_size
    results: dict[str, dict[int, tuple[float, float]]] = {}
    learned_at: dict[int, dict[str, codecs.Codec]] = {}
    for layer in cfg.layers:
        x = test[layer]
        cands = {s: codecs.get(s) for s in RD_CODECS}
        if cfg.learned and layer in cfg.learned_layers:
            t0 = time.perf_counter()
            learned_at[layer] = train_learned(cfg, train[layer], layer)
            print(
                f"layer {layer}: trained {len(learned_at[layer])} learned codecs "
                f"in {time.perf_counter() - t0:.0f} s"
            )
            cands.update(learned_at[layer])
        for name, c in cands.items():
            results.setdefault(name, {})[layer] = (c.bits((1, d)) / d, nmse(c, x))

    print("\n## Rate-distortion: normalized MSE (mean over test rows) and gap to the Gaussian bound\n")
    print(
        "| codec | bits/coord | "
        + " | ".join(f"NMSE L{layer}" for layer in cfg.layers)
        + " | gap (bits), mean |"
    )
    print("|---|---:|" + "---:|" * len(cfg.layers) + "---:|")
    for name, per in results.items():
        rate = next(iter(per.values()))[0]
        gaps = [rate + math.log2(max(v[1], 1e-30)) / 2 for v in per.values()]
        print(
            f"| {name} | {rate:.3f} | "
            + " | ".join(f"{per[layer][1]:.2e}" if layer in per else "" for layer in cfg.layers)
            + f" | {np.mean(gaps):.2f} |"
        )

    # resume KL at kl_layer, on held-out texts
    kl_rows: dict[str, list[float]] = {}
    held = corpus[int(0.8 * len(corpus)) :][: cfg.kl_texts]
    cands = {s: codecs.get(s) for s in RD_CODECS}
    cands.update(learned_at.get(cfg.kl_layer, {}))
    for t in held:
        ids = b.tokenize(t, add_special_tokens=True)
        ref = b.forward(ids, capture=[cfg.kl_layer], logits="last")
        h = ref.hidden[cfg.kl_layer]
        for name, c in cands.items():
            back = c.decode(c.encode(h), h.shape)
            kl_rows.setdefault(name, []).append(kl(ref.logits, b.resume(back, cfg.kl_layer).logits))
    print(f"\n## Next-token KL after resume at layer {cfg.kl_layer} ({len(held)} held-out texts)\n")
    print("| codec | bits/coord | mean KL (nats) | max KL |")
    print("|---|---:|---:|---:|")
    for name, ks in kl_rows.items():
        print(f"| {name} | {cands[name].bits((1, d)) / d:.3f} | {np.mean(ks):.4f} | {np.max(ks):.4f} |")

    plot(cfg, results, kl_rows, {n: c.bits((1, d)) / d for n, c in cands.items()})


def family(name: str) -> str:
    base = name.split(":")[0]
    if "search=1" in name:
        return "rotq search"
    return {"q8_0": "ggml", "q4_0": "ggml", "fp16": "float", "bf16": "float", "fp32": "float"}.get(base, base)


def plot(cfg: Config, results: dict, kl_rows: dict, rates: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    r = np.linspace(0.5, 16.5, 200)
    ax.plot(r, 2.0 ** (-2 * r), "k--", label="Gaussian bound $2^{-2R}$")
    ax.plot(r, 2.0 ** (-2 * (r - 0.6)), "k:", lw=0.8, label="bound + 0.6 bit")
    styles = {
        "rotq": "o-",
        "rotq search": "o",
        "rotq-tcq": "x-",
        "vq": "s",
        "rvq": "^",
        "fsq": "D",
        "pq": "v",
        "ggml": "P",
        "float": "*",
    }
    for fam, style in styles.items():
        pts = sorted(
            results[n][cfg.kl_layer] for n in results if family(n) == fam and cfg.kl_layer in results[n]
        )
        if pts:
            ax.plot(*zip(*pts), style, label=f"{fam} (layer {cfg.kl_layer})", ms=6)
    for layer in cfg.layers:
        pts = sorted(results[n][layer] for n in results if family(n) == "rotq")
        ax.plot(*zip(*pts), "-", alpha=0.35, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("bits per coordinate (all overhead included)")
    ax.set_ylabel("normalized MSE")
    ax.set_title(f"{cfg.model} hidden states (faint lines: rotq at layers {', '.join(map(str, cfg.layers))})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    pts = sorted((rates[n], np.mean(k), n) for n, k in kl_rows.items())
    ax2.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], "o")
    for x, y, n in pts:
        ax2.annotate(n.split(",")[0], (x, max(y, 1e-6)), fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xlabel("bits per coordinate")
    ax2.set_ylabel("mean next-token KL after resume (nats)")
    ax2.set_title(f"resume from layer {cfg.kl_layer}")
    ax2.axhline(0.01, color="k", ls=":", lw=0.8)
    ax2.grid(alpha=0.3)
    out = Path(cfg.png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
