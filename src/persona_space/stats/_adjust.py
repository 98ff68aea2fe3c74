"""Many comparisons: adjusted p-values and the description of the adjustment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from persona_space.errors import ConfigError
from persona_space.stats._intervals import Adjustment, check_adjustment


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: Adjustment = "holm") -> np.ndarray:
    """Family-wise (Holm) or false-discovery-rate (Benjamini-Hochberg, ``"bh"``) adjusted p-values.

    NaN entries are left out of the family and stay NaN.

    >>> adjust_p_values([0.01, 0.04, 0.03, 0.005], "bh").round(3).tolist()
    [0.02, 0.04, 0.04, 0.02]
    """
    check_adjustment(method)
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    keep = np.flatnonzero(~np.isnan(p))
    m = len(keep)
    if m == 0:
        return out
    if np.any((p[keep] < 0) | (p[keep] > 1)):
        raise ConfigError(f"p-values must lie in [0, 1], got {p[keep].min()!r}..{p[keep].max()!r}")
    values = p[keep]
    if method == "none":
        out[keep] = values
        return out
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    if method == "holm":
        adjusted = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        adjusted = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    out[keep] = result
    return out


def describe_adjustment(method: Adjustment, n_tests: int, left_out: Mapping[str, int] | None = None) -> str:
    """The ``adjustment`` column: which correction, over how many tests, and what was left out of the family.

    ``left_out`` counts comparisons without a test by why (``{"without variation": 18}``).

    >>> describe_adjustment("holm", 30, {"without variation": 18})
    'Holm over 30 tests; 18 without variation left out'
    """
    names = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "unadjusted"}
    text = names[method] if method == "none" else f"{names[method]} over {n_tests} test{'s' * (n_tests != 1)}"
    out = [f"{count} {why}" for why, count in (left_out or {}).items() if count]
    return f"{text}; {' and '.join(out)} left out" if out else text
