"""The main job (`make demo`): text baselines on SmolLM2 beside the scripted floor and ceiling.

Families and levels were picked where SmolLM2-135M's text ceiling is clearly
above its no-communication floor (see README and benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lpca_envs
from lpca_protocols.runner import run, wilson

#: (env id, level) cells of the demo.
CELLS: tuple[tuple[str, int], ...] = (
    ("lpca/SecretRelay-v0", 0),
    ("lpca/SecretRelay-v0", 1),
    ("lpca/KVLookup-v0", 0),
)
#: (label, channel, options, bits per message) rows: P0, P1, P2 at two budgets, P5.
PROTOCOLS: tuple[tuple[str, str, dict[str, Any], int | None], ...] = (
    ("P0 none", "none", {}, None),
    ("P1 text", "text", {}, None),
    ("P2 text-budget 128b", "text-budget", {}, 128),
    ("P2 text-budget 256b", "text-budget", {}, 256),
    ("P5 structured", "structured", {"max_new_tokens": 64}, None),
)


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
    model: str = "smollm2-135m",
    episodes: int = 20,
    backend: str = "torch",
    cells: tuple[tuple[str, int], ...] = CELLS,
    protocols: tuple[tuple[str, str, dict[str, Any], int | None], ...] = PROTOCOLS,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
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
        for label, channel, opts, bits in protocols:
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
