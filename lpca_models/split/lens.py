"""Logit lens and tuned lens: what the model would predict if it stopped after block ``l``.

- The **logit lens** at layer ``l`` is ``unembed(h_l)``: the backend's final norm and LM head
  applied to the residual stream after block ``l`` (layer 0 = the embedding output).
- The **tuned lens** (Belrose et al. 2023, AlignmentResearch/tuned-lens) first moves ``h_l``
  through one learned affine translator per layer, ``h -> h + A_l h + b_l``, initialised to
  the identity (``A_l = 0, b_l = 0``: the logit lens) and trained to minimise
  ``KL(final || lens_l)`` (`lpca_models.split.train`). The last layer has no translator:
  its lens *is* the model's next-token distribution.

A `TunedLens` holds float32 numpy arrays, so it runs on every backend through the public
`Backend.unembed`; `translate` also accepts mlx arrays (and returns mlx arrays). A checkpoint
is a directory of ``lens.safetensors`` + ``lens.json`` carrying the model's name and
fingerprint; `load_lens` refuses a file of another model, width or layer count.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_models.backend import Backend
from lpca_models.split.errors import (
    LensCheckpointError,
    LensFingerprintError,
    LensWidthError,
    SplitLayerError,
)
from lpca_models.types import ModelInfo

FORMAT = "lpca-tuned-lens/1"
WEIGHTS = "lens.safetensors"
CONFIG = "lens.json"


def check_layer(layer: Any, n_layers: int, what: str = "layer") -> int:
    """`layer` as an int in ``0..n_layers``, or a `SplitLayerError` naming the range."""
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer <= n_layers:
        raise SplitLayerError(
            f"{what} {layer!r} is out of range: expected 0..{n_layers} "
            "(0 = embedding output, l = residual after block l)"
        )
    return int(layer)


def check_hidden(hidden: Any, hidden_size: int, what: str = "hidden states") -> np.ndarray:
    """`hidden` as a finite float32 array ``[..., d]``, or a `LensWidthError`."""
    h = np.asarray(hidden)
    if h.ndim == 0 or h.shape[-1] != hidden_size or not np.issubdtype(h.dtype, np.floating):
        raise LensWidthError(f"{what} must be a float array [..., {hidden_size}]; got {h.dtype} {h.shape}")
    if not np.isfinite(h).all():
        raise LensWidthError(f"{what} contain NaN or infinite values")
    return h.astype(np.float32, copy=False)


def logit_lens(backend: Backend, hidden: np.ndarray, layer: int) -> np.ndarray:
    """Logits ``[..., V]`` of the logit lens on states ``[..., d]`` taken after block `layer`."""
    check_layer(layer, backend.info.n_layers)
    return backend.unembed(check_hidden(hidden, backend.info.hidden_size))


@dataclass
class TunedLens:
    """One affine translator per layer ``0..n_layers-1`` (``weight[l]`` is ``A_l``, ``bias[l]`` is
    ``b_l``); layer ``n_layers`` is the identity. ``meta`` records how it was trained."""

    model: str
    fingerprint: str
    weight: np.ndarray  # [L, d, d] float32
    bias: np.ndarray  # [L, d] float32
    meta: dict[str, Any] = field(default_factory=dict)
    _mx: tuple[Any, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weight, np.float32), np.asarray(self.bias, np.float32)
        if w.ndim != 3 or w.shape[1] != w.shape[2] or b.shape != (w.shape[0], w.shape[1]):
            raise LensWidthError(
                f"tuned lens weights must be [L, d, d] and biases [L, d]; got {w.shape} and {b.shape}"
            )
        self.weight, self.bias = w, b

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def identity(cls, info: ModelInfo) -> TunedLens:
        """The untrained lens (every translator zero): equal to the logit lens at every layer."""
        d, n = info.hidden_size, info.n_layers
        return cls(info.name, info.fingerprint, np.zeros((n, d, d), np.float32), np.zeros((n, d), np.float32))

    def check_model(self, info: ModelInfo) -> None:
        """Refuse a model other than the one this lens was trained on (fingerprint, width, depth)."""
        if info.fingerprint != self.fingerprint:
            raise LensFingerprintError(
                f"tuned lens was trained on {self.model} ({self.fingerprint[:12]}...), "
                f"this backend is {info.name} ({info.fingerprint[:12]}...)"
            )
        if (info.n_layers, info.hidden_size) != (self.n_layers, self.hidden_size):
            raise LensWidthError(
                f"tuned lens has {self.n_layers} translators of width {self.hidden_size}; "
                f"{info.name} has {info.n_layers} layers of width {info.hidden_size}"
            )

    def translate(self, hidden: Any, layer: int) -> Any:
        """``h + A_l h + b_l`` on states ``[..., d]`` after block `layer` (numpy in, numpy out; an mlx
        array in, an mlx array out). The last layer is returned unchanged."""
        layer = check_layer(layer, self.n_layers)
        if type(hidden).__module__.startswith("mlx"):
            if hidden.shape[-1] != self.hidden_size:
                raise LensWidthError(
                    f"hidden states must be [..., {self.hidden_size}]; got mlx {tuple(hidden.shape)}"
                )
            if layer == self.n_layers:
                return hidden
            w, b = self._mlx()
            return hidden + hidden @ w[layer].T + b[layer]
        h = check_hidden(hidden, self.hidden_size)
        if layer == self.n_layers:
            return h
        return h + h @ self.weight[layer].T + self.bias[layer]

    def _mlx(self) -> tuple[Any, Any]:
        if self._mx is None:
            import mlx.core as mx

            self._mx = (mx.array(self.weight), mx.array(self.bias))
        return self._mx

    def logits(self, backend: Backend, hidden: Any, layer: int) -> np.ndarray:
        """Logits ``[..., V]`` of the tuned lens on states after block `layer`, on `backend`."""
        self.check_model(backend.info)
        return backend.unembed(np.asarray(self.translate(hidden, layer), dtype=np.float32))

    # -- checkpoint ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``lens.safetensors`` then ``lens.json`` (its presence marks a complete checkpoint)."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (WEIGHTS + ".tmp")
        save_file({"weight": np.ascontiguousarray(self.weight), "bias": np.ascontiguousarray(self.bias)}, tmp)
        tmp.replace(path / WEIGHTS)
        doc = {
            "format": FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "weights_sha256": hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest(),
            "meta": self.meta,
        }
        tmp = path / (CONFIG + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
        tmp.replace(path / CONFIG)
        return path


def load_lens(path: str | Path, info: ModelInfo | None = None) -> TunedLens:
    """Read a tuned-lens checkpoint directory; with `info`, also refuse another model.

    Every defect is a typed error naming it: `LensCheckpointError` (missing, truncated, corrupt,
    unknown format), `LensWidthError` (shapes), `LensFingerprintError` (another model).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    cfg, wfile = path / CONFIG, path / WEIGHTS
    if not cfg.is_file() or not wfile.is_file():
        raise LensCheckpointError(f"{path} is not a tuned-lens checkpoint: expected {CONFIG} and {WEIGHTS}")
    try:
        doc = json.loads(cfg.read_text())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise LensCheckpointError(f"{cfg}: format {got!r}, expected {FORMAT!r}")
        model, fp = str(doc["model"]), str(doc["fingerprint"])
        n, d = int(doc["n_layers"]), int(doc["hidden_size"])
        digest_want = str(doc["weights_sha256"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, LensCheckpointError):
            raise
        raise LensCheckpointError(
            f"{cfg} is not a valid tuned-lens config ({type(e).__name__}: {e})"
        ) from None
    data = wfile.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != digest_want:
        raise LensCheckpointError(
            f"{wfile} is truncated or corrupt: {len(data)} bytes whose sha256 {digest[:12]}... differs "
            f"from the {digest_want[:12]}... recorded in {CONFIG}"
        )
    try:
        arrays = load(data)
    except (SafetensorError, ValueError) as e:
        raise LensCheckpointError(f"{wfile} is not a readable safetensors file: {e}") from None
    if set(arrays) != {"weight", "bias"}:
        raise LensCheckpointError(f"{wfile} holds {sorted(arrays)}, expected ['bias', 'weight']")
    w, b = arrays["weight"], arrays["bias"]
    if w.shape != (n, d, d) or b.shape != (n, d):
        raise LensWidthError(
            f"{wfile} has weight {w.shape} and bias {b.shape}; its config says {n} layers of width {d} "
            f"(expected ({n}, {d}, {d}) and ({n}, {d}))"
        )
    lens = TunedLens(model, fp, w, b, dict(doc.get("meta", {})))
    if info is not None:
        lens.check_model(info)
    return lens


# -- distributions -----------------------------------------------------------------------
def log_softmax(logits: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Row-wise log-probabilities of ``[..., V]`` logits (float32 by default: a 50k vocabulary
    over thousands of positions and dozens of layers; the sums are taken in float64)."""
    x = np.asarray(logits, dtype=dtype)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(dtype)
