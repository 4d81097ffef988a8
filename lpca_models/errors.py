"""Typed errors of the model layer; each names what was expected and what arrived."""

from __future__ import annotations

from lpca_envs.errors import LPCAError


class ModelError(LPCAError):
    """Base class of model and backend errors."""


class UnknownModelError(ModelError, KeyError):
    """A model id is not in the zoo; the message lists the known ids."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingPackageError(ModelError, ImportError):
    """A package a model or backend needs is not installed; the message has the pip command."""


class LayerError(ModelError, IndexError):
    """A layer index is outside 0..n_layers (0 = the embedding output)."""


class PositionError(ModelError, IndexError):
    """A token position is outside the sequence."""


class HiddenSizeError(ModelError, ValueError):
    """An array's last dimension is not the model's hidden size (or its shape is wrong)."""


class FingerprintMismatchError(ModelError, ValueError):
    """A KV cache or packet was produced by a different model than the one receiving it."""


class ConditioningError(ModelError, ValueError):
    """A conditioning combination the backend cannot honour (e.g. a batched KV cache)."""


class ModelPackageError(ModelError):
    """An installed model package is not the one the zoo pinned (version, files or bytes differ).

    The message names the expected ``package==version`` list and the command that reinstalls it.
    """


class ModelChecksumError(ModelPackageError, ValueError):
    """A model file assembled from packages has the wrong size or sha256 (truncated or changed)."""


class LocalModelError(ModelError, ValueError):
    """A local path given as a model is not one the zoo can convert (not a causal LM, unknown format)."""
