"""Codebook usage: symbol histogram, perplexity and dead codes of a discrete channel's messages."""

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
