"""lpca_models: white-box model backends (PyTorch/transformers, MLX/mlx-lm) and the model zoo.

    import lpca_models
    backend = lpca_models.load("smollm2-135m")                 # TorchBackend
    backend = lpca_models.load("smollm2-135m", backend="mlx")  # MlxBackend, same directory

Backends are imported lazily, so a machine with only one framework installed can
use the other's models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpca_models.backend import Backend
from lpca_models.errors import (
    ConditioningError,
    FingerprintMismatchError,
    HiddenSizeError,
    LayerError,
    MissingPackageError,
    ModelError,
    PositionError,
    UnknownModelError,
)
from lpca_models.types import (
    GREEDY,
    PREFIX_MARKER,
    ChatMessage,
    Conditioning,
    Forward,
    ForwardRequest,
    Generation,
    Injection,
    KVCache,
    ModelInfo,
    Sampling,
)

__version__ = "0.1.0"

BACKENDS = ("torch", "mlx")


def load(model_id: str | Path, backend: str = "torch", **kwargs: Any) -> Backend:
    """Load a model, converting it into the cache on first use.

    ``model_id`` is a zoo id, a local Hugging Face causal-LM directory or ``.gguf`` file
    (converted once, named by its content), or a zoo cache directory (used as it is).
    """
    from lpca_models import zoo

    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    path = zoo.ensure_cached(model_id)
    is_zoo_id = isinstance(model_id, str) and any(s.id == model_id for s in zoo.list_models())
    name = kwargs.pop("name", model_id if is_zoo_id else None)
    if backend == "torch":
        from lpca_models.torch_backend import TorchBackend

        return TorchBackend(path, name=name, **kwargs)
    from lpca_models.mlx_backend import MlxBackend

    return MlxBackend(path, name=name, **kwargs)


__all__ = [
    "BACKENDS",
    "GREEDY",
    "PREFIX_MARKER",
    "Backend",
    "ChatMessage",
    "Conditioning",
    "ConditioningError",
    "FingerprintMismatchError",
    "Forward",
    "ForwardRequest",
    "Generation",
    "HiddenSizeError",
    "Injection",
    "KVCache",
    "LayerError",
    "MissingPackageError",
    "ModelError",
    "ModelInfo",
    "PositionError",
    "Sampling",
    "UnknownModelError",
    "load",
]
