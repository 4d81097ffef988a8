"""Route and vitality heads: small classifiers over the residual stream at a few chosen layers.

A `RouteHead` reads the states after blocks ``layers`` (1-3 of them, chosen from the sufficiency
map at or below the shallow boundary, so the decision is available where it is taken),
standardises each feature with the train side's mean and standard deviation, concatenates them
and applies a linear map or a one-hidden-layer ReLU MLP; its logits are divided by a
temperature (1 until `calibration.fit_temperature` sets it) before the softmax.

- The **route head** predicts the oracle label (`oracle.LABELS`) of a position.
- The **vitality head** predicts `VITALITY_LABELS` (see `vitality_labels` in `routing`).

Training is torch (`train_head`, AdamW, class-balanced cross-entropy by default, fixed seeds);
inference is numpy, so a head runs on states from any backend (numpy, torch or mlx arrays in).
A checkpoint is a directory of ``head.safetensors`` + ``head.json`` holding the model's name
and fingerprint, its depth and width, the layers, the label set and the temperature;
`load_head` refuses another model, a width or depth that differs, a truncated file or a label
set other than the expected one, each with its typed error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_models.split.calibration import softmax
from lpca_models.split.errors import (
    HeadCheckpointError,
    HeadFingerprintError,
    HeadLabelError,
    HeadWidthError,
    SplitError,
    SplitLayerError,
)
from lpca_models.split.lens import check_layer
from lpca_models.types import ModelInfo

FORMAT = "lpca-route-head/1"
WEIGHTS = "head.safetensors"
CONFIG = "head.json"


def to_numpy(x: Any) -> np.ndarray:
    """A numpy float32 view of a numpy, torch or mlx array."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        return x.detach().float().cpu().numpy()
    if mod.startswith("mlx"):
        import mlx.core as mx

        return np.array(x.astype(mx.float32))
    return np.asarray(x, dtype=np.float32)


@dataclass(frozen=True)
class HeadTraining:
    """How a head is trained."""

    hidden: int = 64
    """Width of the MLP's hidden layer (0: a linear head)."""
    steps: int = 300
    """Optimizer steps."""
    batch: int = 128
    """Positions per step (all of them when fewer)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.05
    """Decoupled weight decay (the heads see hundreds of positions of thousands of features)."""
    balanced: bool = True
    """Weigh each class by the inverse of its train frequency (macro-F1 is the target)."""
    seed: int = 0
    """Seeds the initialisation and the batch draws."""

    def check(self) -> None:
        if self.hidden < 0 or self.steps < 1 or self.batch < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise SplitError(
                "head training needs hidden >= 0, steps >= 1, batch >= 1, lr > 0, weight_decay >= 0; "
                f"got {self}"
            )


@dataclass
class RouteHead:
    """A classifier over the standardised states at `layers` of one model (see the module docstring).

    ``params`` alternates weights ``[out, in]`` and biases ``[out]``: one pair (linear) or two
    (MLP, ReLU between)."""

    model: str
    fingerprint: str
    n_layers: int
    hidden_size: int
    layers: tuple[int, ...]
    labels: tuple[str, ...]
    mean: np.ndarray  # [k * d]
    std: np.ndarray  # [k * d]
    params: tuple[np.ndarray, ...]
    temperature: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(check_layer(x, self.n_layers, "head layer") for x in self.layers)
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise SplitLayerError(f"a head reads one or more distinct layers; got {self.layers}")
        self.labels = tuple(str(x) for x in self.labels)
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise HeadLabelError(f"a head needs two or more distinct labels; got {self.labels}")
        width = len(self.layers) * self.hidden_size
        self.mean = np.asarray(self.mean, np.float32)
        self.std = np.asarray(self.std, np.float32)
        self.params = tuple(np.asarray(p, np.float32) for p in self.params)
        shapes = [p.shape for p in self.params]
        ok = self.mean.shape == (width,) and self.std.shape == (width,) and len(shapes) in (2, 4)
        if ok:
            fan_in = width
            for w, b in zip(shapes[::2], shapes[1::2]):
                ok &= len(w) == 2 and w[1] == fan_in and b == (w[0],)
                fan_in = w[0]
            ok &= fan_in == len(self.labels)
        if not ok:
            raise HeadWidthError(
                f"head weights do not read {len(self.layers)} layers of width {self.hidden_size} into "
                f"{len(self.labels)} labels: mean {self.mean.shape}, std {self.std.shape}, params {shapes}"
            )
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise SplitError(f"temperature must be finite and > 0; got {self.temperature}")

    # -- inference -----------------------------------------------------------------------
    def features(self, hidden: Any) -> np.ndarray:
        """``[N, k*d]`` standardised features from states ``[N, L+1, d]`` (all layers, as
        `Captured.hidden`) or a mapping ``{layer: [N, d]}`` holding at least `layers`."""
        if isinstance(hidden, Mapping):
            missing = [x for x in self.layers if x not in hidden]
            if missing:
                raise SplitLayerError(f"head reads layers {self.layers}; the states lack {missing}")
            parts = [to_numpy(hidden[x]) for x in self.layers]
            if any(p.ndim != 2 for p in parts) or len({len(p) for p in parts}) != 1:
                raise HeadWidthError(
                    f"per-layer states must be [N, d] of one N; got {[p.shape for p in parts]}"
                )
            h = np.stack(parts, axis=1)
        else:
            full = to_numpy(hidden)
            if full.ndim != 3:
                raise HeadWidthError(f"states must be [N, L+1, {self.hidden_size}]; got {full.shape}")
            if full.shape[1] != self.n_layers + 1:
                raise SplitLayerError(
                    f"states hold layers 0..{full.shape[1] - 1}; the head's model has 0..{self.n_layers}"
                )
            h = full[:, list(self.layers)]
        if h.shape[-1] != self.hidden_size:
            raise HeadWidthError(f"states must be [..., {self.hidden_size}]; got {h.shape}")
        if not np.isfinite(h).all():
            raise HeadWidthError("states contain NaN or infinite values")
        return (h.reshape(len(h), -1) - self.mean) / self.std

    def logits(self, hidden: Any) -> np.ndarray:
        """Uncalibrated logits ``[N, C]`` (before the temperature)."""
        x = self.features(hidden)
        for i in range(0, len(self.params), 2):
            x = x @ self.params[i].T + self.params[i + 1]
            if i + 2 < len(self.params):
                x = np.maximum(x, 0.0)
        return x

    def probs(self, hidden: Any, calibrated: bool = True) -> np.ndarray:
        """``[N, C]`` class probabilities (divided by the temperature unless `calibrated` is off)."""
        return softmax(self.logits(hidden), self.temperature if calibrated else 1.0)

    def predict(self, hidden: Any) -> list[str]:
        return [self.labels[i] for i in self.logits(hidden).argmax(-1)]

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        """Class indices of `labels`, or a `HeadLabelError` naming those outside the label set."""
        index = {k: i for i, k in enumerate(self.labels)}
        bad = sorted({x for x in labels if x not in index})
        if bad:
            raise HeadLabelError(f"labels {bad} are not in the head's label set {list(self.labels)}")
        return np.array([index[x] for x in labels], dtype=np.int64)

    def check_model(self, info: ModelInfo) -> None:
        """Refuse a model other than the one whose states this head was trained on."""
        if info.fingerprint != self.fingerprint:
            raise HeadFingerprintError(
                f"head was trained on {self.model} ({self.fingerprint[:12]}...), "
                f"this backend is {info.name} ({info.fingerprint[:12]}...)"
            )
        if (info.n_layers, info.hidden_size) != (self.n_layers, self.hidden_size):
            raise HeadWidthError(
                f"head reads {self.n_layers} layers of width {self.hidden_size}; "
                f"{info.name} has {info.n_layers} layers of width {info.hidden_size}"
            )

    # -- checkpoint ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``head.safetensors`` then ``head.json`` (its presence marks a complete checkpoint)."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean, "std": self.std} | {f"p{i}": p for i, p in enumerate(self.params)}
        tmp = path / (WEIGHTS + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp)
        tmp.replace(path / WEIGHTS)
        doc = {
            "format": FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "layers": list(self.layers),
            "labels": list(self.labels),
            "temperature": self.temperature,
            "n_params": len(self.params),
            "weights_sha256": hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest(),
            "meta": self.meta,
        }
        tmp = path / (CONFIG + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
        tmp.replace(path / CONFIG)
        return path


def load_head(
    path: str | Path, info: ModelInfo | None = None, labels: Sequence[str] | None = None
) -> RouteHead:
    """Read a head checkpoint; with `info` refuse another model, with `labels` another label set.

    `HeadCheckpointError` (missing, truncated, corrupt, unknown format), `HeadWidthError`
    (shapes), `SplitLayerError` (a layer outside the model), `HeadFingerprintError`,
    `HeadLabelError`.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    cfg, wfile = path / CONFIG, path / WEIGHTS
    if not cfg.is_file() or not wfile.is_file():
        raise HeadCheckpointError(f"{path} is not a head checkpoint: expected {CONFIG} and {WEIGHTS}")
    try:
        doc = json.loads(cfg.read_text())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise HeadCheckpointError(f"{cfg}: format {got!r}, expected {FORMAT!r}")
        head_args = {
            "model": str(doc["model"]),
            "fingerprint": str(doc["fingerprint"]),
            "n_layers": int(doc["n_layers"]),
            "hidden_size": int(doc["hidden_size"]),
            "layers": tuple(doc["layers"]),
            "labels": tuple(str(x) for x in doc["labels"]),
            "temperature": float(doc["temperature"]),
            "meta": dict(doc.get("meta", {})),
        }
        n_params, digest_want = int(doc["n_params"]), str(doc["weights_sha256"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, HeadCheckpointError):
            raise
        raise HeadCheckpointError(f"{cfg} is not a valid head config ({type(e).__name__}: {e})") from None
    data = wfile.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != digest_want:
        raise HeadCheckpointError(
            f"{wfile} is truncated or corrupt: {len(data)} bytes whose sha256 {digest[:12]}... differs "
            f"from the {digest_want[:12]}... recorded in {CONFIG}"
        )
    try:
        arrays = load(data)
    except (SafetensorError, ValueError) as e:
        raise HeadCheckpointError(f"{wfile} is not a readable safetensors file: {e}") from None
    want = {"mean", "std"} | {f"p{i}" for i in range(n_params)}
    if set(arrays) != want:
        raise HeadCheckpointError(f"{wfile} holds {sorted(arrays)}, expected {sorted(want)}")
    if labels is not None and tuple(labels) != head_args["labels"]:
        raise HeadLabelError(f"{path} predicts {list(head_args['labels'])}, expected {list(labels)}")
    params = tuple(arrays[f"p{i}"] for i in range(n_params))
    head = RouteHead(mean=arrays["mean"], std=arrays["std"], params=params, **head_args)
    if info is not None:
        head.check_model(info)
    return head


def train_head(
    info: ModelInfo,
    hidden: np.ndarray,
    labels: Sequence[str],
    layers: Sequence[int],
    label_set: Sequence[str],
    config: HeadTraining = HeadTraining(),
) -> RouteHead:
    """Train a head on states ``[N, L+1, d]`` of model `info` and one label per row (torch)."""
    import torch

    config.check()
    n = len(hidden)
    template = RouteHead(  # validates layers, labels and width before any work
        info.name,
        info.fingerprint,
        info.n_layers,
        info.hidden_size,
        tuple(layers),
        tuple(label_set),
        np.zeros(len(layers) * info.hidden_size),
        np.ones(len(layers) * info.hidden_size),
        (np.zeros((len(label_set), len(layers) * info.hidden_size)), np.zeros(len(label_set))),
    )
    if n == 0 or len(labels) != n:
        raise SplitError(
            f"need one label per state and at least one state; got {n} states, {len(labels)} labels"
        )
    y = template.encode(labels)
    raw = template.features(hidden)  # mean 0, std 1 so far: the raw states at `layers`
    mean, std = raw.mean(0), raw.std(0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray((raw - mean) / std, dtype=np.float32))
    target = torch.from_numpy(y)
    c = len(template.labels)
    counts = np.bincount(y, minlength=c).astype(np.float64)
    weight = np.where(counts > 0, n / (c * np.maximum(counts, 1)), 0.0) if config.balanced else np.ones(c)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        width = x.shape[1]
        if config.hidden:
            net = torch.nn.Sequential(
                torch.nn.Linear(width, config.hidden), torch.nn.ReLU(), torch.nn.Linear(config.hidden, c)
            )
        else:
            net = torch.nn.Sequential(torch.nn.Linear(width, c))
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32))
    losses = []
    for _ in range(config.steps):
        rows = torch.randperm(n, generator=gen)[: config.batch]
        loss = loss_fn(net(x[rows]), target[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    params = tuple(p.detach().numpy().copy() for p in net.parameters())
    meta = {
        "training": asdict(config),
        "positions": n,
        "train_counts": dict(zip(template.labels, counts.astype(int).tolist())),
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    return RouteHead(
        info.name, info.fingerprint, info.n_layers, info.hidden_size, template.layers, template.labels,
        mean.astype(np.float32), std, params, 1.0, meta,
    )  # fmt: skip
