"""Tables of estimates and paired differences from sample-level rows, with the right replication units.

Every operation that reports a figure over samples (summaries, basin shares,
identity shifts) builds it here, so all of them resample the same units (training
seeds crossed with question groups, :mod:`persona_space.stats`), say the same way
what their interval is over, and adjust their p-values for the number of tests in
the table.

>>> table = difference_table(samples.df, lengths, ["chars"], by="condition", reference="base")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from persona_space.errors import DataError
from persona_space.stats import (
    DEFAULT_BOOT,
    Adjustment,
    adjust_p_values,
    check_adjustment,
    check_confidence,
    check_n_boot,
    compare,
    describe_adjustment,
    describe_interval,
    frame_cells,
    group_column,
)


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


def _regroup(frame: pd.DataFrame, units: np.ndarray) -> pd.DataFrame:
    """``frame`` with ``units`` as its question groups: what a cell of one question resamples instead."""
    return frame.drop(columns=["group", "probe_id"], errors="ignore").assign(group=units)


def _matrix(values: np.ndarray, names: Sequence[Any]) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    matrix = matrix[:, None] if matrix.ndim == 1 else matrix
    if matrix.shape[1] != len(names):
        raise DataError(f"{matrix.shape[1]} value columns but {len(names)} names; expected one name per column")
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
) -> pd.DataFrame:
    """Per group of ``by`` and per value column: the pooled mean with a crossed-bootstrap interval.

    ``values[n, k]`` holds one row per row of ``frame``; a 0/1 indicator gives a
    share, whose interval stays within [0, 1] and is a Wilson interval at the
    effective sample size where the share is exactly 0 or 1. Columns: ``by``...,
    ``name_column``, ``estimate``, ``low``, ``high``,
    ``seed_low``/``seed_high`` (Student-t over per-seed means, with two or more
    seeds), ``p_value`` (of the estimate against 0: a t test with the bootstrap standard error; for
    values that are already differences), ``samples``, ``groups``, ``seeds`` and
    ``interval`` (what it is over). ``bounds`` clips the interval of values known to
    lie in a range (probabilities: ``(0, 1)``); 0/1 indicators are clipped anyway.
    """
    check_n_boot(n_boot)
    check_confidence(confidence)
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
        result = compare(frame_cells(units, matrix[index], cell_groups), n_boot=n_boot, confidence=confidence, rng=rng)
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
            p_value=result.p_value,
            samples=len(part),
            groups=len(groups),
            seeds=seeds,
            interval=describe_interval(
                groups=len(cell_groups), seeds=seeds, n_boot=n_boot, confidence=confidence, units=unit
            ),
        )
        if bounds is not None:
            table = table.assign(low=table["low"].clip(*bounds), high=table["high"].clip(*bounds))
        out.append(_share_bounds(table, binary, float(len(part)), confidence) if binary.any() else table)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


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
    the t test that matches the interval), ``p_adjusted`` (``adjust`` over every test in the table),
    ``groups``, ``seeds``, ``interval`` and ``adjustment``.
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
            target = frame_cells(units.iloc[: len(rows)], matrix[rows], groups)
            base = frame_cells(units.iloc[len(rows) :], matrix[ref_rows], groups)
            result = compare(target, base, n_boot=n_boot, confidence=confidence, rng=rng)
            seeds = _seed_count(frame.iloc[rows])
            keys = key if isinstance(key, tuple) else (key,)
            table = pd.DataFrame({by: [condition] * len(names)})
            for col, value in zip(strata, keys, strict=True):
                table[col] = value
            table[name_column] = list(names)
            out.append(
                table.assign(
                    reference=reference,
                    reference_value=base.mean(),
                    value=target.mean(),
                    difference=result.estimate,
                    low=np.where(binary, np.clip(result.low, -1.0, 1.0), result.low),
                    high=np.where(binary, np.clip(result.high, -1.0, 1.0), result.high),
                    seed_low=result.seed_low,
                    seed_high=result.seed_high,
                    p_value=result.p_value,
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
            )
    if not out:
        return pd.DataFrame()
    table = pd.concat(out, ignore_index=True)
    table["p_adjusted"] = adjust_p_values(table["p_value"].to_numpy(), adjust)
    table["adjustment"] = describe_adjustment(adjust, int(table["p_value"].notna().sum()))
    return table
