"""Leaderboard rows -> Markdown and a self-contained HTML page (plots inlined as data URIs)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from lpca_protocols.leaderboard.table import CONTROLS

COLUMNS: tuple[str, ...] = (
    "level",
    "protocol",
    "options",
    "budget",
    "model",
    "success",
    "95% CI",
    "n",
    "bits/ep",
    "x info",
    "tokens",
    "s/ep",
)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def ci(lo: float | None, hi: float | None) -> str:
    return "-" if lo is None or hi is None else f"[{100 * lo:.0f}, {100 * hi:.0f}]"


def options_text(opts: str) -> str:
    if not opts:
        return ""
    try:
        data = json.loads(opts)
    except json.JSONDecodeError:
        return opts
    return ", ".join(f"{k}={v}" for k, v in data.items())


def cells(row: dict[str, Any], controls: bool) -> list[str]:
    """One leaderboard row as display strings, in `COLUMNS` order (then the controls)."""
    scripted = row["scripted"]
    partial = "" if row["planned"] is None or row["n"] >= row["planned"] else f" of {row['planned']}"
    out = [
        str(row["level"]),
        row["label"],
        options_text(row["options"]),
        "-" if scripted else ("unlimited" if row["budget"] is None else str(row["budget"])),
        "-" if scripted else row["model"],
        pct(row["success"]),
        ci(row["ci_lo"], row["ci_hi"]),
        f"{row['n']}{partial}",
        f"{row['bits']:.0f}",
        f"{row['x_info']:.1f}x" if row["info_bits"] else "-",
        "-" if scripted else f"{row['tokens']:.0f}",
        "-" if scripted else f"{row['latency_s']:.2f}",
    ]
    if controls:
        for c in CONTROLS:
            s = row.get(f"{c}_success")
            out.append("" if s is None else f"{pct(s)} {ci(row[f'{c}_lo'], row[f'{c}_hi'])}")
        out.append(row.get("gate") or "")
    return out


def has_controls(rows: list[dict[str, Any]]) -> bool:
    return any(r.get(f"{c}_success") is not None for r in rows for c in CONTROLS)


def header(controls: bool) -> list[str]:
    return list(COLUMNS) + ([f"control {c}" for c in CONTROLS] + ["gate"] if controls else [])


def markdown(title: str, families: dict[str, list[dict[str, Any]]], notes: list[str], plots: dict) -> str:
    out = [f"# {title}", "", *notes, ""]
    for fam, rows in families.items():
        controls = has_controls(rows)
        head = header(controls)
        info = sorted({(r["level"], r["info_bits"]) for r in rows})
        floor = ", ".join(f"level {lv}: {b:.1f} bits" for lv, b in info)
        out += [f"## {fam}", "", f"`info_bits` (mean per episode): {floor}.", ""]
        out.append("| " + " | ".join(head) + " |")
        out.append(
            "|" + "|".join("---" if h in ("protocol", "options", "model") else "---:" for h in head) + "|"
        )
        for r in rows:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r, controls)) + " |")
        out.append("")
        for p in plots.get(fam, []):
            out.append(f"![{fam}: {p.stem}]({p.name})")
        out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.l{text-align:left}tr.s td{color:#666;font-style:italic}
img{max-width:100%;margin:0.5em 0}
"""


def html_page(title: str, families: dict[str, list[dict[str, Any]]], notes: list[str], plots: dict) -> str:
    left = {"protocol", "options", "model"}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(n)}</p>" for n in notes),
    ]
    for fam, rows in families.items():
        controls = has_controls(rows)
        head = header(controls)
        parts.append(f"<h2>{html.escape(fam)}</h2><table><tr>")
        parts += [f"<th>{html.escape(h)}</th>" for h in head]
        parts.append("</tr>")
        for r in rows:
            parts.append("<tr class='s'>" if r["scripted"] else "<tr>")
            for h, c in zip(head, cells(r, controls)):
                cls = " class='l'" if h in left else ""
                parts.append(f"<td{cls}>{html.escape(c)}</td>")
            parts.append("</tr>")
        parts.append("</table>")
        for p in plots.get(fam, []):
            data = base64.b64encode(Path(p).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(p.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "".join(parts)
