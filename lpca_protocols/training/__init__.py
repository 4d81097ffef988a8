"""Training of learned latent codecs: episode datasets, the trainer, the gate, the `train` CLI.

    from lpca_protocols.training import load_config, publish, run_gate, train_codec
    result = train_codec(load_config("codec.toml"))          # -> result.checkpoint (a directory)
    report = run_gate(result.checkpoint, env_id="lpca/SecretRelay-v0", model="smollm2-135m")
    assert report.passed, report.table()
    publish(result.checkpoint, "relay-k8")                   # then: latent-prefix checkpoint=relay-k8

Importing this package is light; torch loads when a run starts.
"""

from __future__ import annotations

from lpca_protocols.packet_codec import UnknownCheckpointError, codecs_dir, list_codecs, publish, resolve
from lpca_protocols.training.config import TrainConfig, TrainConfigError, load_config, parse_config
from lpca_protocols.training.dataset import DatasetError, DatasetSpec, EpisodeData, collect, load
from lpca_protocols.training.gate import ControlResult, GateReport, run_gate, two_proportion_p
from lpca_protocols.training.metrics import CodebookUsage, codebook_usage, slot_usage
from lpca_protocols.training.trainer import TrainError, TrainResult, train_codec

#: The old name of `packet_codec.UnknownCheckpointError` (a codec name no published checkpoint has).
UnknownCodecError = UnknownCheckpointError

__all__ = [
    "CodebookUsage",
    "ControlResult",
    "DatasetError",
    "DatasetSpec",
    "EpisodeData",
    "GateReport",
    "TrainConfig",
    "TrainConfigError",
    "TrainError",
    "TrainResult",
    "UnknownCodecError",
    "codebook_usage",
    "codecs_dir",
    "collect",
    "list_codecs",
    "load",
    "load_config",
    "parse_config",
    "publish",
    "resolve",
    "run_gate",
    "slot_usage",
    "train_codec",
    "two_proportion_p",
]
