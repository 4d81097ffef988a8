"""Split inference (the AGP track), part one: which layer's state is already good enough.

    from lpca_models.split import LensReportConfig, run_lens_report
    run_lens_report(backend, LensReportConfig(), "runs/split/smollm2")   # report.md/json/png + lens/

- `lens`: the logit lens and the tuned lens (one affine translator per layer), its checkpoint;
- `capture`: the prompt set (task views, HumanEval) and hidden states at every layer;
- `metrics`: KL to the final distribution, top-1 agreement and margin, per position and layer;
- `train`: training a tuned lens (torch); `oracle`: routing labels from the lenses;
- `report`: the per-layer sufficiency report and the candidate split layers.

Nothing here imports torch or MLX at module level; lenses run on either backend.
"""

from __future__ import annotations

from lpca_models.split.capture import Captured, LensPrompt, capture, humaneval_prompts, task_prompts
from lpca_models.split.errors import (
    LensCheckpointError,
    LensFingerprintError,
    LensWidthError,
    OracleError,
    SplitError,
    SplitLayerError,
)
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
from lpca_models.split.train import LensTraining, train_tuned_lens

__all__ = [
    "LABELS",
    "Boundaries",
    "Captured",
    "LayerStats",
    "LensCheckpointError",
    "LensFingerprintError",
    "LensPrompt",
    "LensReportConfig",
    "LensTraining",
    "LensWidthError",
    "OracleError",
    "OracleThresholds",
    "SplitError",
    "SplitLayerError",
    "TunedLens",
    "balance",
    "capture",
    "choose_boundaries",
    "compare",
    "exit_layers",
    "humaneval_prompts",
    "lens_stats",
    "load_lens",
    "log_softmax",
    "logit_lens",
    "oracle_labels",
    "run_lens_report",
    "split_map",
    "stats_from_distributions",
    "sufficient",
    "sweep",
    "task_prompts",
    "train_tuned_lens",
]
