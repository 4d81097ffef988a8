"""Trained packet codecs by name: a directory of published checkpoints.

    lpca train codec codec.toml --name relay-k8     # train, then publish OUT/codec as "relay-k8"
    lpca run ... --channel latent-prefix -o checkpoint=relay-k8
    lpca train list                                 # name, kind, k/m/K, bits, base model, gate

A name is resolved under `codecs_dir()`: ``$LPCA_CODECS_DIR``, else the XDG cache
directory + ``lpca/codecs``. A ``checkpoint`` that is an existing directory (or looks like
a path) is used as it is. Publishing copies the checkpoint to a temporary directory
beside its destination and renames it into place, so a reader never sees half a codec.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpca_models.cache import user_cache_dir
from lpca_protocols.packet_codec._checkpoint import CONFIG, load_checkpoint
from lpca_protocols.packet_codec._spec import CheckpointError

CODECS_ENV = "LPCA_CODECS_DIR"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class UnknownCheckpointError(CheckpointError):
    """A codec name that no published checkpoint has (the message lists the known names).

    `lpca_protocols.training.UnknownCodecError` is this class under its old name; the codecs'
    own `lpca_protocols.codecs.UnknownCodecError` is a different error (an unknown tensor codec).
    """


def codecs_dir() -> Path:
    """Where published codecs live: ``$LPCA_CODECS_DIR``, else the XDG cache dir + ``lpca/codecs``."""
    return user_cache_dir("codecs", CODECS_ENV)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise CheckpointError(
            f"a codec name is 1-64 letters, digits, '.', '_' or '-' (not starting with '.', '_' or '-'), "
            f"got {name!r}"
        )
    return name


def known_names() -> list[str]:
    root = codecs_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if NAME.fullmatch(p.name) and (p / CONFIG).is_file())


def resolve(ref: str | Path) -> Path:
    """The checkpoint directory of `ref`: a path as it is, else a published name."""
    path = Path(ref).expanduser()
    text = str(ref)
    if isinstance(ref, Path) or path.exists() or os.sep in text or text.startswith(("~", ".")):
        return path
    if not NAME.fullmatch(text):
        raise UnknownCheckpointError(f"{text!r} is neither a codec directory nor a valid codec name")
    found = codecs_dir() / text
    if (found / CONFIG).is_file():
        return found
    names = known_names()
    raise UnknownCheckpointError(
        f"no codec named {text!r} in {codecs_dir()} (${CODECS_ENV}); known: {', '.join(names) or 'none'}"
    )


def publish(checkpoint: str | Path, name: str) -> Path:
    """Copy a checkpoint directory to ``codecs_dir()/name`` (replacing an older one) atomically."""
    check_name(name)
    src = Path(checkpoint)
    load_checkpoint(src)  # only a complete, intact checkpoint is published
    root = codecs_dir()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dest.exists():  # a directory cannot be renamed over a non-empty one: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=root))
            dest.replace(old / name)
            tmp.replace(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def record_gate(checkpoint: str | Path, report: Any) -> None:
    """Write a gate's outcome into the checkpoint's ``codec.json`` (``meta.gate``), atomically."""
    f = Path(checkpoint) / CONFIG
    doc = json.loads(f.read_text())
    doc.setdefault("meta", {})["gate"] = {
        "passed": bool(report.passed),
        "env_id": report.env_id,
        "level": report.level,
        "episodes": report.episodes,
        "rate": report.rate,
        "references": {r.name: r.rate for r in report.references},
    }
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(f)


@dataclass(frozen=True)
class CodecEntry:
    """One published codec, as `lpca train list` shows it."""

    name: str
    kind: str
    quantizer: str
    """vq, rvq:Q=<stages>, fsq:<levels> (e.g. fsq:8x5x5x5), or - for a continuous packet."""
    k: int
    m: int
    codebook_size: int
    bits: int | None
    """Bits per message (a continuous packet: through its training config's serializer)."""
    inject_layer: int | None
    base_model: str
    """The receiver's model; for a bridge, ``sender -> receiver``."""
    gate: dict[str, Any] | None
    path: Path


def list_codecs() -> list[CodecEntry]:
    """Every readable published codec (unreadable ones are skipped)."""
    out = []
    for name in known_names():
        try:
            ckpt = load_checkpoint(codecs_dir() / name)
        except CheckpointError:
            continue
        s = ckpt.spec
        if s.kind == "codebook":
            bits: int | None = s.message_bits
        elif s.kind == "kv":  # its packet's length is tail x layers x d_src floats
            bits = None
        else:
            from lpca_protocols import codecs

            ser = ckpt.meta.get("config", {}).get("codec", {}).get("serializer", "fp16")
            try:
                bits = codecs.get(ser).bits((s.k, s.m))
            except (codecs.CodecError, TypeError, ValueError):  # unknown serializer: no bit count
                bits = None
        out.append(
            CodecEntry(
                name,
                s.kind,
                _quantizer(s),
                s.k,
                s.m,
                s.codebook_size,
                bits,
                s.inject_layer,
                ckpt.pair if ckpt.is_bridge else ckpt.base_model,
                ckpt.meta.get("gate"),
                ckpt.path or codecs_dir() / name,
            )
        )
    return out


def _quantizer(spec: Any) -> str:
    if spec.kind != "codebook":
        return "-"
    if spec.quantizer == "rvq":
        return f"rvq:Q={spec.rvq_levels}"
    if spec.quantizer == "fsq":
        return "fsq:" + "x".join(map(str, spec.fsq_levels))
    return spec.quantizer
