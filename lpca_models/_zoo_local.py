"""Models a user brings by path: a Hugging Face causal-LM directory or a ``.gguf`` file.

``--model /path/to/dir`` (or ``lpca_models.load(path)``) needs no zoo entry: the path is
converted into the zoo's cache like a packaged model (float32 safetensors, atomic, once)
and named ``<name>-<content sha256[:8]>``, so the id and fingerprint follow the bytes,
not the path. Hashing a checkpoint costs seconds per GB, so its digest is remembered in
``<cache>/.index/local/`` under the files' sizes and mtimes: a later call with untouched
files is a few ``stat`` calls, and any rewritten file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpca_models._zoo_sources import (
    TORCH_INSTALL,
    ModelSpec,
    _gguf_to_hf,
    _progress,
    _require_torch,
    _sha256_json,
)
from lpca_models.errors import LocalModelError, MissingPackageError

MEMO_VERSION = 1
#: Files of a Hugging Face directory whose bytes identify the model (those present).
CONTENT_GLOBS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "vocab.json")
#: GGUF ``general.architecture`` -> transformers ``model_type`` where the two differ.
GGUF_MODEL_TYPES = {"gemma3": "gemma3_text"}
EXPECTED_DIR = (
    "a Hugging Face causal LM directory (config.json with architectures *ForCausalLM, "
    "*.safetensors or pytorch_model*.bin weights, tokenizer files) or a .gguf file"
)


@dataclass(frozen=True)
class LocalHFDir:
    """A local Hugging Face causal-LM directory, re-saved into the cache as float32 safetensors."""

    spec: ModelSpec
    path: Path
    content_sha256: str
    files: tuple[str, ...]  # the hashed files, relative to path

    def stamp(self) -> dict[str, Any]:
        return {"path": str(self.path), "files": _file_stamps(self.path, self.files)}

    def source_sha256(self) -> str:
        return self.content_sha256

    def origin(self) -> dict[str, Any]:
        return {"kind": "local", "format": "hf", "path": str(self.path)}

    def convert(self, work: Path, out: Path) -> None:
        torch, transformers = _require_torch()
        config = json.loads((self.path / "config.json").read_text())
        _check_transformers_knows(self.path, config.get("model_type"), transformers)
        try:
            tok = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.path, dtype=torch.float32, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise LocalModelError(
                f"transformers cannot load {self.path} ({exc}); expected {EXPECTED_DIR}"
            ) from exc
        _check_backend_can_run(self.path, model)
        model.save_pretrained(out)
        tok.save_pretrained(out)


@dataclass(frozen=True)
class LocalGGUF:
    """A local ``.gguf`` file, dequantized into the cache by the zoo's GGUF path."""

    spec: ModelSpec
    path: Path
    content_sha256: str
    gguf_architecture: str

    def stamp(self) -> dict[str, Any]:
        return {"path": str(self.path), "files": _file_stamps(self.path.parent, (self.path.name,))}

    def source_sha256(self) -> str:
        return self.content_sha256

    def origin(self) -> dict[str, Any]:
        return {"kind": "local", "format": "gguf", "path": str(self.path)}

    def convert(self, work: Path, out: Path) -> None:
        _require_torch("gguf")
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        if self.gguf_architecture not in GGUF_SUPPORTED_ARCHITECTURES:
            known = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
            raise LocalModelError(
                f"{self.path}: transformers cannot read GGUF architecture {self.gguf_architecture!r}; "
                f"expected one of {', '.join(known)}"
            )
        _gguf_to_hf(self.path.parent, self.path.name, out)


def local_source(path: Path, root: Path) -> LocalHFDir | LocalGGUF:
    """The source of a model given by path; raises `LocalModelError` for anything else."""
    path = path.resolve()
    if path.is_dir():
        return _hf_dir(path, root)
    if path.is_file() and _is_gguf(path):
        return _gguf_file(path, root)
    raise LocalModelError(f"{path} is not a model: expected {EXPECTED_DIR}")


# --------------------------------------------------------------------------- Hugging Face directories


def _hf_dir(path: Path, root: Path) -> LocalHFDir:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LocalModelError(f"{path} has no config.json: expected {EXPECTED_DIR}")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise LocalModelError(f"{config_file} is not valid JSON ({exc})") from exc
    archs = config.get("architectures") or []
    if archs and not any(str(a).endswith("ForCausalLM") for a in archs):
        raise LocalModelError(
            f"{path} holds {', '.join(map(str, archs))}, not a causal language model: expected a config "
            "whose architectures name a *ForCausalLM class (e.g. LlamaForCausalLM, Qwen2ForCausalLM)"
        )
    keys = ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")
    absent = [k for k in keys if not config.get(k)]
    if absent:
        raise LocalModelError(
            f"{config_file} lacks {', '.join(absent)}: expected a text causal LM config with "
            f"{', '.join(keys)} at its top level"
        )
    if not any(f for g in WEIGHT_GLOBS for f in path.glob(g)):
        raise LocalModelError(
            f"{path} has no weights (*.safetensors or pytorch_model*.bin): expected {EXPECTED_DIR}"
        )
    if not any((path / f).is_file() for f in TOKENIZER_MARKERS):
        raise LocalModelError(
            f"{path} has no tokenizer ({', '.join(TOKENIZER_MARKERS)}): expected {EXPECTED_DIR}"
        )
    files = tuple(sorted({f.name for g in CONTENT_GLOBS for f in path.glob(g) if f.is_file()}))
    sha = _memo_sha256(root, path, files)
    spec = ModelSpec(
        id=_local_id(path.name, sha),
        description=f"local Hugging Face directory {path}",
        architecture=config["model_type"],
        n_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        vocab_size=config["vocab_size"],
        approx_mb=_approx_mb(path, files, config),
        source="local",
    )
    return LocalHFDir(spec, path, sha, files)


def _check_transformers_knows(path: Path, model_type: Any, transformers: Any) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise LocalModelError(
            f"{path}: model_type {model_type!r} is not a causal LM transformers {transformers.__version__} "
            f"knows (custom code is not run); expected one of e.g. llama, qwen2, gemma3_text, mistral, phi3"
        )


def _check_backend_can_run(path: Path, model: Any) -> None:
    """TorchBackend drives ``model.model`` (embeddings, ``layers``, ``norm``) and ``lm_head`` itself."""
    core = getattr(model, "model", None)
    parts = {
        "model.embed_tokens": getattr(core, "embed_tokens", None),
        "model.layers": getattr(core, "layers", None),
        "model.norm": getattr(core, "norm", None),
        "lm_head": getattr(model, "lm_head", None),
    }
    absent = [name for name, part in parts.items() if part is None]
    if absent:
        raise LocalModelError(
            f"{path}: {type(model).__name__} has no {', '.join(absent)}; the backends run decoder-only "
            "models laid out like Llama (model.embed_tokens, model.layers, model.norm, lm_head)"
        )


def _approx_mb(path: Path, files: tuple[str, ...], config: dict[str, Any]) -> int:
    """Float32 size: the weights' bytes scaled by 4 / bytes per parameter of the stored dtype."""
    stored = config.get("dtype") or config.get("torch_dtype")
    per_param = {"float32": 4, "bfloat16": 2, "float16": 2}.get(stored, 4)
    weights = sum((path / f).stat().st_size for f in files if f.endswith((".safetensors", ".bin")))
    return max(1, round(weights * 4 / per_param / 1e6))


# --------------------------------------------------------------------------- GGUF files


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


def _gguf_file(path: Path, root: Path) -> LocalGGUF:
    sha = _memo_sha256(root, path.parent, (path.name,))
    meta = _memo_gguf_fields(root, path, sha)
    arch = meta["architecture"]
    spec = ModelSpec(
        id=_local_id(path.stem, sha),
        description=f"local GGUF file {path}",
        architecture=GGUF_MODEL_TYPES.get(arch, arch),
        n_layers=meta["n_layers"],
        hidden_size=meta["hidden_size"],
        vocab_size=meta["vocab_size"],
        approx_mb=meta["approx_mb"],
        source="local",
    )
    return LocalGGUF(spec, path, sha, arch)


def gguf_fields(path: Path) -> dict[str, Any]:
    """Architecture, layers, hidden size, vocabulary and float32 size from a GGUF's metadata."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise MissingPackageError(f"reading a .gguf file needs the gguf package: {TORCH_INSTALL}") from exc
    try:
        reader = GGUFReader(path)
        arch = _gguf_value(reader, "general.architecture")
        fields = {
            "architecture": str(arch),
            "n_layers": int(_gguf_value(reader, f"{arch}.block_count")),
            "hidden_size": int(_gguf_value(reader, f"{arch}.embedding_length")),
            "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
            "approx_mb": max(1, round(sum(int(t.n_elements) for t in reader.tensors) * 4 / 1e6)),
        }
    except (KeyError, ValueError, IndexError) as exc:
        raise LocalModelError(
            f"{path}: cannot read the GGUF metadata a model needs (general.architecture, <arch>.block_count, "
            f"<arch>.embedding_length, tokenizer.ggml.tokens): {exc!r}"
        ) from exc
    return fields


def _gguf_value(reader: Any, key: str) -> Any:
    field = reader.fields[key]
    return field.contents()


def _memo_gguf_fields(root: Path, path: Path, sha: str) -> dict[str, Any]:
    memo = root / ".index" / "local" / f"gguf--{sha[:24]}.json"
    try:
        fields = json.loads(memo.read_text())
        if fields.get("version") == MEMO_VERSION:
            return fields
    except (OSError, ValueError):
        pass
    fields = {"version": MEMO_VERSION, **gguf_fields(path)}
    _write_json(memo, fields)
    return fields


# --------------------------------------------------------------------------- identity


def _local_id(name: str, sha: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:48] or "model"
    return f"{slug}-{sha[:8]}"


def _file_stamps(base: Path, files: tuple[str, ...]) -> list[list[Any]]:
    out = []
    for name in files:
        try:
            st = (base / name).stat()
        except FileNotFoundError:
            raise LocalModelError(f"{base / name} disappeared; it was part of the model at {base}") from None
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def _memo_sha256(root: Path, base: Path, files: tuple[str, ...]) -> str:
    """The content sha256 of ``files``, remembered under their sizes and mtimes (no re-hash if untouched)."""
    stamp = {"version": MEMO_VERSION, "base": str(base), "files": _file_stamps(base, files)}
    memo = root / ".index" / "local" / f"{_sha256_json(stamp)[:24]}.json"
    try:
        entry = json.loads(memo.read_text())
        if entry.get("stamp") == stamp:
            return str(entry["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    sha = content_sha256(base, files)
    _write_json(memo, {"stamp": stamp, "sha256": sha})
    return sha


def content_sha256(base: Path, files: tuple[str, ...]) -> str:
    """sha256 over the files' names, lengths and bytes; a lone ``.gguf`` gets its plain sha256.

    The plain digest makes a GGUF given by path share its source hash with the zoo entry
    that ships the same file.
    """
    sizes = {name: (base / name).stat().st_size for name in files}
    single = len(files) == 1 and files[0].endswith(".gguf")
    h = hashlib.sha256() if single else hashlib.sha256(b"lpca-local-hf-v1\0")
    with _progress(f"hashing {base.name}", sum(sizes.values())) as advance:
        for name in files:
            if not single:
                h.update(f"\0{name}\0{sizes[name]}\0".encode())
            with open(base / name, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
                    advance(len(block))
    return h.hexdigest()


def _write_json(file: Path, obj: Any) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, file)
