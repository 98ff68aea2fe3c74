"""Intervals, tests and multiplicity adjustment for every figure persona_space reports.

The design behind the numbers: samples fall into cells of (training seed, question
group). Paraphrases of one question are one unit (its ``group``), and training seeds
are the unit for a claim about a training recipe. Questions are *crossed* with seeds
(every adapter answers every question), so a bootstrap replicate draws seeds and
question groups independently and one group draw serves every seed and every
condition compared: this keeps the pairing of conditions that answered the same
questions, and counts the question-to-question spread once, as it enters the
estimate. (Resampling groups anew inside each seed would treat the same questions
as different ones and understate their variance.)

Each level draws ``n - 1`` of its ``n`` units with replacement: the plain bootstrap
shrinks the variance by ``(n - 1) / n`` per level. The interval is then widened by
the Student-t quantile at the Satterthwaite degrees of freedom (see :func:`compare`).
In 500 simulated experiments per design (seed, question, seed x question and sample
noise) a nominal 95 % interval covers the planted mean 94-97 % of the time from
3 seeds x 3 questions to 10 x 8, where the plain percentile bootstrap covers 80-90 %
(``tests/test_stats.py`` simulates it).

Degenerate cases are named rather than passed on as numbers: a value that is NaN
(or infinite) in some rows raises a :class:`~persona_space.errors.DataError` naming
the column and how many rows, instead of turning the whole column's estimate NaN; a
bootstrap standard error within rounding of zero (``se <= NO_VARIATION_TOL *
max(1, |estimate|)``, so a constant column of 0.3 is not "significant" at p = 1e-41
on floating-point noise) marks the comparison ``no_variation``, with a point interval
and no p-value: there is nothing to test, and such comparisons stay out of a family
of adjusted p-values. Differences of two shares that the bootstrap cannot move (0
against 0) get Newcombe's hybrid score interval instead (:func:`newcombe_interval`).

>>> low, high = wilson_interval(5, 100)
>>> round(low, 3), round(high, 3)
(0.022, 0.112)
>>> adjust_p_values([0.01, 0.04, 0.03], "holm").round(3).tolist()
[0.03, 0.06, 0.06]
>>> low, high = newcombe_interval(0, 20, 0, 20)
>>> round(low, 3), round(high, 3)
(-0.161, 0.161)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persona_space.constants import DEFAULT_BOOT as DEFAULT_BOOT  # re-exported: stats.DEFAULT_BOOT
from persona_space.constants import MIN_BOOT as MIN_BOOT
from persona_space.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

Adjustment = Literal["holm", "bh", "none"]
ADJUSTMENTS: tuple[str, ...] = ("holm", "bh", "none")
NO_VARIATION_TOL = 1e-9  # a standard error at most this times max(1, |estimate|) is rounding noise: no variation


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


# -- the crossed cluster bootstrap ------------------------------------------------------------


@dataclass(frozen=True)
class Cells:
    """Per-cell sums of ``k`` values and sample counts: ``sums[seeds, groups, k]``, ``counts[seeds, groups]``."""

    sums: np.ndarray
    counts: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.sums.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.sums.shape[1])

    def mean(self) -> np.ndarray:
        """The pooled mean of each value (total over total count)."""
        total = self.counts.sum()
        return np.asarray(self.sums.sum(axis=(0, 1)) / total) if total else np.full(self.sums.shape[2], np.nan)

    def seed_means(self) -> np.ndarray:
        """``[seeds, k]``: each seed's pooled mean."""
        counts = self.counts.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(self.sums.sum(axis=1) / counts[:, None])


def check_finite(values: np.ndarray, names: Sequence[Any] | None = None, *, unit: str = "row") -> None:
    """A :class:`DataError` naming the first column of ``values[n, k]`` with NaN or infinite rows, and how many.

    One missing value would otherwise make every bootstrap mean of its column NaN,
    and the column's estimate with it, without a word. ``names`` name the columns
    (else their index); ``unit`` says what a row is (``"cell"`` for summed cells).
    """
    values = np.asarray(values, dtype=np.float64)
    matrix = values[:, None] if values.ndim == 1 else values.reshape(-1, values.shape[-1])
    bad = ~np.isfinite(matrix)
    for j in map(int, np.flatnonzero(bad.any(axis=0))):
        name = repr(names[j]) if names is not None and j < len(names) else f"{j}"
        nan = int(np.isnan(matrix[:, j]).sum())
        infinite = int(bad[:, j].sum()) - nan
        counts = " and ".join(
            f"{k} {kind} {unit}{'s' * (k != 1)}" for k, kind in ((nan, "NaN"), (infinite, "infinite")) if k
        )
        raise DataError(
            f"value column {name} has {counts} of {len(matrix)}; expected a finite number in every {unit} "
            "(drop or fill the missing values first)"
        )


def cells(
    seed_index: np.ndarray,
    group_index: np.ndarray,
    values: np.ndarray,
    n_seeds: int,
    n_groups: int,
    names: Sequence[Any] | None = None,
) -> Cells:
    """Sum ``values[n, k]`` into (seed, group) cells given each row's seed and group index.

    Values must be finite (:func:`check_finite`; ``names`` name the columns in its error).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    check_finite(values, names)
    sums = np.zeros((n_seeds, n_groups, values.shape[1]))
    counts = np.zeros((n_seeds, n_groups))
    np.add.at(sums, (seed_index, group_index), values)
    np.add.at(counts, (seed_index, group_index), 1.0)
    return Cells(sums, counts)


def group_column(frame: pd.DataFrame) -> str | None:
    """The column naming each row's question group: ``group``, else ``probe_id``, else none."""
    return next((c for c in ("group", "probe_id") if c in frame.columns), None)


def frame_cells(
    frame: pd.DataFrame, values: np.ndarray, groups: Sequence[Any], names: Sequence[Any] | None = None
) -> Cells:
    """Rows of ``frame`` summed into (training seed, question group) cells over the common ``groups`` axis.

    Seeds are the distinct ``train_seed`` values (a missing seed, as for the base
    model, is one seed of its own, not dropped); without the column every row has
    the same seed. Rows are placed by :func:`group_column`; without one, each row is
    its own group (``groups`` must then be ``range(len(frame))``). ``names`` name the
    value columns in the error a NaN value raises.
    """
    import pandas as pd

    if "train_seed" in frame.columns:
        seed_index, uniques = pd.factorize(frame["train_seed"], use_na_sentinel=False, sort=True)
        n_seeds = len(uniques)
    else:
        seed_index, n_seeds = np.zeros(len(frame), dtype=np.int64), 1
    column = group_column(frame)
    if column is None:
        group_index = np.arange(len(frame))
    else:
        position = {g: i for i, g in enumerate(groups)}
        missing = set(frame[column]) - set(position)
        if missing:
            raise ConfigError(f"groups {sorted(map(str, missing))[:5]} are not on the group axis")
        group_index = frame[column].map(position).to_numpy(dtype=np.int64)
    return cells(np.asarray(seed_index), group_index, values, max(n_seeds, 1), len(groups), names)


def resample_weights(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n_units]`` bootstrap weights drawing ``n - 1`` of ``n`` units (one unit: weight 1)."""
    if n_units <= 1:
        return np.ones((n_boot, max(n_units, 1)))
    draws = n_units - 1
    return rng.multinomial(draws, np.full(n_units, 1.0 / n_units), size=n_boot) / draws


def replicate_means(data: Cells, w_seed: np.ndarray, w_group: np.ndarray) -> np.ndarray:
    """``[n_boot, k]`` weighted means of ``data`` under each replicate's seed and group weights."""
    num = np.einsum("bs,bg,sgk->bk", w_seed, w_group, data.sums)
    den = np.einsum("bs,bg,sg->b", w_seed, w_group, data.counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(num / den[:, None])


def percentile_interval(boots: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise percentile interval of bootstrap replicates (replicates with NaN are left out)."""
    alpha = (1 - check_confidence(confidence)) / 2
    with np.errstate(invalid="ignore"):
        low, high = np.nanquantile(boots, [alpha, 1 - alpha], axis=0)
    return np.asarray(low), np.asarray(high)


@dataclass(frozen=True)
class Comparison:
    """A crossed-bootstrap estimate (or difference) per value, with its interval and p-value.

    ``no_variation`` marks values whose bootstrap standard error is zero within
    :data:`NO_VARIATION_TOL` (a constant column, 0 against 0): their interval is the
    point and their p-value NaN, as there is nothing to test.
    """

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray
    seed_low: np.ndarray
    seed_high: np.ndarray
    no_variation: np.ndarray


def no_variation(se: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Where a standard error is rounding noise: ``se <= NO_VARIATION_TOL * max(1, |estimate|)`` (NaN: False)."""
    se, estimate = np.asarray(se, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(se <= NO_VARIATION_TOL * np.maximum(1.0, np.abs(estimate)))


def compare(
    target: Cells,
    reference: Cells | None = None,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    rng: np.random.Generator,
    null: float = 0.0,
) -> Comparison:
    """The pooled mean of ``target`` (minus ``reference``'s, when given) with crossed-bootstrap intervals.

    ``target`` and ``reference`` must share the group axis (the same question groups
    in the same order): one group draw serves both, so the difference is paired by
    question. Seeds are drawn separately for each (a base model has one).

    The interval is the percentile interval of the replicates with its half-widths
    scaled by ``t(nu) / z``: ``nu`` is the Satterthwaite degrees of freedom of the
    variance, from the seed and question components (each level resampled alone).
    With few units the bootstrap variance is itself uncertain, which the plain
    percentile interval ignores (about 89 % coverage at 3 seeds x 3 questions with
    ``n - 1`` draws alone, 97 % with the scaling; the factor goes to 1 as units grow).
    The p-value is the t test of the same standard error (the replicates' spread) and
    degrees of freedom, of the estimate against ``null``. Also gives the Student-t
    interval over per-seed means, NaN below two seeds.

    A standard error within rounding of zero (:func:`no_variation`: every replicate
    the same, as for a constant column or 0 against 0) gives a point interval at the
    estimate, no p-value (NaN) and ``no_variation`` True. Cells whose sums are NaN
    raise a :class:`DataError` naming the column.
    """
    check_n_boot(n_boot)
    if reference is not None and reference.n_groups != target.n_groups:
        raise ConfigError(f"reference has {reference.n_groups} question groups, target {target.n_groups}")
    for data in (target, reference):
        if data is not None:
            check_finite(data.sums, unit="cell")
    fixed_group = np.full((n_boot, target.n_groups), 1.0 / target.n_groups)
    w_group = resample_weights(target.n_groups, n_boot, rng)
    w_seed = resample_weights(target.n_seeds, n_boot, rng)
    fixed_seed = np.full(w_seed.shape, 1.0 / target.n_seeds)
    boots = replicate_means(target, w_seed, w_group)
    by_group = replicate_means(target, fixed_seed, w_group)
    components = [(np.nanvar(replicate_means(target, w_seed, fixed_group), axis=0), target.n_seeds - 1)]
    estimate = target.mean()
    per_seed = target.seed_means()
    if reference is not None:
        ref_seed = resample_weights(reference.n_seeds, n_boot, rng)
        ref_fixed = np.full(ref_seed.shape, 1.0 / reference.n_seeds)
        boots = boots - replicate_means(reference, ref_seed, w_group)
        by_group = by_group - replicate_means(reference, ref_fixed, w_group)
        components.append((np.nanvar(replicate_means(reference, ref_seed, fixed_group), axis=0), reference.n_seeds - 1))
        estimate = estimate - reference.mean()
        per_seed = per_seed - reference.mean()[None, :]
    components.append((np.nanvar(by_group, axis=0), target.n_groups - 1))
    nu = _satterthwaite(components, estimate.shape)
    from scipy.stats import t

    scale = t.ppf(0.5 + check_confidence(confidence) / 2, nu) / z_quantile(confidence)
    scaled = estimate[None, :] + (boots - estimate[None, :]) * scale[None, :]
    low, high = percentile_interval(scaled, confidence)
    seed_low, seed_high = t_interval_rows(per_seed[~np.isnan(per_seed).any(axis=1)], confidence)
    se = np.nanstd(boots, axis=0)
    flat = no_variation(se, estimate)
    p_value = _t_p_value(estimate - null, np.where(flat, 0.0, se), nu)
    low, high = np.where(flat, estimate, low), np.where(flat, estimate, high)
    seed_low = np.where(flat & np.isfinite(seed_low), estimate, seed_low)
    seed_high = np.where(flat & np.isfinite(seed_high), estimate, seed_high)
    return Comparison(estimate, low, high, p_value, seed_low, seed_high, flat)


def _satterthwaite(components: list[tuple[np.ndarray, int]], shape: tuple[int, ...]) -> np.ndarray:
    """Satterthwaite degrees of freedom of the summed variance components (at least 1; inf without any)."""
    total = sum(var for var, df in components if df > 0)
    spread = sum(var**2 / df for var, df in components if df > 0)
    if isinstance(total, int):  # no level has two units
        return np.full(shape, np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        nu = np.where(spread > 0, total**2 / np.where(spread > 0, spread, 1.0), np.inf)
    return np.asarray(np.maximum(nu, 1.0))


def _t_p_value(effect: np.ndarray, se: np.ndarray, nu: np.ndarray) -> np.ndarray:
    """Two-sided p-value of ``effect / se`` on ``nu`` degrees of freedom, matching the t-scaled interval.

    With few units a bootstrap tail share overstates the evidence: three question
    groups that agree put every replicate on one side (p = 1 / (B + 1)), while a t test
    on 2 degrees of freedom says what three units can. No spread: NaN, whether or not
    there is an effect (0 against 0 is not evidence of "no difference" at p = 1, and a
    constant that nothing replicates is no evidence of one).
    """
    from scipy.stats import t

    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.abs(effect) / se
        p = 2 * t.sf(stat, nu)
    return np.asarray(np.where(se > 0, p, np.nan))


def describe_interval(
    *,
    groups: int,
    seeds: int,
    n_boot: int,
    confidence: float = 0.95,
    reference: str | None = None,
    units: str | None = None,
) -> str:
    """What an interval is over, for the ``interval`` column of a table.

    ``units`` names what was resampled where it is not question groups, already in the
    number ``groups`` asks for (``"samples of 1 question group"`` where a cell holds one question).
    """
    noun = f"question group{'s' * (groups != 1)}" if units is None else units
    what = f"{confidence:.0%} bootstrap over {groups} {noun}"
    if seeds > 1:
        what += f" x {seeds} training seeds"
    what += f", {n_boot} resamples"
    if reference is not None:
        what += f", paired with {reference}"
    return what


# -- many comparisons -------------------------------------------------------------------------


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


def design_effect(boot_var: np.ndarray, shares: np.ndarray, n: float) -> float:
    """How much clustering inflates the variance of shares over independent sampling (at least 1).

    The median, over shares strictly between 0 and 1, of the bootstrap variance
    against the binomial ``p (1 - p) / n``; 1 where no share varies.
    """
    inside = (shares > 0) & (shares < 1) & np.isfinite(boot_var) & np.isfinite(shares)
    if not inside.any() or n <= 0:
        return 1.0
    binomial = shares[inside] * (1 - shares[inside]) / n
    return float(max(1.0, np.median(boot_var[inside] / binomial)))
