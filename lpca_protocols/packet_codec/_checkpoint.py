"""A learned packet codec's checkpoint: a directory of ``codec.safetensors`` and ``codec.json``.

safetensors loads lazily; nothing here needs torch or MLX.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpca_protocols.packet_codec._spec import CheckpointError, CheckpointMismatchError, CodecSpec

FORMAT = "lpca-codec/1"
WEIGHTS = "codec.safetensors"
CONFIG = "codec.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded codec checkpoint: spec, float32 weights, the model(s) it was trained on.

    ``base_*`` is the receiver's model (the decoder writes into its embedding space); a
    cross-model bridge also records its sender's (``sender_*``; empty: the same model).
    """

    spec: CodecSpec
    weights: dict[str, np.ndarray]
    base_model: str
    base_fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sender_model: str = ""
    sender_fingerprint: str = ""

    @property
    def is_bridge(self) -> bool:
        """Trained for a sender model other than its receiver."""
        return bool(self.sender_fingerprint) and self.sender_fingerprint != self.base_fingerprint

    @property
    def pair(self) -> str:
        """``sender -> receiver`` (model names) for messages."""
        return f"{self.sender_model or self.base_model} -> {self.base_model}"

    def check_base(self, fingerprint: str, model_name: str = "") -> None:
        """Refuse a receiver model other than the one the decoder was trained for."""
        if fingerprint != self.base_fingerprint:
            what = f"for the bridge {self.pair}" if self.is_bridge else f"on {self.base_model}"
            raise CheckpointMismatchError(
                f"codec checkpoint {self.path} was trained {what} "
                f"({self.base_fingerprint[:12]}...), this receiver is {model_name or '?'} "
                f"({fingerprint[:12]}...); a learned codec only works on the models it was trained on"
            )

    def check_sender(self, fingerprint: str, model_name: str = "") -> None:
        """Refuse a sender model other than the one the encoder was trained on."""
        want = self.sender_fingerprint or self.base_fingerprint
        if fingerprint != want:
            raise CheckpointMismatchError(
                f"codec checkpoint {self.path} reads the hidden states of sender "
                f"{self.sender_model or self.base_model} ({want[:12]}...) ({self.pair}), this sender is "
                f"{model_name or '?'} ({fingerprint[:12]}...); train a bridge for this pair"
            )


def save_checkpoint(
    path: str | Path,
    spec: CodecSpec,
    weights: dict[str, np.ndarray],
    base_model: str,
    base_fingerprint: str,
    meta: dict[str, Any] | None = None,
    sender_model: str = "",
    sender_fingerprint: str = "",
) -> Path:
    """Write ``codec.safetensors`` then ``codec.json`` (its presence marks a complete checkpoint).

    ``base_*`` is the receiver's model; ``sender_*`` a bridge's sender (empty: the same model).
    """
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    want = spec.weight_shapes()
    missing = sorted(set(want) - set(weights))
    if missing:
        raise CheckpointError(f"cannot save codec: weights {missing} are missing")
    arrays = {n: np.ascontiguousarray(np.asarray(weights[n], dtype=np.float32)) for n in want}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(arrays, str(tmp))
    tmp.replace(path / WEIGHTS)
    doc = {
        "format": FORMAT,
        "spec": asdict(spec),
        "base_model": base_model,
        "base_fingerprint": base_fingerprint,
        "weights_sha256": hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest(),
        "meta": dict(meta or {}),
    }
    if sender_fingerprint and sender_fingerprint != base_fingerprint:
        doc.update(sender_model=sender_model, sender_fingerprint=sender_fingerprint)
    tmp = path / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(path / CONFIG)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a codec checkpoint directory; every defect is a `CheckpointError` naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    cfg, wfile = path / CONFIG, path / WEIGHTS
    if not cfg.is_file() or not wfile.is_file():
        raise CheckpointError(
            f"{path} is not a codec checkpoint: expected {CONFIG} and {WEIGHTS} in that directory"
        )
    try:
        doc = json.loads(cfg.read_text())
        if doc.get("format") != FORMAT:
            raise CheckpointError(f"{cfg}: format {doc.get('format')!r}, expected {FORMAT!r}")
        spec = CodecSpec(**doc["spec"])
        base_model, base_fp = str(doc["base_model"]), str(doc["base_fingerprint"])
        sender_model, sender_fp = str(doc.get("sender_model", "")), str(doc.get("sender_fingerprint", ""))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg} is not a valid codec config ({type(e).__name__}: {e})") from None
    data = wfile.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if doc.get("weights_sha256") not in (None, digest):
        raise CheckpointError(
            f"{wfile} is truncated or corrupt: {len(data)} bytes whose sha256 {digest[:12]}... differs "
            f"from the {doc['weights_sha256'][:12]}... recorded in {CONFIG}"
        )
    try:
        weights = load(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{wfile} is not a readable safetensors file: {e}") from None
    want = spec.weight_shapes()
    missing = sorted(set(want) - set(weights))
    if missing:
        raise CheckpointError(f"{wfile} lacks weights {missing} required by its spec ({spec.kind})")
    bad = {n: (tuple(weights[n].shape), s) for n, s in want.items() if tuple(weights[n].shape) != s}
    if bad:
        detail = ", ".join(f"{n}: got {g}, expected {s}" for n, (g, s) in sorted(bad.items()))
        raise CheckpointError(f"{wfile} has weights of the wrong shape: {detail}")
    w = {n: np.asarray(weights[n], dtype=np.float32) for n in want}
    return Checkpoint(spec, w, base_model, base_fp, dict(doc.get("meta", {})), path, sender_model, sender_fp)
