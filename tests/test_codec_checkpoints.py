"""The learned codecs committed under benchmarks/leaderboard/codecs/ keep their outputs.

Each checkpoint runs on fixed sender states (seeded) through encode, quantize, rows and
decode on torch and MLX; the sha256 of every output (dtype, shape, bytes) was recorded
before the learned packet codec moved into its own package (issue 17), so a refactor that
changes a single bit of any output fails here.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lpca_protocols.packet_codec import CodecRunner, load_checkpoint

pytest.importorskip("torch")
CODECS = Path(__file__).resolve().parents[1] / "benchmarks" / "leaderboard" / "codecs"
FRAMEWORKS = ("torch", "mlx") if importlib.util.find_spec("mlx") else ("torch",)

#: Recorded at commit 89495fb (before issue 17's moves).
EXPECTED = {
    "pin0-codebook-k4xK16": {
        "mlx.decode": "cbc67536489c7646",
        "mlx.encode": "887b5d1661a87aae",
        "mlx.quantize": "fefce7bc62871f5d",
        "mlx.rows": "9fc48e89551c39f7",
        "torch.decode": "392228dc2787bff5",
        "torch.encode": "1abd67c0f419d888",
        "torch.quantize": "fefce7bc62871f5d",
        "torch.rows": "9fc48e89551c39f7",
    },
    "relay0-codebook-k1xK8": {
        "mlx.decode": "c73e445ae75139d5",
        "mlx.encode": "b974e4096c9ecd93",
        "mlx.quantize": "d7e86e458414fd2e",
        "mlx.rows": "9af96dff16d8a135",
        "torch.decode": "b62435d4a1ec19b0",
        "torch.encode": "bed23f061bfab5a0",
        "torch.quantize": "d7e86e458414fd2e",
        "torch.rows": "9af96dff16d8a135",
    },
    "relay0-codebook-k2xK8": {
        "mlx.decode": "67cc001529de789c",
        "mlx.encode": "2cf9a3e77abb53cb",
        "mlx.quantize": "db145f87ebbcc06e",
        "mlx.rows": "f7129cfbd6522cb9",
        "torch.decode": "f068a6ad56cd1b1e",
        "torch.encode": "ef351aa18517bca4",
        "torch.quantize": "db145f87ebbcc06e",
        "torch.rows": "f7129cfbd6522cb9",
    },
    "relay0-prefix-k4xm16": {
        "mlx.decode": "97f3ea211083dbca",
        "mlx.encode": "077a836e225bc816",
        "torch.decode": "1889334ac85af45f",
        "torch.encode": "9ce9f5d1f45b0e89",
    },
    "relay1-codebook-k4xK8": {
        "mlx.decode": "1ccdb3255c05f184",
        "mlx.encode": "a15e0888495ccfd8",
        "mlx.quantize": "3a619b870493f27c",
        "mlx.rows": "6c628e5841690710",
        "torch.decode": "b6f62adc8a082311",
        "torch.encode": "21e6667e236ee064",
        "torch.quantize": "3a619b870493f27c",
        "torch.rows": "6c628e5841690710",
    },
}


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def _outputs(path: Path) -> dict[str, str]:
    ckpt = load_checkpoint(path)
    runner = CodecRunner(ckpt)
    rng = np.random.default_rng(1234)
    hidden = (rng.standard_normal((37, ckpt.spec.d_src)) * 3).astype(np.float32)
    out = {}
    for fw in FRAMEWORKS:
        packet = runner.encode(hidden, fw)
        out[f"{fw}.encode"] = _digest(packet)
        if ckpt.spec.kind == "codebook":
            symbols = runner.quantize(packet)
            out[f"{fw}.quantize"] = _digest(symbols)
            packet = runner.rows(symbols)
            out[f"{fw}.rows"] = _digest(packet)
        out[f"{fw}.decode"] = _digest(runner.decode(packet, fw))
    return out


def test_every_committed_codec_is_checked():
    assert sorted(p.name for p in CODECS.iterdir() if p.is_dir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_codec_outputs_are_unchanged(name):
    want = {k: v for k, v in EXPECTED[name].items() if k.split(".")[0] in FRAMEWORKS}
    assert _outputs(CODECS / name) == want
