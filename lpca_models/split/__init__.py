"""Split inference (the AGP track), part one: which layer's state is already good enough.

    from lpca_models.split import LensReportConfig, run_lens_report
    run_lens_report(backend, LensReportConfig(), "runs/split/smollm2")   # report.md/json/png + lens/

- `lens`: the logit lens and the tuned lens (one affine translator per layer), its checkpoint;
- `capture`: the prompt set (task views, HumanEval) and hidden states at every layer;
- `metrics`: KL to the final distribution, top-1 agreement and margin, per position and layer;
- `train`: training a tuned lens (torch); `oracle`: routing labels from the lenses;
- `report`: the per-layer sufficiency report and the candidate split layers;
- `heads`: route and vitality heads over a few layers' states (train on torch, run anywhere),
  their checkpoint; `calibration`: accuracy, macro-F1, confusion, ECE, temperature, abstention;
  `routing`: vitality labels, prompt-level splits, entropy-only routing;
  `heads_report`: training and measuring both heads against the baselines.

Nothing here imports torch or MLX at module level; lenses run on either backend.
"""

from __future__ import annotations

from lpca_models.split.calibration import (
    abstain_curve,
    accuracy,
    confusion,
    ece,
    fit_temperature,
    macro_f1,
)
from lpca_models.split.capture import Captured, LensPrompt, capture, humaneval_prompts, task_prompts
from lpca_models.split.errors import (
    HeadCheckpointError,
    HeadFingerprintError,
    HeadLabelError,
    HeadWidthError,
    LensCheckpointError,
    LensFingerprintError,
    LensWidthError,
    OracleError,
    SplitError,
    SplitLayerError,
)
from lpca_models.split.heads import HeadTraining, RouteHead, load_head, train_head
from lpca_models.split.heads_report import HeadsData, HeadsReportConfig, prepare_heads_data, run_heads_report
from lpca_models.split.lens import TunedLens, load_lens, log_softmax, logit_lens
from lpca_models.split.metrics import LayerStats, compare, lens_stats, stats_from_distributions
from lpca_models.split.oracle import (
    LABELS,
    Boundaries,
    OracleThresholds,
    balance,
    exit_layers,
    oracle_labels,
    sufficient,
    sweep,
)
from lpca_models.split.report import LensReportConfig, choose_boundaries, run_lens_report, split_map
from lpca_models.split.routing import (
    VITALITY_LABELS,
    calibration_rows,
    fit_thresholds,
    head_layers,
    lens_entropy,
    vitality_labels,
)
from lpca_models.split.train import LensTraining, train_tuned_lens

__all__ = [
    "LABELS",
    "VITALITY_LABELS",
    "Boundaries",
    "Captured",
    "HeadCheckpointError",
    "HeadFingerprintError",
    "HeadLabelError",
    "HeadTraining",
    "HeadWidthError",
    "HeadsData",
    "HeadsReportConfig",
    "LayerStats",
    "LensCheckpointError",
    "LensFingerprintError",
    "LensPrompt",
    "LensReportConfig",
    "LensTraining",
    "LensWidthError",
    "OracleError",
    "OracleThresholds",
    "RouteHead",
    "SplitError",
    "SplitLayerError",
    "TunedLens",
    "abstain_curve",
    "accuracy",
    "balance",
    "calibration_rows",
    "capture",
    "choose_boundaries",
    "compare",
    "confusion",
    "ece",
    "exit_layers",
    "fit_temperature",
    "fit_thresholds",
    "head_layers",
    "humaneval_prompts",
    "lens_entropy",
    "lens_stats",
    "load_head",
    "load_lens",
    "log_softmax",
    "logit_lens",
    "macro_f1",
    "oracle_labels",
    "prepare_heads_data",
    "run_heads_report",
    "run_lens_report",
    "split_map",
    "stats_from_distributions",
    "sufficient",
    "sweep",
    "task_prompts",
    "train_head",
    "train_tuned_lens",
    "vitality_labels",
]
