"""Dose-response curves: a logistic fit and a monotone fit beside it, tipping doses with intervals over seeds.

A dose is how much of the variant a model was trained on (facts swapped in, a
mixing ratio, a weight); a response is a share in 0..1 (a candidate's probability
within the candidate set, or its share of sampled self-descriptions), one value
per (dose, training seed).

The logistic is ``low + (high - low) / (1 + exp(-slope * (dose - midpoint)))``,
fitted by least squares with ``low`` and ``high`` in 0..1. The monotone fit is
isotonic regression in the direction the data go (no shape assumed). The tipping
dose is where a curve crosses 0.5 (or another curve); its interval refits the
curve leaving out one training seed (and one question group) at a time: seeds
are the unit a claim about a recipe rests on, and questions are a sample too.

>>> fit = fit_logistic([0, 2, 4, 6, 8], [0.05, 0.1, 0.5, 0.9, 0.95])
>>> round(fit.midpoint, 1)
4.0
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from persona_space.errors import ConfigError, DataError
from persona_space.stats import check_confidence

GRID_POINTS = 801
TIPPING_METHOD = "delete-one jackknife"
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
    """A tipping dose with its interval, what the interval is over, and how often refits found a crossing.

    ``low``/``high`` are NaN where there is no interval (no crossing, or one unit only);
    an end is ``-inf``/``inf`` where it lies past the doses measured, or a refit crosses
    there (``censored`` says which side: ``"below"``, ``"above"`` or ``"both"``).
    ``found_share`` is the share of leave-one-out refits whose curve crosses inside
    the doses; ``units`` names what was left out in turn (training seeds, question groups).
    """

    dose: float
    low: float
    high: float
    found_share: float
    refits: int
    censored: str
    df: float
    units: str
    method: str = TIPPING_METHOD

    def describe(self, confidence: float = 0.95) -> str:
        """What the interval is, in words a table can carry."""
        if math.isnan(self.low):
            return f"no interval ({self.units})"
        return f"{confidence:.0%} {self.method} over {self.units} (t at {self.df:.1f} df)"


def tipping_dose(
    doses: Numbers,
    values: Numbers,
    seeds: Sequence[Any] | np.ndarray,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    level: float = 0.5,
    against: Numbers | None = None,
    confidence: float = 0.95,
) -> Tipping:
    """Where the logistic fit crosses ``level`` (or the curve of ``against``, values of a second candidate).

    ``values`` holds one share per (dose, training seed), or per (dose, seed, question
    group) with ``groups``. The point is the crossing of the curve fitted to all of
    them; it is NaN where that curve does not cross inside the doses, and then no
    interval is given. The interval is a delete-one jackknife: the curve is refitted
    without each training seed in turn, and without each question group in turn;
    the two variances add (seeds and groups are crossed) and the interval is
    ``dose ± t * se`` at Satterthwaite degrees of freedom. For a mean this is exactly
    the Student-t interval over the per-seed values; simulated with seed and group
    noise it covers 93-97 % at 3, 5 and 10 seeds (``tests/test_arithmetic.py``), where
    refitting seeds drawn with replacement covered 72-86 %. A refit that crosses
    outside the doses, or not at all, is censored: the interval is open on that side.
    """
    from scipy.stats import t as student_t

    alpha = 1 - check_confidence(confidence)
    x, y = _arrays(doses, values)
    s = np.asarray(seeds, dtype=object)
    if s.shape != x.shape:
        raise DataError(f"seeds must give one training seed per value, got {s.shape} for {x.shape}")
    g = None if groups is None else np.asarray(groups, dtype=object)
    if g is not None and g.shape != x.shape:
        raise DataError(f"groups must give one question group per value, got {g.shape} for {x.shape}")
    z = None if against is None else np.asarray(against, dtype=np.float64)
    if z is not None and z.shape != x.shape:
        raise DataError(f"against must give one value per dose and seed, got {z.shape} for {x.shape}")
    if against is None and not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    bounds = (float(x.min()), float(x.max()))
    span = bounds[1] - bounds[0]
    wide = (bounds[0] - span, bounds[1] + span)

    full = fit_logistic(x, y)
    full_other = None if z is None else fit_logistic(x, z)
    point = crossing(full, level if full_other is None else full_other, bounds)
    seed_units = [np.flatnonzero(s == u) for u in dict.fromkeys(s.tolist())]
    group_units = [] if g is None else [np.flatnonzero(g == u) for u in dict.fromkeys(g.tolist())]
    described = _units(len(seed_units), len(group_units))
    before = math.nan if math.isnan(point) else float(np.sign(_diff(full, full_other or level, point - 1e-3 * span)))

    def refit(rows: np.ndarray) -> tuple[float, int]:
        """The crossing without ``rows`` (extrapolated up to a span outside the doses), and where it lies:
        -1 censored below, 0 inside the doses, +1 censored above (NaN where no curve could be fitted)."""
        keep = np.setdiff1d(np.arange(len(x)), rows)
        try:
            curve = fit_logistic(x[keep], y[keep], start=full)
            other = level if z is None else fit_logistic(x[keep], z[keep], start=full_other)
        except DataError:
            return math.nan, 0
        dose = crossing(curve, other, wide)
        if math.isnan(dose):  # no crossing even a span outside: which side it lies on
            later = _diff(curve, other, point if math.isfinite(point) else bounds[1]) * before > 0
            return (wide[1] if later else wide[0]), (1 if later else -1)
        return dose, (1 if dose > bounds[1] else -1 if dose < bounds[0] else 0)

    if math.isnan(point):  # no point, no interval: only how many leave-one-seed-out refits would cross
        out = [refit(rows) for rows in seed_units] if len(seed_units) > 1 else []
        inside = sum(side == 0 and math.isfinite(d) for d, side in out)
        return Tipping(point, math.nan, math.nan, inside / len(out) if out else 0.0, len(out), "", math.nan, described)
    components: list[tuple[float, int]] = []
    sides: list[int] = []
    for units in (seed_units, group_units):
        if len(units) < 2:
            continue
        out = [refit(rows) for rows in units]
        found = np.array([d for d, _ in out if not math.isnan(d)])
        sides += [side for d, side in out if not math.isnan(d)]
        n = len(units)
        if len(found) < n:  # a refit failed outright: that level gives no variance
            continue
        components.append(((n - 1) / n * float(np.sum((found - found.mean()) ** 2)), n - 1))
    refits = len(sides)
    if not components:
        return Tipping(point, math.nan, math.nan, float(not sides) or 0.0, refits, "", math.nan, described)
    var = sum(v for v, _ in components)
    df = var**2 / sum(v**2 / k for v, k in components) if var > 0 else float(min(k for _, k in components))
    half = float(student_t.ppf(1 - alpha / 2, df)) * math.sqrt(var)
    low, high = point - half, point + half
    # an end past the doses measured, or a refit crossing there, is open: nothing was measured beyond
    below, above = -1 in sides or low < bounds[0], 1 in sides or high > bounds[1]
    censored = "both" if below and above else "below" if below else "above" if above else ""
    found_share = sides.count(0) / refits if refits else 0.0
    return Tipping(
        point, -math.inf if below else low, math.inf if above else high, found_share, refits, censored, df, described
    )


def _diff(curve: Logistic, other: Logistic | float, dose: float) -> float:
    level = float(other(dose)) if isinstance(other, Logistic) else float(other)
    return float(curve(dose)) - level


def _units(seeds: int, groups: int) -> str:
    parts = [f"{seeds} training seed{'s' * (seeds != 1)}"]
    if groups:
        parts.append(f"{groups} question group{'s' * (groups != 1)}")
    return " x ".join(parts)
