"""Typed errors of split inference (lenses, oracle labels, route heads); each names what was
expected and what arrived.

Every one is a `ModelError` (so an `LPCAError`) and a `ValueError`; the layer and width
errors are also the model layer's `LayerError` / `HiddenSizeError`, the fingerprint error
its `FingerprintMismatchError`, so callers that catch those keep working.
"""

from __future__ import annotations

from lpca_models.errors import FingerprintMismatchError, HiddenSizeError, LayerError, ModelError


class SplitError(ModelError, ValueError):
    """Base class of split-inference errors (lenses, sufficiency reports, oracle labels)."""


class SplitLayerError(SplitError, LayerError):
    """A layer index is outside what a lens or a boundary allows (0..n_layers)."""


class LensWidthError(SplitError, HiddenSizeError):
    """Hidden states (or a checkpoint's translators) are not of the model's hidden size."""


class LensFingerprintError(SplitError, FingerprintMismatchError):
    """A tuned lens was trained on another model than the backend it is used with."""


class LensCheckpointError(SplitError):
    """A tuned-lens checkpoint is missing, truncated, corrupt or of an unknown format."""


class OracleError(SplitError):
    """Oracle thresholds, boundaries or per-layer distributions are malformed."""


class HeadCheckpointError(SplitError):
    """A route or vitality head checkpoint is missing, truncated, corrupt or of an unknown format."""


class HeadFingerprintError(SplitError, FingerprintMismatchError):
    """A head was trained on the hidden states of another model than the one it is used with."""


class HeadWidthError(SplitError, HiddenSizeError):
    """Hidden states (or a head's weights) are not of the width the head reads."""


class HeadLabelError(SplitError):
    """Labels outside a head's label set, or a checkpoint whose label set is not the one expected."""
