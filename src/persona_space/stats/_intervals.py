"""Argument checks and closed-form intervals: Wilson, Newcombe and Student-t."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from persona_space.constants import MIN_BOOT
from persona_space.errors import ConfigError

Adjustment = Literal["holm", "bh", "none"]
ADJUSTMENTS: tuple[str, ...] = ("holm", "bh", "none")


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float in (0, 1), or a :class:`ConfigError` naming it."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def check_n_boot(n_boot: int) -> int:
    """``n_boot`` as an int of at least :data:`MIN_BOOT`: fewer resamples make the interval's ends noisy."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < MIN_BOOT:
        raise ConfigError(f"n_boot must be an integer >= {MIN_BOOT} (bootstrap resamples), got {n_boot!r}")
    return n_boot


def check_adjustment(adjust: str) -> Adjustment:
    if adjust not in ADJUSTMENTS:
        raise ConfigError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, got {adjust!r}")
    return adjust  # type: ignore[return-value]


def z_quantile(confidence: float) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval (1.96 at 0.95)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + check_confidence(confidence) / 2))


# -- single-sample intervals ------------------------------------------------------------------


def wilson_interval(successes: float, trials: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; ``(nan, nan)`` when there are no trials.

    ``trials`` may be an effective sample size (samples divided by a design effect),
    hence floats are accepted.
    """
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ConfigError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return (math.nan, math.nan)
    z = z_quantile(confidence)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(
    successes_a: float, trials_a: float, successes_b: float, trials_b: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for the difference of two proportions, ``a - b``.

    Built from each side's :func:`wilson_interval` (Newcombe 1998, method 10), so it
    stays informative where a share sits at 0 or 1: two sides with no successes in 20
    trials each give about +-0.16, not [0, 0]. ``(nan, nan)`` when a side has no trials.
    """
    low_a, high_a = wilson_interval(successes_a, trials_a, confidence)
    low_b, high_b = wilson_interval(successes_b, trials_b, confidence)
    if math.isnan(low_a) or math.isnan(low_b):
        return (math.nan, math.nan)
    share_a, share_b = successes_a / trials_a, successes_b / trials_b
    difference = share_a - share_b
    low = difference - math.sqrt((share_a - low_a) ** 2 + (high_b - share_b) ** 2)
    high = difference + math.sqrt((high_a - share_a) ** 2 + (share_b - low_b) ** 2)
    return (max(-1.0, low), min(1.0, high))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean; ``(nan, nan)`` with fewer than two values."""
    check_confidence(confidence)
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    from scipy.stats import t

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def t_interval_rows(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise Student-t intervals over the rows of ``values[units, k]`` (NaN below two units)."""
    check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n < 2:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    from scipy.stats import t

    mean = values.mean(axis=0)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean - half, mean + half
