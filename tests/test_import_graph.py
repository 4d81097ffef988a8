"""The import graph inside lpca_protocols: channels and training use public names only.

A module under `lpca_protocols/channels/` or `lpca_protocols/training/` may import private
modules and names of its own package, but not of another package (`lpca_protocols.packet_codec`,
`lpca_models`...), and reads no private attribute of another object (``backend._prompt_ids``):
what they need from a backend is on the public `Backend` surface. The learned packet codec
imports neither channels nor training, and channels do not import training.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("lpca_protocols/channels", "lpca_protocols/training")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package(path: Path) -> str:
    """Dotted package of a module file under ROOT."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def violations(source: str, package: str) -> list[str]:
    """What a module of `package` does that the rules above forbid, one line each."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mod = node.module
            if mod == "__future__":
                continue
            own = mod == package or mod.startswith(package + ".")
            names = [a.name for a in node.names]
            if not own and any(_private(p) for p in mod.split(".")):
                out.append(f"line {node.lineno}: imports private module {mod}")
            private = [n for n in names if _private(n)]
            if not own and private:
                out.append(f"line {node.lineno}: imports private {private} from {mod}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                own = a.name.startswith(package + ".")
                if not own and any(_private(p) for p in a.name.split(".")):
                    out.append(f"line {node.lineno}: imports private module {a.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                out.append(f"line {node.lineno}: reads private attribute .{node.attr} of {ast.unparse(base)}")
    return out


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize(
    "path", [p for f in CHECKED for p in _modules(f)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_channels_and_training_use_public_names_only(path):
    assert violations(path.read_text(), _package(path)) == []


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        ("lpca_protocols/packet_codec", ("lpca_protocols.channels", "lpca_protocols.training")),
        ("lpca_protocols/channels", ("lpca_protocols.training",)),
        ("lpca_protocols/codecs", ("lpca_protocols.channels", "lpca_protocols.training")),
    ],
)
def test_no_import_runs_back_up(folder, forbidden):
    bad = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith(forbidden))
        for p in _modules(folder)
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_catches_what_it_forbids():
    src = (
        "from lpca_protocols.packet_codec._spec import CodecSpec\n"
        "from lpca_protocols.channels._latent import lm\n"
        "from lpca_models.backend import _as_message_dict\n"
        "import lpca_protocols.packet_codec._torch\n"
        "ids = backend._prompt_ids(text)\n"
        "core = agent.backend.model._core\n"
        "from lpca_protocols.training.dataset import collect\n"
        "x = self._cache\n"
    )
    found = violations(src, "lpca_protocols.training")
    assert len(found) == 6, found
    assert "imports private module lpca_protocols.packet_codec._spec" in found[0]
    assert any("._prompt_ids of backend" in v for v in found)
