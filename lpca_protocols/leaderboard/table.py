"""The leaderboard's numbers: every cell's episode log -> one row per protocol, with polars.

A row is (family, env, level, protocol label, channel, options, budget, model): the
cells of every seed block of that combination pooled. Cells whose options differ
only in ``control`` (``null``, ``shuffle``, ``random``) are that row's controls and
appear beside it, not as rows of their own; ``control = "none"`` (or no control
option) is the row itself.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from lpca_protocols.episode_log import EpisodeLogError, complete_bytes
from lpca_protocols.sweep.config import SweepError
from lpca_protocols.sweep.store import sweep_cells

CONTROLS: tuple[str, ...] = ("null", "shuffle", "random")
ROW_KEY: tuple[str, ...] = ("family", "env_id", "level", "label", "channel", "options", "budget", "model")
Z = 1.96  # 95% two-sided


def _pl() -> Any:
    try:
        import polars as pl
    except ImportError:
        raise SweepError(
            "the leaderboard needs polars: pip install -c constraints.txt 'lpca[leaderboard]'"
        ) from None
    return pl


def episodes_frame(root: str | Path) -> Any:
    """One row per recorded episode of the sweep's grid, with its cell's columns (a polars DataFrame)."""
    pl = _pl()
    schema = {
        "seed": pl.Int64,
        "success": pl.Boolean,
        "bits": pl.Float64,
        "info_bits": pl.Float64,
        "tokens_generated": pl.Float64,
        "prompt_tokens": pl.Float64,
        "time_sender_s": pl.Float64,
        "time_channel_s": pl.Float64,
        "time_receiver_s": pl.Float64,
    }
    frames = []
    for order, (d, cell) in enumerate(sweep_cells(root)):
        log = d / "episodes.jsonl"
        data = complete_bytes(log) if log.exists() else b""
        opts = dict(cell.get("channel_options") or {})
        control = opts.get("control")
        if control in (*CONTROLS, "none"):
            opts.pop("control")
        else:
            control = None
        cols = {
            "cell": cell["key"],
            "order": order,
            "family": cell["family"],
            "env_id": cell["env_id"],
            "level": cell["level"],
            "label": cell["label"],
            "channel": cell["channel"],
            "options": json.dumps(opts, sort_keys=True) if opts else "",
            "budget": cell["budget_bits_per_message"],
            "model": cell["model"],
            "scripted": cell["scripted"] is not None,
            "control": control if control in CONTROLS else "",
            "planned": cell["episodes"],
        }
        if data:
            try:
                df = pl.read_ndjson(io.BytesIO(data), schema=schema)
            except Exception as e:  # polars raises its own ComputeError on a bad line
                raise EpisodeLogError(f"{log}: cannot be read as episode records ({e})") from None
        else:
            df = pl.DataFrame(schema=schema)
        frames.append(
            df.with_columns(
                **{
                    k: pl.lit(v, dtype=pl.Int64 if k in ("budget", "level") else None)
                    for k, v in cols.items()
                }
            )
        )
    eps = pl.concat(frames, how="vertical")
    dup = eps.group_by("cell", "seed").len().filter(pl.col("len") > 1)
    if dup.height:
        raise EpisodeLogError(f"a cell records a seed twice: {dup.head(3).to_dicts()}")
    return eps


def rows_frame(eps: Any) -> Any:
    """Aggregate episodes to one row per (row key, control): success with its Wilson 95% CI, means."""
    pl = _pl()
    n, k = pl.len().cast(pl.Float64), pl.col("success").sum().cast(pl.Float64)
    p = k / n
    den = 1 + Z * Z / n
    mid = (p + Z * Z / (2 * n)) / den
    half = Z * ((p * (1 - p) / n + Z * Z / (4 * n * n)).sqrt()) / den
    latency = pl.col("time_sender_s") + pl.col("time_channel_s") + pl.col("time_receiver_s")
    agg = (
        eps.filter(pl.col("seed").is_not_null())
        .group_by(*ROW_KEY, "control")
        .agg(
            pl.len().alias("n"),
            pl.col("success").sum().alias("successes"),
            p.alias("success"),
            (mid - half).clip(0.0, 1.0).alias("ci_lo"),
            (mid + half).clip(0.0, 1.0).alias("ci_hi"),
            pl.col("bits").mean().alias("bits"),
            pl.col("info_bits").mean().alias("info_bits"),
            pl.col("tokens_generated").mean().alias("tokens"),
            pl.col("prompt_tokens").mean().alias("prompt_tokens"),
            latency.mean().alias("latency_s"),
            pl.col("order").min().alias("order"),
            pl.col("scripted").first().alias("scripted"),
        )
        .with_columns((pl.col("bits") / pl.col("info_bits")).alias("x_info"))
    )
    planned = eps.unique("cell").group_by(*ROW_KEY, "control").agg(pl.col("planned").sum().alias("planned"))
    return agg.join(planned, on=[*ROW_KEY, "control"], how="left", nulls_equal=True)


def leaderboard_frame(root: str | Path) -> Any:
    """The leaderboard: one row per protocol, its controls' success beside it, in grid order."""
    pl = _pl()
    rows = rows_frame(episodes_frame(root))
    main = rows.filter(pl.col("control") == "")
    ctrl = rows.filter(pl.col("control") != "")
    # controls with no normal row of their own are shown as rows, their control in the options
    orphans = ctrl.join(main.select(ROW_KEY), on=list(ROW_KEY), how="anti", nulls_equal=True).with_columns(
        pl.when(pl.col("options") == "")
        .then(pl.concat_str(pl.lit('{"control": "'), pl.col("control"), pl.lit('"}')))
        .otherwise(
            pl.concat_str(
                pl.col("options").str.strip_suffix("}"),
                pl.lit(', "control": "'),
                pl.col("control"),
                pl.lit('"}'),
            )
        )
        .alias("options")
    )
    main = pl.concat([main, orphans], how="vertical")
    for c in CONTROLS:
        side = ctrl.filter(pl.col("control") == c).select(
            *ROW_KEY,
            pl.col("success").alias(f"{c}_success"),
            pl.col("ci_lo").alias(f"{c}_lo"),
            pl.col("ci_hi").alias(f"{c}_hi"),
            pl.col("n").alias(f"{c}_n"),
        )
        main = main.join(side, on=list(ROW_KEY), how="left", nulls_equal=True)
    return main.drop("control").sort("level", "order", "budget", "model", nulls_last=True)
