"""The two statistics every LPCA table uses: Wilson intervals and the gate's two-proportion test.

No numpy or torch: the leaderboard, the runner and the codec gate share these.
"""

from __future__ import annotations

import math

#: The gate's significance level and minimum sample (ARCHITECTURE: "the gate").
GATE_ALPHA = 0.01
GATE_MIN_EPISODES = 200


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value of H1: p1 > p2 (pooled two-proportion z-test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    p1, p2 = k1 / n1, k2 / n2
    pool = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 <= p2 else 0.0
    z = (p1 - p2) / se
    return 0.5 * math.erfc(z / math.sqrt(2))
