"""The route- and vitality-head report: train both heads on oracle labels, measure them held out.

`run_heads_report` captures the prompt set (`capture`), takes or trains a tuned lens on the
train side, labels every position with the oracle (`oracle.oracle_labels`) and with vitality
(`routing.vitality_labels`), chooses the boundaries from the *train* side's tuned-lens top-1
agreement (`report.choose_boundaries`; the held-out side is only measured) unless given, and
the layers the heads read from the same map (`routing.head_layers`: up to the shallow boundary).
Each head is trained on the train side minus a calibration split of whole prompts, its
temperature fitted on that split, and measured on the held-out prompts: accuracy, macro-F1,
per-class F1 and confusion, ECE before and after temperature scaling, and the abstain curve;
beside the majority class, the fixed split and entropy-only routing (`routing`). Writes
``heads.json``, ``heads.md`` and the checkpoints ``route/`` and ``vitality/`` into one directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_models.backend import Backend
from lpca_models.split.calibration import (
    ABSTAIN_THRESHOLDS,
    abstain_curve,
    classification,
    ece,
    fit_temperature,
    nll,
    softmax,
)
from lpca_models.split.capture import Captured, capture, task_prompts
from lpca_models.split.errors import HeadLabelError, SplitError
from lpca_models.split.heads import HeadTraining, RouteHead, train_head
from lpca_models.split.lens import TunedLens
from lpca_models.split.metrics import LayerStats, lens_stats
from lpca_models.split.oracle import LABELS, Boundaries, OracleThresholds, balance, oracle_labels
from lpca_models.split.report import choose_boundaries, split_map
from lpca_models.split.routing import (
    VITALITY_LABELS,
    calibration_rows,
    fit_thresholds,
    head_layers,
    lens_entropy,
    route_by_thresholds,
    vitality_labels,
)
from lpca_models.split.train import LensTraining, train_tuned_lens


@dataclass(frozen=True)
class HeadsReportConfig:
    """What the heads report reads, how the heads are trained, and what they are compared with."""

    env_ids: tuple[str, ...] | None = None
    """Task families whose views make prompts (None: every registered env)."""
    train_seeds: int = 3
    """Env seeds 0..n-1 per env on the train side."""
    heldout_seeds: int = 1
    """Env seeds on the held-out side."""
    humaneval: tuple[int, int] = (6, 2)
    """HumanEval problems (train, held-out)."""
    max_positions: int = 8
    """Positions kept per prompt."""
    lens_training: LensTraining = field(default_factory=lambda: LensTraining(steps=40))
    """How the tuned lens is trained when none is given."""
    oracle: OracleThresholds = field(default_factory=OracleThresholds)
    """Thresholds of the oracle labels."""
    boundaries: tuple[int, int] | None = None
    """(shallow, late); None: chosen from the train side's tuned-lens top-1 (0.5 and 0.9), which runs
    higher than held out when the lens was fitted on the same positions (earlier boundaries)."""
    layers: tuple[int, ...] | None = None
    """Layers the heads read; None: `n_read` layers from the map's 0.25 entry to the shallow boundary."""
    n_read: int = 3
    """How many layers the heads read when `layers` is None."""
    head: HeadTraining = field(default_factory=HeadTraining)
    """How both heads are trained."""
    calibration: float = 0.25
    """Fraction of the train side's (source, seed) groups held back to fit the temperature."""
    bins: int = 15
    """ECE bins."""
    fixed_label: str = "continue_local"
    """The fixed-split baseline's route label (vitality's is ``alive``)."""
    abstain: tuple[float, ...] = ABSTAIN_THRESHOLDS
    """Top-1 probability thresholds of the abstain curve."""
    seed: int = 0
    """Seeds the calibration split."""


def _constant(n: int, probs: np.ndarray) -> np.ndarray:
    return np.tile(np.asarray(probs, dtype=np.float64), (n, 1))


def evaluate_head(
    head: RouteHead, hidden: Any, y: np.ndarray, bins: int, thresholds: Sequence[float]
) -> dict:
    """Held-out metrics of a head: classification (with ECE at T = 1) and ECE, NLL, abstain curve
    before and after its temperature."""
    logits = head.logits(hidden)
    raw, cal = softmax(logits), softmax(logits, head.temperature)
    doc = classification(y, logits.argmax(-1), head.labels, raw, bins)
    doc |= {
        "temperature": head.temperature,
        "ece_calibrated": ece(cal, y, bins),
        "nll": nll(logits, y),
        "nll_calibrated": nll(logits, y, head.temperature),
        "abstain": abstain_curve(raw, y, thresholds),
        "abstain_calibrated": abstain_curve(cal, y, thresholds),
    }
    return doc


def baselines(
    y_train: np.ndarray,
    y_held: np.ndarray,
    labels: Sequence[str],
    fixed: str,
    entropy_train: np.ndarray,
    entropy_held: np.ndarray,
    bins: int,
) -> dict[str, dict]:
    """Majority class, fixed split and entropy-only routing on the held-out labels."""
    c = len(labels)
    if fixed not in labels:
        raise HeadLabelError(f"fixed-split label {fixed!r} is not in {list(labels)}")
    freq = np.bincount(y_train, minlength=c) / max(len(y_train), 1)
    n = len(y_held)
    majority = classification(y_held, np.full(n, int(freq.argmax())), labels, _constant(n, freq), bins)
    fixed_doc = classification(y_held, np.full(n, labels.index(fixed)), labels) | {"label": fixed}
    fit = fit_thresholds(entropy_train, y_train, c)
    ent = classification(y_held, route_by_thresholds(entropy_held, fit["thresholds"], fit["order"]), labels)
    majority["label"] = labels[int(freq.argmax())]
    return {"majority": majority, "fixed_split": fixed_doc, "entropy": ent | {"fit": fit}}


@dataclass(frozen=True)
class HeadsData:
    """What every head run over one prompt set shares: the captured states, the tuned lens's
    per-layer statistics and the shallow boundary's logit-lens entropy, on both sides."""

    train: Captured
    held: Captured
    stats_train: LayerStats
    stats_held: LayerStats
    boundaries: Boundaries
    why: str
    layers: tuple[int, ...]
    entropy_train: np.ndarray
    entropy_held: np.ndarray
    n_prompts: tuple[int, int]
    lens_meta: dict[str, Any]
    timings: dict[str, float]


def prepare_heads_data(
    backend: Backend,
    config: HeadsReportConfig,
    out_dir: str | Path,
    lens: TunedLens | None = None,
    log: Callable[[str], None] = print,
) -> HeadsData:
    """Capture, take or train the lens (saved to OUT/lens), measure it, choose boundaries and layers."""
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
        lens = train_tuned_lens(backend, train.hidden, config.lens_training)
        lens.save(Path(out_dir) / "lens")
    lens.check_model(backend.info)
    stats_train, stats_held = lens_stats(backend, train.hidden, lens), lens_stats(backend, held.hidden, lens)
    timings["lens_s"] = time.perf_counter() - t
    top1 = stats_train.summary()["top1"]
    if config.boundaries is None:
        bounds, why = choose_boundaries(top1, n_layers, 0.5, 0.9)
        # the same rule as the sufficiency report, on the train side: the held-out side is only measured
        # (the lens was fitted on the train side, so its agreement there runs higher than held out)
        why = why.replace("held-out", "train-side")
    else:
        bounds, why = Boundaries(*config.boundaries), "given"
    bounds.check(n_layers)
    layers = config.layers or head_layers(bounds.shallow, split_map(top1)["0.25"], config.n_read)

    t = time.perf_counter()
    ent_train = lens_entropy(backend, train.hidden[:, bounds.shallow], bounds.shallow)
    ent_held = lens_entropy(backend, held.hidden[:, bounds.shallow], bounds.shallow)
    timings["entropy_s"] = time.perf_counter() - t
    n_prompts = (sum(not p.heldout for p in prompts), sum(p.heldout for p in prompts))
    return HeadsData(
        train, held, stats_train, stats_held, bounds, why, tuple(layers), ent_train, ent_held, n_prompts,
        dict(lens.meta), timings,
    )  # fmt: skip


def run_heads_report(
    backend: Backend,
    config: HeadsReportConfig,
    out_dir: str | Path,
    lens: TunedLens | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
    data: HeadsData | None = None,
) -> dict[str, Any]:
    """Label, train, calibrate, measure and write the report; returns the JSON document. `data`
    (from `prepare_heads_data` with the same prompt settings) skips the capture and the lens; its
    boundaries and layers are used, not the config's."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info, n_layers = backend.info, backend.info.n_layers
    if data is None:
        data = prepare_heads_data(backend, config, out, lens, log)
    timings = dict(data.timings)
    train, held, bounds, layers = data.train, data.held, data.boundaries, data.layers
    stats_train, stats_held = data.stats_train, data.stats_held
    ent_train, ent_held = data.entropy_train, data.entropy_held
    calib = calibration_rows(train, config.calibration, config.seed)
    fit_rows = ~calib
    if not fit_rows.any():
        raise SplitError("the calibration split took every train prompt; lower the calibration fraction")

    tasks: dict[str, Any] = {}
    for task, label_set, label_fn, fixed in (
        ("route", LABELS, oracle_labels, config.fixed_label),
        ("vitality", VITALITY_LABELS, vitality_labels, VITALITY_LABELS[0]),
    ):
        t = time.perf_counter()
        lab_train = label_fn(stats_train, bounds, config.oracle)
        lab_held = label_fn(stats_held, bounds, config.oracle)
        fit_labels = [x for x, keep in zip(lab_train, fit_rows) if keep]
        head = train_head(info, train.hidden[fit_rows], fit_labels, layers, label_set, config.head)
        y_train, y_held = head.encode(lab_train), head.encode(lab_held)
        if calib.any():
            head.temperature = fit_temperature(head.logits(train.hidden[calib]), y_train[calib])
        head.meta["boundaries"] = [bounds.shallow, bounds.late]
        head.meta["oracle"] = asdict(config.oracle)
        head.save(out / task)
        tasks[task] = {
            "labels": list(label_set),
            "balance": {
                "train": balance_of(lab_train, label_set),
                "heldout": balance_of(lab_held, label_set),
            },
            "head": evaluate_head(head, held.hidden, y_held, config.bins, config.abstain),
            "head_train_fit": classification(
                y_train[fit_rows], head.logits(train.hidden[fit_rows]).argmax(-1), label_set
            ),
            "baselines": baselines(y_train, y_held, label_set, fixed, ent_train, ent_held, config.bins),
            "path": str(out / task),
        }
        timings[f"{task}_s"] = time.perf_counter() - t
        h = tasks[task]["head"]
        log(
            f"{task}: held-out accuracy {h['accuracy']:.3f}, macro-F1 {h['macro_f1']:.3f}, "
            f"ECE {h['ece']:.3f} -> {h['ece_calibrated']:.3f} (T {head.temperature:.2f})"
        )
    doc = {
        "model": info.name,
        "framework": info.framework,
        "fingerprint": info.fingerprint,
        "n_layers": n_layers,
        "hidden_size": info.hidden_size,
        "command": command,
        "config": asdict(config),
        "prompts": {"train": data.n_prompts[0], "heldout": data.n_prompts[1]},
        "positions": {"fit": int(fit_rows.sum()), "calibration": int(calib.sum()), "heldout": len(held)},
        "boundaries": {"shallow": bounds.shallow, "late": bounds.late, "why": data.why},
        "layers": list(layers),
        "lens": {"meta": data.lens_meta},
        "tasks": tasks,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    (out / "heads.json").write_text(json.dumps(doc, indent=2))
    (out / "heads.md").write_text(markdown(doc))
    log(f"wrote {out / 'heads.md'}, heads.json, route/, vitality/")
    return doc


def balance_of(labels: Sequence[str], label_set: Sequence[str]) -> dict[str, float]:
    if tuple(label_set) == LABELS:
        return balance(labels)
    n = max(len(labels), 1)
    return {k: sum(x == k for x in labels) / n for k in label_set}


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def markdown(doc: dict[str, Any]) -> str:
    """The report as markdown: per task, head vs baselines, confusion, abstain curve."""
    b, pos = doc["boundaries"], doc["positions"]
    lines = [
        f"# Route and vitality heads: {doc['model']} ({doc['framework']}, {doc['n_layers']} layers)",
        "",
        f"Boundaries shallow {b['shallow']}, late {b['late']} ({b['why']}); heads read layers "
        f"{doc['layers']}; positions {pos['fit']} fit / {pos['calibration']} calibration / {pos['heldout']} "
        f"held-out ({doc['prompts']['train']} train / {doc['prompts']['heldout']} held-out prompts).",
    ]
    if doc["command"]:
        lines += ["", f"    {doc['command']}"]
    for task, r in doc["tasks"].items():
        h, bl = r["head"], r["baselines"]
        lines += [
            "",
            f"## {task}",
            "",
            "Label balance (train / held-out): "
            + ", ".join(
                f"{k} {r['balance']['train'][k]:.3f} / {r['balance']['heldout'][k]:.3f}" for k in r["labels"]
            ),
            "",
            "| predictor | accuracy | macro-F1 | ECE | ECE (T) |",
            "|---|---:|---:|---:|---:|",
            f"| head (T = {h['temperature']:.2f}) | {_fmt(h['accuracy'])} | {_fmt(h['macro_f1'])} | "
            f"{_fmt(h['ece'])} | {_fmt(h['ece_calibrated'])} |",
            f"| majority ({bl['majority']['label']}) | {_fmt(bl['majority']['accuracy'])} | "
            f"{_fmt(bl['majority']['macro_f1'])} | {_fmt(bl['majority']['ece'])} | - |",
            f"| fixed split ({bl['fixed_split']['label']}) | {_fmt(bl['fixed_split']['accuracy'])} | "
            f"{_fmt(bl['fixed_split']['macro_f1'])} | - | - |",
            f"| entropy (logit lens, layer {b['shallow']}) | {_fmt(bl['entropy']['accuracy'])} | "
            f"{_fmt(bl['entropy']['macro_f1'])} | - | - |",
            "",
            "Head per-class F1: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in h["per_class_f1"].items())
            + f"; train-fit accuracy {_fmt(r['head_train_fit']['accuracy'])}.",
            "",
            "Head confusion on held-out positions (rows true, columns predicted):",
            "",
            "| true \\ predicted | " + " | ".join(r["labels"]) + " |",
            "|---|" + "---:|" * len(r["labels"]),
        ]
        for k, row in zip(r["labels"], h["confusion"]):
            lines.append(f"| {k} | " + " | ".join(str(v) for v in row) + " |")
        lines += [
            "",
            "Abstain region (calibrated top-1 probability below the threshold abstains):",
            "",
            "| threshold | coverage | accuracy |",
            "|---:|---:|---:|",
        ]
        for a in h["abstain_calibrated"]:
            lines.append(f"| {a['threshold']:g} | {_fmt(a['coverage'])} | {_fmt(a['accuracy'])} |")
    lines += ["", "Timings: " + ", ".join(f"{k} {v:g}" for k, v in doc["timings"].items()) + "."]
    return "\n".join(lines) + "\n"
