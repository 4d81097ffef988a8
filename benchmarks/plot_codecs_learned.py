"""Rate-success curves of the learned codecs beside text and the training-free latent channels.

One panel per (task family, level): success against bits per episode (log axis) for
- the learned discrete codec over its k x K grid (bits = k * ceil(log2 K)) and the continuous
  codec through each serializer (fp16, q8_0, rotq...), each with its shuffled control (hollow);
- the text baselines P1, P2 / P3 / P4 at their budgets and P5, and the training-free latent
  channels (activation graft, CIPHER, KV share...) from the committed leaderboard, on their own
  episodes (seeds 0..95; the codecs run on held-out seeds 2,000,000..);
- the `info_bits` floor and the bound no b-bit message can beat on a uniform secret:
  success <= 2**b / 2**info_bits (the receiver tells at most 2**b secrets apart);
- P0 (nothing crosses) as a horizontal line.

    .venv/bin/python benchmarks/plot_codecs_learned.py \\
        --codecs benchmarks/figures/codecs_learned.jsonl \\
        --leaderboard benchmarks/leaderboard/sweep/leaderboard/leaderboard.json \\
        --out benchmarks/figures/codecs_learned_rate_success.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TEXT = {"text": "P1", "text-budget": "P2", "summary": "P3", "retrieval": "P4", "structured": "P5"}
LATENT = {"activation-graft", "cipher", "kv-share", "hidden-packet"}


def load_codecs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def panels(codecs: list[dict], board: dict) -> list[tuple[str, int]]:
    keys = {(r["env"].removeprefix("lpca/").split("-v")[0], r["level"]) for r in codecs}
    return sorted(k for k in keys if k[0] in board)


def variant(r: dict) -> str:
    """A continuous codec's curve: its spec and training variant (anchor, injection layer)."""
    out = r["codec"].split(":", 1)[1]
    if r.get("anchor"):
        out += f" anchor{r['anchor']:g}"
    if r.get("inject_layer") is not None:
        out += f" inj{r['inject_layer']}"
    return out


def draw(ax, family: str, level: int, codecs: list[dict], board: dict) -> None:
    rows = [r for r in board[family] if r["level"] == level and not r["scripted"]]
    info = next(r["info_bits"] for r in board[family] if r["level"] == level)
    mine = [r for r in codecs if r["env"].endswith(f"{family}-v0") and r["level"] == level]
    xs = [2.0 ** (e / 16) for e in range(-16, 24 * 16 + 1)]
    ax.plot(xs, [2 ** min(0.0, x - info) for x in xs], color="0.6", lw=1, ls=":", label="bound 2^(b-info)")
    ax.axvline(info, color="0.4", ls="--", lw=1, label=f"info_bits = {info:.1f}")
    p0 = next((r["success"] for r in rows if r["channel"] == "none"), None)
    if p0 is not None:
        ax.axhline(p0, color="0.75", lw=1, label="P0 none")
    # text baselines from the leaderboard
    text = sorted((r for r in rows if r["channel"] in TEXT), key=lambda r: r["bits"])
    for r in text:
        ax.plot(max(r["bits"], 0.5), r["success"], "s", color="tab:blue", ms=5, alpha=0.8)
        name = TEXT[r["channel"]] + ("" if r["budget"] is None else f"@{r['budget']}")
        ax.annotate(
            name,
            (max(r["bits"], 0.5), r["success"]),
            fontsize=6,
            xytext=(3, -7),
            textcoords="offset points",
            color="tab:blue",
        )
    ax.plot([], [], "s", color="tab:blue", label="text P1-P5 (leaderboard)")
    for r in (r for r in rows if r["channel"] in LATENT):
        ax.plot(r["bits"], r["success"], "^", color="tab:green", ms=5, alpha=0.8)
        short = r["label"].split(" ", 1)[-1].replace("activation-", "")
        ax.annotate(
            short,
            (r["bits"], r["success"]),
            fontsize=5,
            xytext=(-10, 5),
            textcoords="offset points",
            color="tab:green",
        )
        if r.get("shuffle_success") is not None:
            ax.plot(r["bits"], r["shuffle_success"], "^", mfc="none", color="tab:green", ms=5)
    ax.plot([], [], "^", color="tab:green", label="training-free latent (hollow: shuffle)")
    # the learned codecs
    disc = sorted((r for r in mine if r["codec"].startswith("codebook")), key=lambda r: r["bits"])
    if disc:
        ax.plot(
            [r["bits"] for r in disc],
            [r["success"] for r in disc],
            "o-",
            color="tab:red",
            label="learned discrete k x K",
        )
        ax.plot([r["bits"] for r in disc], [r["shuffle"] for r in disc], "o", mfc="none", color="tab:red")
        for r in disc:
            kk = dict(x.split("=") for x in r["codec"].split(":", 1)[1].split(",") if "=" in x)
            ax.annotate(
                f"{kk.get('k')}x{kk.get('K')}",
                (r["bits"], r["success"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
                color="tab:red",
            )
    cont = sorted((r for r in mine if r["codec"].startswith("prefix")), key=lambda r: r["bits"])
    for spec in sorted({variant(r) for r in cont}):
        pts = [r for r in cont if variant(r) == spec]
        ax.plot(
            [r["bits"] for r in pts], [r["success"] for r in pts], "D-", color="tab:purple", ms=4, alpha=0.8
        )
        ax.plot(
            [r["bits"] for r in pts], [r["shuffle"] for r in pts], "D", mfc="none", color="tab:purple", ms=4
        )
        for r in pts:
            ser = r.get("serializer", "fp16").replace("rotq-tcq:bits=", "tcq").replace("rotq:bits=", "rotq")
            ax.annotate(
                ser,
                (r["bits"], r["success"]),
                fontsize=5,
                rotation=60,
                xytext=(0, 4),
                textcoords="offset points",
                color="tab:purple",
            )
    if cont:
        ax.plot([], [], "D-", color="tab:purple", label="learned continuous (serializers)")
    for r in (
        r for r in mine if r.get("reference") and "graft" in r["codec"] and "shuffle" not in r["codec"]
    ):
        ax.axhline(r["success"], color="tab:green", ls="-.", lw=1, label=f"{r['codec']} (codec seeds)")
    ax.set_xscale("log", base=2)
    ax.set_xlim(0.5, 2**24)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("bits per episode (log2)")
    ax.set_ylabel("success")
    ax.set_title(f"{family} level {level} (SmolLM2-135M)")
    ax.grid(alpha=0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codecs", default="benchmarks/figures/codecs_learned.jsonl")
    p.add_argument("--leaderboard", default="benchmarks/leaderboard/sweep/leaderboard/leaderboard.json")
    p.add_argument("--out", default="benchmarks/figures/codecs_learned_rate_success.png")
    a = p.parse_args()
    codecs = load_codecs(Path(a.codecs))
    board = json.loads(Path(a.leaderboard).read_text())
    keys = panels(codecs, board)
    if not keys:
        raise SystemExit(f"no (family, level) of {a.codecs} is in {a.leaderboard}")
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.8 * rows), squeeze=False)
    for ax, (fam, lv) in zip(axes.flat, keys):
        draw(ax, fam, lv, codecs, board)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    legend: dict[str, object] = {}  # one legend for all panels, below them
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label.startswith("info_bits"):
                label = "info_bits (the floor)"
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.05, 1, 1))
    fig.savefig(a.out, dpi=130)
    print(f"wrote {a.out} ({len(keys)} panels)")


if __name__ == "__main__":
    main()
