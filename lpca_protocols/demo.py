"""The main job (`make demo`): text and latent channels on Qwen2.5-Coder-0.5B beside their references.

One compute family (Arithmetic: B must combine its own operand with A's) and one relay
(SecretRelay: B must repeat A's secret), at levels where `lpca calibrate` found the model
competent (skyline and oracle-text high, P0 at chance: benchmarks/RESULTS.md). Every
latent row runs beside its shuffle control (another episode's payload) on the same
episodes: a latent channel that does not beat it carries no information.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lpca_envs
from lpca_protocols.runner import run, wilson

#: (env id, level) cells of the demo.
CELLS: tuple[tuple[str, int], ...] = (
    ("lpca/Arithmetic-v0", 0),
    ("lpca/SecretRelay-v0", 0),
)
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
#: The activation graft of the demo: the sender's last-token state at the second-to-last block
#: replaces the receiver's there. On the 0.5B a layer sweep (benchmarks/RESULTS.md) found the
#: secret crossing only there (layer 23 of 24: 16/16 vs shuffle 3/16; layers 4-20: 1/16).
GRAFT = {"source_layer": -2, "target_layer": -2}
#: (label, channel, options, bits per message) rows: P0, P1, P2 at one budget, the skyline reference,
#: the activation graft and its shuffle control.
PROTOCOLS: tuple[tuple[str, str, dict[str, Any], int | None], ...] = (
    ("P0 none", "none", {}, None),
    ("P1 text", "text", {}, None),
    ("P2 text-budget 64b", "text-budget", {}, 64),
    ("skyline (reference)", "skyline", {}, None),
    ("activation-graft", "activation-graft", GRAFT, None),
    ("  its shuffle control", "activation-graft", {**GRAFT, "control": "shuffle"}, None),
)

#: The learned codec of the demo: a 2 x 8 codebook (6 bits per message) trained on the 0.5B for
#: SecretRelay level 0 (benchmarks/RESULTS.md, "A learned codec on the 0.5B": 200/200 held-out
#: episodes vs shuffle 11%), committed in the repository beside leaderboard v2.
CODEC_CHECKPOINT = (
    Path(__file__).resolve().parents[1] / "benchmarks" / "leaderboard_v2" / "codecs" / "relay0-codebook-k2xK8"
)
#: Rows that run only on some cells: (env id, level) -> rows, like PROTOCOLS.
CELL_PROTOCOLS: dict[tuple[str, int], tuple[tuple[str, str, dict[str, Any], int | None], ...]] = {
    ("lpca/SecretRelay-v0", 0): (
        ("learned codebook 2x8", "latent-codebook", {"checkpoint": str(CODEC_CHECKPOINT)}, None),
        (
            "  its shuffle control",
            "latent-codebook",
            {"checkpoint": str(CODEC_CHECKPOINT), "control": "shuffle"},
            None,
        ),
    ),
}


@dataclass
class Row:
    env_id: str
    level: int
    protocol: str
    success: float
    ci95: tuple[float, float]
    mean_bits: float
    info_bits: float
    tokens: float
    time_s: float


def run_demo(
    model: str = DEFAULT_MODEL,
    episodes: int = 32,
    backend: str = "torch",
    cells: tuple[tuple[str, int], ...] = CELLS,
    protocols: tuple[tuple[str, str, dict[str, Any], int | None], ...] = PROTOCOLS,
    on_row: Callable[[Row], None] | None = None,
    cell_protocols: dict[tuple[str, int], tuple] | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> list[Row]:
    """Every cell x protocol (plus the cell's own rows in `cell_protocols`, default `CELL_PROTOCOLS`;
    a learned codec is skipped, with the reason passed to `on_skip`, when its checkpoint is missing
    or was trained on another model)."""
    import lpca_models
    from lpca_models.agents import LMAgent

    agent = LMAgent(lpca_models.load(model, backend=backend))
    rows: list[Row] = []
    for env_id, level in cells:
        env = lpca_envs.make(env_id, level=level)
        for kind in ("silent", "oracle"):
            s = lpca_envs.evaluate_scripted(env, kind, episodes)  # type: ignore[arg-type]
            k = round(s.success_rate * episodes)
            rows.append(
                Row(
                    env_id,
                    level,
                    f"scripted {kind}",
                    s.success_rate,
                    wilson(k, episodes),
                    s.mean_bits,
                    s.mean_info_bits,
                    0.0,
                    0.0,
                )
            )
            if on_row:
                on_row(rows[-1])
        extra = (CELL_PROTOCOLS if cell_protocols is None else cell_protocols).get((env_id, level), ())
        for label, channel, opts, bits in (*protocols, *_usable(extra, agent, on_skip)):
            r = run(
                env_id,
                channel,
                model,
                agent=agent,
                out_dir=None,
                level=level,
                episodes=episodes,
                channel_options=opts,
                budget_bits_per_message=bits,
                batch_size=10,
            )
            s = r.summary
            rows.append(
                Row(
                    env_id,
                    level,
                    label,
                    s["success_rate"],
                    tuple(s["ci95"]),
                    s["mean_bits"],
                    s["mean_info_bits"],
                    s["mean_tokens_generated"],
                    s["mean_time_s"],
                )
            )
            if on_row:
                on_row(rows[-1])
    return rows


def _usable(rows: tuple, agent: Any, on_skip: Callable[[str], None] | None) -> list:
    """The rows whose learned-codec checkpoint exists and was trained on `agent`'s model."""
    from lpca_protocols.packet_codec import CheckpointError, load_checkpoint

    out = []
    for row in rows:
        ckpt = row[2].get("checkpoint")
        if ckpt is not None:
            try:
                load_checkpoint(ckpt).check_base(agent.backend.info.fingerprint, agent.backend.info.name)
            except (CheckpointError, OSError) as e:
                if on_skip is not None:
                    on_skip(f"{row[0].strip()}: skipped ({e})")
                continue
        out.append(row)
    return out
