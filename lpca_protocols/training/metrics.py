"""Codebook usage: symbol histogram, perplexity and dead codes of a discrete channel's messages.

`codebook_usage` pools every symbol; `slot_usage` keeps one record per position in the
message (slot j of a vq / fsq packet, slot j stage q of an rvq one), where each position
has its own codebook and a dead code is an entry that position never sends.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CodebookUsage:
    size: int
    """K, the codebook's entries."""
    symbols: int
    """How many symbols were counted."""
    used: int
    """Entries used at least once."""
    dead: int
    """Entries never used (K - used)."""
    perplexity: float
    """exp(entropy) of the symbol histogram: the effective number of entries (1..K)."""
    histogram: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["histogram"] = list(self.histogram)
        return d


def codebook_usage(symbols: Any, size: int) -> CodebookUsage:
    """Usage statistics of `symbols` (indices in 0..size-1)."""
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    hist = np.bincount(s, minlength=size)[:size] if s.size else np.zeros(size, np.int64)
    n = int(hist.sum())
    p = hist[hist > 0] / max(n, 1)
    ent = float(-(p * np.log(p)).sum()) if n else 0.0
    used = int((hist > 0).sum())
    return CodebookUsage(size, n, used, size - used, math.exp(ent), tuple(int(x) for x in hist))


def slot_usage(symbols: Any, size: int) -> list[CodebookUsage]:
    """One `CodebookUsage` per message position of `symbols` [messages, positions]."""
    s = np.asarray(symbols, dtype=np.int64)
    if s.ndim != 2:
        raise ValueError(f"slot_usage needs symbols of shape [messages, positions], got {s.shape}")
    return [codebook_usage(s[:, j], size) for j in range(s.shape[1])]
