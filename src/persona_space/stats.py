"""Interval estimates for the figures persona_space reports.

>>> low, high = wilson_interval(5, 100)
>>> round(low, 3), round(high, 3)
(0.022, 0.112)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from persona_space.errors import ConfigError


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; ``(nan, nan)`` when there are no trials."""
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ConfigError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean; ``(nan, nan)`` with fewer than two values."""
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    from scipy.stats import t

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    _z(confidence)  # validates confidence
    return (mean - half, mean + half)
