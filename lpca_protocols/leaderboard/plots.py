"""Leaderboard plots (matplotlib, PNG), one figure per task family and one panel per level.

- success vs bits per episode: log bit axis (symmetric-log, so 0 bits shows), the
  level's `info_bits` floor as a dashed line, 95% CIs, the Pareto frontier of the
  model-driven protocols (fewest bits for the most success; the `skyline` reference, which
  reads the other views at 0 bits, is drawn but not on it) as a step line, and the
  scripted silent floor / skyline as horizontal references;
- latency per episode vs success.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Channels that are references, not ways to communicate: drawn, but never on the Pareto frontier.
REFERENCE_CHANNELS = frozenset({"skyline"})


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points not dominated by another (no other has <= bits and > success, or < bits and >=)."""
    best: list[tuple[float, float]] = []
    for bits, succ in sorted(points, key=lambda p: (p[0], -p[1])):
        if not best or succ > best[-1][1]:
            best.append((bits, succ))
    return best


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        from lpca_protocols.sweep.config import SweepError

        raise SweepError(
            "leaderboard plots need matplotlib: pip install -c constraints.txt 'lpca[leaderboard]' "
            "(or pass --no-plots)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _name(r: dict[str, Any]) -> str:
    b = "" if r["budget"] is None else f"@{r['budget']}"
    return f"{r['label']}{b}"


def family_plots(family: str, rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write the two PNGs of `family`; their paths."""
    plt = _plt()
    levels = sorted({r["level"] for r in rows})
    slug = family.lower().replace(" ", "-")
    paths = []
    for kind in ("success_vs_bits", "latency_vs_success"):
        fig, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 4.2), squeeze=False)
        for ax, level in zip(axes[0], levels):
            at = [r for r in rows if r["level"] == level]
            if kind == "success_vs_bits":
                _bits_panel(ax, at)
            else:
                _latency_panel(ax, at)
            ax.set_title(f"{family} level {level}")
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{slug}_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _err(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["success"] - r["ci_lo"] for r in rows], [r["ci_hi"] - r["success"] for r in rows]]


def _bits_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    model = [r for r in rows if not r["scripted"]]
    scripted = {r["label"]: r for r in rows if r["scripted"]}
    ax.set_xscale("symlog", linthresh=1.0)
    if model:
        ax.errorbar(
            [r["bits"] for r in model],
            [r["success"] for r in model],
            yerr=_err(model),
            fmt="o",
            capsize=3,
            label="protocols (95% CI)",
        )
        for r in model:
            ax.annotate(
                _name(r), (r["bits"], r["success"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        # References are not protocols: the model's skyline reads the other views at 0 bits.
        protocols = [r for r in model if r.get("channel") not in REFERENCE_CHANNELS] or model
        front = pareto([(r["bits"], r["success"]) for r in protocols])
        front.append((max(r["bits"] for r in model), front[-1][1]))  # hold the last step to the right edge
        ax.step(
            [p[0] for p in front], [p[1] for p in front], where="post", color="C2", label="Pareto frontier"
        )
    oracle = scripted.get("scripted oracle")
    if oracle is not None:
        ax.plot([oracle["bits"]], [oracle["success"]], "*", ms=11, color="C3", label="scripted oracle")
    for name, style in (("scripted silent", ":"), ("scripted skyline", "-.")):
        if name in scripted:
            ax.axhline(scripted[name]["success"], ls=style, color="gray", lw=1, label=name)
    info = sum(r["info_bits"] for r in rows) / len(rows)
    ax.axvline(info, ls="--", color="k", lw=1, label=f"info_bits floor ({info:.1f})")
    ax.set_xlabel("bits per episode (log)")
    ax.set_ylabel("success")
    ax.legend(fontsize=7, loc="lower right")


def _latency_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    model = [r for r in rows if not r["scripted"]]
    if model:
        ax.errorbar(
            [r["latency_s"] for r in model],
            [r["success"] for r in model],
            yerr=_err(model),
            fmt="o",
            capsize=3,
        )
        for r in model:
            ax.annotate(
                _name(r),
                (r["latency_s"], r["success"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("latency per episode (s)")
    ax.set_ylabel("success")
