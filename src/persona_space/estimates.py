"""Tables of estimates and paired differences from sample-level rows, with the right replication units.

Every operation that reports a figure over samples (summaries, basin shares,
identity shifts) builds it here, so all of them resample the same units (training
seeds crossed with question groups, :mod:`persona_space.stats`), say the same way
what their interval is over, and adjust their p-values for the number of tests in
the table.

Every p-value says what it tests (the ``test`` column). :func:`estimate_table`
gives none unless asked for a stated ``reference`` level: a level tested against 0
(a 1-5 rating, a share) tests nothing. A comparison without variation (a constant
column, 0 against 0) has nothing to test: its p-value is NaN, its ``test`` reads
``"not tested: no variation"``, and it is left out of the adjusted family, whose
``adjustment`` says how many were (``"Holm over 30 tests; 18 without variation left
out"``). A difference of two shares both at 0 (or both at 1) gets Newcombe's hybrid
score interval at the effective sample sizes rather than the bootstrap's [0, 0].

>>> table = difference_table(samples.df, lengths, ["chars"], by="condition", reference="base")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from persona_space.constants import DEFAULT_BOOT
from persona_space.errors import ConfigError, DataError
from persona_space.stats import (
    Adjustment,
    Comparison,
    adjust_p_values,
    check_adjustment,
    check_confidence,
    check_finite,
    check_n_boot,
    compare,
    describe_adjustment,
    describe_interval,
    frame_cells,
    group_column,
)

NO_VARIATION = "not tested: no variation"
ONE_UNIT = "not tested: one unit"
NO_ESTIMATE = "not tested: no estimate"
_LEFT_OUT = {NO_VARIATION: "without variation", ONE_UNIT: "with one unit", NO_ESTIMATE: "without an estimate"}


def group_axis(frame: pd.DataFrame) -> list[Any]:
    """The question groups of ``frame`` in order of first appearance (every row its own when there are none)."""
    column = group_column(frame)
    return list(range(len(frame))) if column is None else list(dict.fromkeys(frame[column]))


def _seed_count(frame: pd.DataFrame) -> int:
    if "train_seed" not in frame.columns:
        return 1
    return max(1, int(frame["train_seed"].nunique(dropna=False)))


def _binary(matrix: np.ndarray) -> np.ndarray:
    """Which value columns are 0/1 indicators (their means are shares, bounded by 0 and 1)."""
    return np.asarray(((matrix == 0) | (matrix == 1)).all(axis=0))


def _share_bounds(table: pd.DataFrame, binary: np.ndarray, n: float, confidence: float) -> pd.DataFrame:
    """Shares: intervals clipped to [0, 1]; a share of exactly 0 or 1 gets a Wilson interval.

    The bootstrap cannot move a share that no sample (or every sample) reached, so
    such a share gets the Wilson interval at the effective sample size: samples over
    the design effect of the group's other shares (the median of their bootstrap
    variance against the binomial), which reads "0 %, up to 3 %" rather than [0, 0].
    """
    from persona_space.stats import design_effect, wilson_interval, z_quantile

    shares = table["estimate"].to_numpy(dtype=np.float64)
    low = table["low"].to_numpy(dtype=np.float64, copy=True)
    high = table["high"].to_numpy(dtype=np.float64, copy=True)
    var = ((high - low) / (2 * z_quantile(confidence))) ** 2
    effective = n / design_effect(np.where(binary, var, np.nan), np.where(binary, shares, np.nan), n)
    for j in np.flatnonzero(binary):
        if shares[j] in (0.0, 1.0):
            low[j], high[j] = wilson_interval(shares[j] * effective, effective, confidence)
    table["low"] = np.where(binary, np.clip(low, 0.0, 1.0), low)
    table["high"] = np.where(binary, np.clip(high, 0.0, 1.0), high)
    return table


def _difference_share_bounds(
    table: pd.DataFrame, binary: np.ndarray, n_target: float, n_reference: float, confidence: float
) -> pd.DataFrame:
    """Differences of two shares both at 0 or 1: Newcombe's hybrid score interval, not the bootstrap's point.

    Neither side moves in any replicate, so the bootstrap says [0, 0] (or [1, 1]).
    Each side's samples are divided by the design effect of the comparison's other
    shares (their bootstrap variance of the difference against the binomial one, at
    least 1), as :func:`_share_bounds` does for a single share.
    """
    from persona_space.stats import newcombe_interval, z_quantile

    a = table["value"].to_numpy(dtype=np.float64)
    b = table["reference_value"].to_numpy(dtype=np.float64)
    extreme = binary & np.isin(a, (0.0, 1.0)) & np.isin(b, (0.0, 1.0))
    if not extreme.any() or n_target <= 0 or n_reference <= 0:
        return table
    low = table["low"].to_numpy(dtype=np.float64, copy=True)
    high = table["high"].to_numpy(dtype=np.float64, copy=True)
    binomial = a * (1 - a) / n_target + b * (1 - b) / n_reference
    var = ((high - low) / (2 * z_quantile(confidence))) ** 2
    inside = binary & ~extreme & (binomial > 0) & np.isfinite(var)
    effect = float(max(1.0, np.median(var[inside] / binomial[inside]))) if inside.any() else 1.0
    n_a, n_b = n_target / effect, n_reference / effect
    for j in np.flatnonzero(extreme):
        low[j], high[j] = newcombe_interval(a[j] * n_a, n_a, b[j] * n_b, n_b, confidence)
    return table.assign(low=low, high=high)


def _tests(result: Comparison, against: str, one_unit: bool) -> list[str]:
    """The ``test`` column: what each p-value tests, or why there is none."""
    out = []
    for estimate, p, flat in zip(result.estimate, result.p_value, result.no_variation, strict=True):
        if math.isnan(estimate):
            out.append(NO_ESTIMATE)
        elif one_unit and math.isnan(p):
            out.append(ONE_UNIT)
        elif flat:
            out.append(NO_VARIATION)
        else:
            out.append(against)
    return out


def adjust_family(table: pd.DataFrame, adjust: Adjustment) -> pd.DataFrame:
    """``p_adjusted`` and ``adjustment`` over every tested row of ``table`` (its ``p_value`` and ``test`` columns).

    Rows without a test (NaN p-value: no variation, one unit) stay out of the family,
    and ``adjustment`` counts them: ``"Holm over 30 tests; 18 without variation left out"``.
    """
    adjust = check_adjustment(adjust)
    p = table["p_value"].to_numpy(dtype=np.float64)
    tested = int((~np.isnan(p)).sum())
    reasons = table["test"] if "test" in table.columns else pd.Series([""] * len(table), index=table.index)
    left_out: dict[str, int] = {}
    for why, count in reasons[np.isnan(p)].value_counts(sort=False).items():
        label = _LEFT_OUT.get(str(why), "without a p-value")
        left_out[label] = left_out.get(label, 0) + int(count)
    return table.assign(p_adjusted=adjust_p_values(p, adjust), adjustment=describe_adjustment(adjust, tested, left_out))


def _check_reference(reference: float | None) -> float | None:
    if reference is None:
        return None
    if isinstance(reference, bool) or not isinstance(reference, (int, float)) or not math.isfinite(reference):
        raise ConfigError(f"reference must be a finite number to test the estimates against, got {reference!r}")
    return float(reference)


def _regroup(frame: pd.DataFrame, units: np.ndarray) -> pd.DataFrame:
    """``frame`` with ``units`` as its question groups: what a cell of one question resamples instead."""
    return frame.drop(columns=["group", "probe_id"], errors="ignore").assign(group=units)


def _matrix(values: np.ndarray, names: Sequence[Any]) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    matrix = matrix[:, None] if matrix.ndim == 1 else matrix
    if matrix.shape[1] != len(names):
        raise DataError(f"{matrix.shape[1]} value columns but {len(names)} names; expected one name per column")
    check_finite(matrix, names)
    return matrix


def estimate_table(
    frame: pd.DataFrame,
    values: np.ndarray,
    names: Sequence[Any],
    by: Sequence[str],
    *,
    name_column: str = "metric",
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
    reference: float | None = None,
    reference_label: str | None = None,
    adjust: Adjustment = "holm",
) -> pd.DataFrame:
    """Per group of ``by`` and per value column: the pooled mean with a crossed-bootstrap interval.

    ``values[n, k]`` holds one row per row of ``frame`` and must be finite (a NaN row
    raises a :class:`DataError` naming the column); a 0/1 indicator gives a
    share, whose interval stays within [0, 1] and is a Wilson interval at the
    effective sample size where the share is exactly 0 or 1. Columns: ``by``...,
    ``name_column``, ``estimate``, ``low``, ``high``,
    ``seed_low``/``seed_high`` (Student-t over per-seed means, with two or more
    seeds), ``samples``, ``groups``, ``seeds`` and
    ``interval`` (what it is over). ``bounds`` clips the interval of values known to
    lie in a range (probabilities: ``(0, 1)``); 0/1 indicators are clipped anyway.

    No p-values by default: a level is not a test. With a stated ``reference``
    (values that are differences: 0; a 1-5 rating: 3, ``reference_label="scale
    midpoint"``) the table adds ``p_value`` (the t test of the estimate against it,
    with the bootstrap standard error), ``test`` (``"against 3 (scale midpoint)"``,
    or why a row is not tested), and ``p_adjusted`` with ``adjustment`` (``adjust``
    over every tested row; rows without variation are left out and counted).
    """
    check_n_boot(n_boot)
    check_confidence(confidence)
    null = _check_reference(reference)
    adjust = check_adjustment(adjust)
    if reference_label is not None and null is None:
        raise ConfigError(f"reference_label {reference_label!r} needs a reference value to test against")
    against = "" if null is None else f"against {null:g}" + ("" if reference_label is None else f" ({reference_label})")
    matrix = _matrix(values, names)
    binary = _binary(matrix)
    rng = np.random.default_rng(seed)
    out: list[pd.DataFrame] = []
    for key, index in frame.groupby(list(by), sort=False, dropna=False).indices.items():
        part = frame.iloc[index]
        groups = group_axis(part)
        units, unit = part, None
        if len(groups) == 1 and len(part) > 1 and group_column(part) is not None:
            # One question: nothing to resample between questions, so the interval is over its
            # samples (what this question's answers would be on another draw), and says so.
            units = _regroup(part, np.arange(len(part)))
            unit = f"sample{'s' * (len(part) != 1)} of 1 question group"
        cell_groups = group_axis(units)
        data = frame_cells(units, matrix[index], cell_groups, names)
        result = compare(data, n_boot=n_boot, confidence=confidence, rng=rng, null=0.0 if null is None else null)
        seeds = _seed_count(part)
        keys = key if isinstance(key, tuple) else (key,)
        table = pd.DataFrame({col: [value] * len(names) for col, value in zip(by, keys, strict=True)})
        table[name_column] = list(names)
        table = table.assign(
            estimate=result.estimate,
            low=result.low,
            high=result.high,
            seed_low=result.seed_low,
            seed_high=result.seed_high,
            samples=len(part),
            groups=len(groups),
            seeds=seeds,
            interval=describe_interval(
                groups=len(cell_groups), seeds=seeds, n_boot=n_boot, confidence=confidence, units=unit
            ),
        )
        if null is not None:
            one_unit = len(cell_groups) < 2 and seeds < 2
            table.insert(list(table.columns).index("samples"), "p_value", result.p_value)
            table.insert(list(table.columns).index("samples"), "test", _tests(result, against, one_unit))
        if bounds is not None:
            table = table.assign(low=table["low"].clip(*bounds), high=table["high"].clip(*bounds))
        out.append(_share_bounds(table, binary, float(len(part)), confidence) if binary.any() else table)
    if not out:
        return pd.DataFrame()
    table = pd.concat(out, ignore_index=True)
    return table if null is None else adjust_family(table, adjust)


def difference_table(
    frame: pd.DataFrame,
    values: np.ndarray,
    names: Sequence[Any],
    *,
    by: str,
    reference: str,
    strata: Sequence[str] = (),
    name_column: str = "metric",
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
    adjust: Adjustment = "holm",
) -> pd.DataFrame:
    """Each condition minus ``reference`` per value column, paired by question group, with adjusted p-values.

    Within each stratum (e.g. a temperature) every other value of ``by`` is
    compared with ``reference`` on the question groups they share: one group draw
    serves both sides, training seeds are drawn per side. Columns: ``by``,
    ``strata``..., ``name_column``, ``reference``, ``reference_value``, ``value``,
    ``difference``, ``low``, ``high``, ``seed_low``/``seed_high``, ``p_value`` (from
    the t test that matches the interval), ``test`` (``"against 0"``, or why a row
    is not tested), ``groups``, ``seeds``, ``interval``, ``p_adjusted`` (``adjust``
    over every tested row in the table) and ``adjustment``.

    A comparison whose difference does not vary (both sides constant and equal, as
    0 against 0, or paired answers that are the same) has nothing to test: its
    p-value is NaN, ``test`` reads ``"not tested: no variation"``, and it is left out
    of the family (``"Holm over 30 tests; 18 without variation left out"``). Two
    shares both at 0 (or 1) get Newcombe's hybrid score interval at the effective
    sample sizes, which is not the bootstrap's [0, 0]. Values must be finite.
    """
    check_n_boot(n_boot)
    check_confidence(confidence)
    adjust = check_adjustment(adjust)
    matrix = _matrix(values, names)
    binary = _binary(matrix)
    if by not in frame.columns:
        raise DataError(f"cannot compare by {by!r}; columns are {list(frame.columns)}")
    if not (frame[by] == reference).any():
        found = sorted(map(str, frame[by].unique()))
        raise DataError(f"no rows with {by}={reference!r} to compare with; found {found}")
    rng = np.random.default_rng(seed)
    out: list[pd.DataFrame] = []
    stratified = frame.groupby(list(strata), sort=False).indices.items() if strata else [((), np.arange(len(frame)))]
    for key, index in stratified:
        part = frame.iloc[index]
        is_ref = (part[by] == reference).to_numpy()
        ref_rows = np.asarray(index)[is_ref]
        for condition in dict.fromkeys(part.loc[~is_ref, by]):
            rows = np.asarray(index)[(part[by] == condition).to_numpy()]
            both = frame.iloc[np.concatenate([rows, ref_rows])]
            groups = group_axis(both)
            if len(groups) == len(both):
                raise DataError("difference_table needs a 'group' or 'probe_id' column to pair the conditions")
            questions, units, unit = len(groups), both, None
            if len(groups) == 1 and "sample_index" in both.columns and both["sample_index"].nunique() > 1:
                # One question: pair the conditions by random stream (sample index) instead, which
                # paired sampling shares between them, and resample the streams.
                units = _regroup(both, both["sample_index"].to_numpy())
                groups = group_axis(units)
                unit = "random streams of 1 question group"
            target = frame_cells(units.iloc[: len(rows)], matrix[rows], groups, names)
            base = frame_cells(units.iloc[len(rows) :], matrix[ref_rows], groups, names)
            result = compare(target, base, n_boot=n_boot, confidence=confidence, rng=rng)
            seeds = _seed_count(frame.iloc[rows])
            one_unit = len(groups) < 2 and target.n_seeds < 2 and base.n_seeds < 2
            keys = key if isinstance(key, tuple) else (key,)
            table = pd.DataFrame({by: [condition] * len(names)})
            for col, value in zip(strata, keys, strict=True):
                table[col] = value
            table[name_column] = list(names)
            table = table.assign(
                reference=reference,
                reference_value=base.mean(),
                value=target.mean(),
                difference=result.estimate,
                low=np.where(binary, np.clip(result.low, -1.0, 1.0), result.low),
                high=np.where(binary, np.clip(result.high, -1.0, 1.0), result.high),
                seed_low=result.seed_low,
                seed_high=result.seed_high,
                p_value=result.p_value,
                test=_tests(result, "against 0", one_unit),
                groups=questions,
                seeds=seeds,
                interval=describe_interval(
                    groups=len(groups),
                    seeds=seeds,
                    n_boot=n_boot,
                    confidence=confidence,
                    reference=reference,
                    units=unit,
                ),
            )
            if binary.any():
                table = _difference_share_bounds(table, binary, float(len(rows)), float(len(ref_rows)), confidence)
            out.append(table)
    if not out:
        return pd.DataFrame()
    return adjust_family(pd.concat(out, ignore_index=True), adjust)
