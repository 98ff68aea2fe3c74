"""The crossed cluster bootstrap over (training seed, question group) cells, and the figures built on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_space.constants import DEFAULT_BOOT
from persona_space.errors import ConfigError, DataError
from persona_space.stats._intervals import check_confidence, check_n_boot, t_interval_rows, z_quantile

if TYPE_CHECKING:
    import pandas as pd

NO_VARIATION_TOL = 1e-9  # a standard error at most this times max(1, |estimate|) is rounding noise: no variation


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
