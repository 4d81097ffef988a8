"""The learned packet codec: the trainable resampler + bottleneck that `latent-prefix` and
`latent-codebook` run and `lpca train codec` trains, with its checkpoints and registry.

A codec is a Perceiver-style resampler and a decoder:

    sender hidden states [T, d_src] --(standardized, k learned queries, cross-attention)--> packet [k, m]
    packet [k, m] --(optional quantizer, below)--> symbols --> packet [k, m]
    packet [k, m] --(per-slot MLP, optional tanh x learned scale)--> k receiver vectors [k, d_out]

The receiver vectors are prefix embeddings at the prompt's marker (``inject_layer`` None),
or are combined (``inject_mode``: replace / add) into the receiver's residual stream after
block ``inject_layer`` at k placeholder positions (zero embeddings) at the marker.

Quantizers (kind='codebook'); a message is ``symbols_per_message`` indices of
``ceil(log2 codebook_size)`` bits each:

- ``vq``: each slot's nearest of its own K rows (k symbols);
- ``rvq``: per slot, ``rvq_levels`` (Q) residual stages of K rows each, greedy (k x Q symbols);
- ``fsq``: per slot, a linear map to ``len(fsq_levels)`` scalars, each bounded and rounded to
  its level count, then mapped back (k symbols of ``prod(fsq_levels)`` values).

Training uses `vector-quantize-pytorch`; its codebooks and projections are exported into
the checkpoint, and inference (`PacketNet`, `CodecRunner`) never imports the library.

The same weights run on torch (`PacketNet`, an ``nn.Module``, used for training) and on
MLX (`mlx_encode` / `mlx_decode`, a direct port); both read one safetensors file. A checkpoint
is a directory holding ``codec.safetensors`` (float32 weights) and ``codec.json`` (the
`CodecSpec`, the base model's fingerprint, the weights' sha256 and training metadata).

Published checkpoints have names (`publish`, `resolve`, `list_codecs`; directory
`codecs_dir()`: ``$LPCA_CODECS_DIR``, else ``<cache>/lpca/codecs``).

Layout (import everything from this package; the modules are private): `_spec` (`CodecSpec`,
errors), `_checkpoint` (save/load), `_quantize` (the numpy quantizers inference uses),
`_torch` (`PacketNet`), `_mlx` (the MLX port), `_runner` (`CodecRunner`), `_registry`
(names), `_train_quantizers` (the vector-quantize-pytorch quantizers training uses).
This package imports neither `lpca_protocols.channels` nor `lpca_protocols.training`.
"""

from __future__ import annotations

from lpca_protocols.packet_codec._checkpoint import (
    CONFIG,
    FORMAT,
    WEIGHTS,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from lpca_protocols.packet_codec._mlx import mlx_decode, mlx_encode
from lpca_protocols.packet_codec._quantize import QUANT_KEYS, dequantize, quantize
from lpca_protocols.packet_codec._registry import (
    CODECS_ENV,
    CodecEntry,
    UnknownCheckpointError,
    check_name,
    codecs_dir,
    known_names,
    list_codecs,
    publish,
    record_gate,
    resolve,
)
from lpca_protocols.packet_codec._runner import CodecRunner
from lpca_protocols.packet_codec._spec import (
    INJECT_MODES,
    MAX_SYMBOLS,
    QUANTIZERS,
    CheckpointError,
    CheckpointMismatchError,
    CodecSpec,
    check_fsq_levels,
    fsq_tables,
)
from lpca_protocols.packet_codec._torch import torch_net
from lpca_protocols.packet_codec._train_quantizers import TrainQuantizer, kmeans, make_quantizer

__all__ = [
    "CODECS_ENV",
    "CONFIG",
    "FORMAT",
    "INJECT_MODES",
    "MAX_SYMBOLS",
    "QUANTIZERS",
    "QUANT_KEYS",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatchError",
    "CodecEntry",
    "CodecRunner",
    "CodecSpec",
    "TrainQuantizer",
    "UnknownCheckpointError",
    "check_fsq_levels",
    "check_name",
    "codecs_dir",
    "dequantize",
    "fsq_tables",
    "kmeans",
    "known_names",
    "list_codecs",
    "load_checkpoint",
    "make_quantizer",
    "mlx_decode",
    "mlx_encode",
    "publish",
    "quantize",
    "record_gate",
    "resolve",
    "save_checkpoint",
    "torch_net",
]
