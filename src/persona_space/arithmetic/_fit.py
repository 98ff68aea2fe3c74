"""Dose-response curves: a logistic fit and a monotone fit beside it, tipping doses with intervals over seeds.

A dose is how much of the variant a model was trained on (facts swapped in, a
mixing ratio, a weight); a response is a share in 0..1 (a candidate's probability
within the candidate set, or its share of sampled self-descriptions), one value
per (dose, training seed).

The logistic is ``low + (high - low) / (1 + exp(-slope * (dose - midpoint)))``,
fitted by least squares with ``low`` and ``high`` in 0..1. The monotone fit is
isotonic regression in the direction the data go (no shape assumed). The tipping
dose is where a curve crosses 0.5 (or another curve); its interval comes from
refitting on training seeds drawn with replacement: seeds are the unit a claim
about a recipe rests on.

>>> fit = fit_logistic([0, 2, 4, 6, 8], [0.05, 0.1, 0.5, 0.9, 0.95])
>>> round(fit.midpoint, 1)
4.0
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from persona_space.errors import ConfigError, DataError
from persona_space.stats import check_confidence, check_n_boot

GRID_POINTS = 801
Numbers = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Logistic:
    """A fitted four-parameter logistic: ``low``, ``high``, ``slope``, ``midpoint`` and the residual error."""

    low: float
    high: float
    slope: float
    midpoint: float
    rmse: float

    def __call__(self, dose: np.ndarray | float) -> np.ndarray:
        x = np.asarray(dose, dtype=np.float64)
        with np.errstate(over="ignore"):
            return np.asarray(self.low + (self.high - self.low) / (1.0 + np.exp(-self.slope * (x - self.midpoint))))


def _arrays(doses: Numbers, values: Numbers) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(doses, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise DataError(f"doses and values must be two lists of the same length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("doses and values must be finite numbers")
    if len(np.unique(x)) < 3:
        raise DataError(f"a dose-response curve needs at least 3 distinct doses, got {sorted(set(x.tolist()))}")
    return x, y


def fit_logistic(doses: Numbers, values: Numbers, *, start: Logistic | None = None) -> Logistic:
    """Least-squares four-parameter logistic through ``(dose, value)`` points (values are shares in 0..1).

    ``start`` (an earlier fit, e.g. on all seeds when refitting a resample) seeds the search.
    """
    from scipy.optimize import least_squares

    x, y = _arrays(doses, values)
    span = float(x.max() - x.min())
    rising = float(np.corrcoef(x, y)[0, 1]) >= 0 if y.std() > 0 else True
    guess = (
        [start.low, start.high, start.slope, start.midpoint]
        if start is not None
        else [
            float(y.min()) if rising else float(y.max()),
            float(y.max()) if rising else float(y.min()),
            4.0 / span,
            float(np.median(x)),
        ]
    )

    def residual(p: np.ndarray) -> np.ndarray:
        return np.asarray(Logistic(p[0], p[1], p[2], p[3], 0.0)(x) - y)

    def jacobian(p: np.ndarray) -> np.ndarray:
        low, high, slope, mid = p
        with np.errstate(over="ignore"):
            sig = 1.0 / (1.0 + np.exp(-slope * (x - mid)))
        bend = (high - low) * sig * (1.0 - sig)
        return np.column_stack([1.0 - sig, sig, bend * (x - mid), -bend * slope])

    lower = [0.0, 0.0, 1e-3 / span, float(x.min()) - span]
    upper = [1.0, 1.0, 100.0 / span, float(x.max()) + span]
    guess = [min(max(v, lo + 1e-9), hi - 1e-9) for v, lo, hi in zip(guess, lower, upper, strict=True)]
    result = least_squares(residual, guess, jac=jacobian, bounds=(lower, upper))
    low, high, slope, midpoint = (float(v) for v in result.x)
    rmse = float(np.sqrt(np.mean(result.fun**2)))
    return Logistic(low, high, slope, midpoint, rmse)


def fit_monotone(doses: Numbers, values: Numbers) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression in the direction that fits better: the distinct doses and the fitted value at each."""
    from sklearn.isotonic import IsotonicRegression

    x, y = _arrays(doses, values)
    best: tuple[float, np.ndarray] | None = None
    for increasing in (True, False):
        fitted = IsotonicRegression(increasing=increasing).fit(x, y).predict(x)
        sse = float(np.sum((fitted - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, fitted)
    assert best is not None
    grid = np.unique(x)
    return grid, np.array([best[1][x == d].mean() for d in grid])


def crossing(curve_a: Logistic, curve_b: Logistic | float, dose_range: tuple[float, float]) -> float:
    """The first dose in ``dose_range`` where ``curve_a`` crosses ``curve_b`` (a curve or a level such as 0.5).

    NaN when they do not cross inside the range. A logistic is monotone, so it crosses
    a level at most once, where it is solved for exactly.
    """
    if not isinstance(curve_b, Logistic):
        span = curve_a.high - curve_a.low
        share = (float(curve_b) - curve_a.low) / span if span != 0 else math.nan
        if not 0.0 < share < 1.0:
            return math.nan
        dose = curve_a.midpoint + math.log(share / (1.0 - share)) / curve_a.slope
        return dose if dose_range[0] <= dose <= dose_range[1] else math.nan
    grid = np.linspace(dose_range[0], dose_range[1], GRID_POINTS)
    diff = curve_a(grid) - curve_b(grid)
    scale = max(float(np.abs(diff).max()), 1e-12)
    signs = np.where(np.abs(diff) <= 1e-9 * max(scale, 1.0), 0.0, np.sign(diff))
    nonzero = np.flatnonzero(signs != 0)
    # a crossing is a change of sign between grid points where the curves differ; curves that
    # coincide (or only touch) do not cross
    for a, b in itertools.pairwise(nonzero):
        if signs[a] != signs[b]:
            if b == a + 1:
                t = diff[a] / (diff[a] - diff[b])  # linear interpolation between the grid points
                return float(grid[a] + t * (grid[b] - grid[a]))
            return float((grid[a + 1] + grid[b - 1]) / 2)  # where they run together before parting
    return math.nan


@dataclass(frozen=True)
class Tipping:
    """A tipping dose with its interval over training seeds, and how often resamples found one at all."""

    dose: float
    low: float
    high: float
    found_share: float
    resamples: int


def tipping_dose(
    doses: Numbers,
    values: Numbers,
    seeds: Sequence[int] | np.ndarray,
    *,
    level: float = 0.5,
    against: Numbers | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Tipping:
    """Where the logistic fit crosses ``level`` (or the curve of ``against``, values of a second candidate).

    The interval refits on training seeds drawn with replacement; resamples whose
    curves do not cross inside the dose range count in ``1 - found_share`` and are
    left out of the interval. With fewer than two seeds the interval is NaN.
    """
    check_n_boot(n_boot)
    alpha = (1 - check_confidence(confidence)) / 2
    x, y = _arrays(doses, values)
    s = np.asarray(seeds)
    if s.shape != x.shape:
        raise DataError(f"seeds must give one training seed per value, got {s.shape} for {x.shape}")
    z = None if against is None else np.asarray(against, dtype=np.float64)
    if z is not None and z.shape != x.shape:
        raise DataError(f"against must give one value per dose and seed, got {z.shape} for {x.shape}")
    if not 0.0 < level < 1.0 and against is None:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    bounds = (float(x.min()), float(x.max()))

    full = fit_logistic(x, y)
    full_other = None if z is None else fit_logistic(x, z)

    def tip(rows: np.ndarray) -> float:
        try:
            curve = fit_logistic(x[rows], y[rows], start=full)
            other: Logistic | float = level if z is None else fit_logistic(x[rows], z[rows], start=full_other)
        except DataError:
            return math.nan
        return crossing(curve, other, bounds)

    point = crossing(full, level if full_other is None else full_other, bounds)
    units = np.unique(s)
    if len(units) < 2:
        return Tipping(point, math.nan, math.nan, float(not math.isnan(point)), 0)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(s == u) for u in units]
    draws = []
    for _ in range(n_boot):
        picked = rng.integers(len(units), size=len(units))
        draws.append(tip(np.concatenate([members[i] for i in picked])))
    found = np.array([d for d in draws if not math.isnan(d)])
    if not found.size:
        return Tipping(point, math.nan, math.nan, 0.0, n_boot)
    low, high = np.quantile(found, [alpha, 1 - alpha])
    return Tipping(point, float(low), float(high), found.size / n_boot, n_boot)
