"""Comparing conditions on a basin map: occupancy with intervals, paired share differences, divergence, migration.

Intervals come from the crossed bootstrap of :mod:`persona_space.stats`: question
groups (``group``: a question and its paraphrases) are resampled, and so are training
seeds where a condition has several (``train_seed``), because samples of one question
or one adapter are not independent. Tables with several tests carry Holm-adjusted
p-values (or Benjamini-Hochberg, ``adjust="bh"``) and say so in ``adjustment``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from persona_space.constants import BASE, DEFAULT_BOOT, DEFAULT_PERM
from persona_space.errors import ConfigError, DataError
from persona_space.estimates import difference_table, estimate_table
from persona_space.stats import (
    Adjustment,
    adjust_p_values,
    check_adjustment,
    check_n_boot,
    describe_adjustment,
    describe_interval,
)

PAIR_KEYS = ("probe_id", "temperature", "sample_index")


def condition_column(frame: pd.DataFrame) -> str:
    """``condition`` where the table has it (several seeds per condition), else ``adapter``."""
    return "condition" if "condition" in frame.columns else "adapter"


def _by(frame: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
    cols = [condition_column(frame)] if by is None else [by] if isinstance(by, str) else list(by)
    missing = [c for c in cols if c not in frame.columns]
    if missing or not cols:
        raise ConfigError(f"cannot group by {missing or cols}; columns are {list(frame.columns)}")
    return cols


def _one_hot(frame: pd.DataFrame) -> tuple[list[int], np.ndarray]:
    basins = np.sort(frame["basin"].unique())
    return [int(b) for b in basins], (frame["basin"].to_numpy()[:, None] == basins[None, :]).astype(np.float64)


def occupancy(
    frame: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Share of each condition's samples in each basin (noise is its own row), with bootstrap intervals.

    One row per (condition, basin): ``samples``, ``count``, ``share``, ``low``,
    ``high`` (crossed bootstrap over question groups and training seeds),
    ``seed_low``/``seed_high`` (Student-t over per-seed shares, with two or more
    seeds), ``groups``, ``seeds`` and ``interval``. A basin that no sample (or every
    sample) of a condition reached gets the Wilson interval at the condition's
    effective sample size (samples over the design effect of its other basins), so it
    reads "0 %, up to 3 %" rather than [0, 0].
    """
    cols = _by(frame, by)
    basins, hot = _one_hot(frame)
    table = estimate_table(
        frame, hot, basins, cols, name_column="basin", n_boot=n_boot, confidence=confidence, seed=seed
    )
    table["basin"] = table["basin"].astype(int)
    table = table.rename(columns={"estimate": "share"})
    table.insert(list(table.columns).index("share"), "count", np.rint(table["share"] * table["samples"]).astype(int))
    return table


def occupancy_difference(
    frame: pd.DataFrame,
    reference: str = BASE,
    *,
    by: str | None = None,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
    adjust: Adjustment = "holm",
) -> pd.DataFrame:
    """Each condition's share of each basin minus ``reference``'s, paired by question group.

    One row per (condition, basin): ``reference_value`` and ``value`` (the two
    shares), ``difference``, ``low``/``high``, ``seed_low``/``seed_high``, ``p_value``
    and ``p_adjusted`` (``adjust`` over every condition x basin in the table),
    ``interval`` and ``adjustment``. With paired sampling the two sides also share
    random streams, which is what makes small differences visible.
    """
    column = _by(frame, by)[0]
    basins, hot = _one_hot(frame)
    table = difference_table(
        frame,
        hot,
        basins,
        by=column,
        reference=reference,
        name_column="basin",
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
        adjust=adjust,
    )
    table["basin"] = table["basin"].astype(int)
    return table


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0 = same distribution, 1 = disjoint)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def effective_basins(shares: np.ndarray) -> float:
    """exp(entropy) of a basin distribution: how many equally full basins it is worth."""
    p = np.asarray(shares, dtype=float)
    p = p[p > 0] / p.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def divergence(
    frame: pd.DataFrame,
    by: str | None = None,
    *,
    n_perm: int = DEFAULT_PERM,
    strata: Sequence[str] = PAIR_KEYS,
    seed: int = 0,
    adjust: Adjustment = "holm",
    n_boot: int = DEFAULT_BOOT,
) -> pd.DataFrame:
    """Pairwise Jensen-Shannon distance between conditions, with permutation p-values adjusted over the pairs.

    The permutation shuffles condition labels within each stratum: by default the
    pair keys (probe, temperature, sample index), so with paired sampling each
    base/adapter pair swaps as a unit, and a difference in which prompts each
    condition answered cannot make a difference in basins. The p-value treats the
    adapters as given. ``jsd_low``/``jsd_high`` is a 95 % crossed-bootstrap interval
    over question groups and training seeds. One row per pair: ``a``, ``b``,
    ``jsd``, ``jsd_low``, ``jsd_high``, ``p_value``, ``p_adjusted``, ``adjustment``,
    ``effective_basins_a``/``_b`` (noise counted as one basin).
    """
    cols = _by(frame, by)[0]
    adjust = check_adjustment(adjust)
    if isinstance(n_perm, bool) or not isinstance(n_perm, int) or n_perm < 99:
        raise ConfigError(f"n_perm must be an integer >= 99, got {n_perm!r}")
    basins = np.sort(frame["basin"].unique())
    conditions = sorted(frame[cols].unique(), key=str)
    if len(conditions) < 2:
        raise DataError(f"divergence needs at least two values of {cols!r}, found {conditions}")
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in itertools.combinations(conditions, 2):
        part = frame[frame[cols].isin([a, b])]
        labels = part["basin"].to_numpy()
        is_a = (part[cols] == a).to_numpy()
        observed = jensen_shannon(_counts(labels[is_a], basins), _counts(labels[~is_a], basins))
        present = [c for c in strata if c in part.columns]
        blocks = part.groupby(present).indices.values() if present else [np.arange(len(part))]
        blocks = [np.asarray(ix) for ix in blocks if len(ix) > 1]
        exceed = 0
        for _ in range(n_perm):
            shuffled = is_a.copy()
            for ix in blocks:
                shuffled[ix] = rng.permutation(is_a[ix])
            exceed += jensen_shannon(_counts(labels[shuffled], basins), _counts(labels[~shuffled], basins)) >= observed
        low, high, units = _jsd_interval(part, cols, a, b, basins, n_boot=n_boot, rng=rng)
        rows.append(
            {
                "a": a,
                "b": b,
                "jsd": observed,
                "jsd_low": low,
                "jsd_high": high,
                "interval": units,
                "p_value": (1 + exceed) / (1 + n_perm),
                "effective_basins_a": effective_basins(_counts(labels[is_a], basins)),
                "effective_basins_b": effective_basins(_counts(labels[~is_a], basins)),
            }
        )
    table = pd.DataFrame(rows)
    table.insert(7, "p_adjusted", adjust_p_values(table["p_value"].to_numpy(), adjust))
    table.insert(8, "adjustment", describe_adjustment(adjust, len(table)))
    return table


def _jsd_interval(
    part: pd.DataFrame, column: str, a: str, b: str, basins: np.ndarray, *, n_boot: int, rng: np.random.Generator
) -> tuple[float, float, str]:
    """95 % crossed-bootstrap interval of the Jensen-Shannon distance between ``a`` and ``b``.

    Question groups are drawn once for both sides, training seeds per side. The
    plug-in distance is biased upwards with few samples, and so is its interval:
    compare pairs measured on similar numbers of samples.
    """
    from persona_space.estimates import group_axis
    from persona_space.stats import frame_cells, percentile_interval, replicate_means, resample_weights

    check_n_boot(n_boot)
    hot = (part["basin"].to_numpy()[:, None] == basins[None, :]).astype(np.float64)
    groups = group_axis(part)
    if len(groups) == len(part):  # no question structure: nothing to resample by
        return (float("nan"), float("nan"), "no question groups to resample")
    is_a = (part[column] == a).to_numpy()
    side_a = frame_cells(part[is_a], hot[is_a], groups)
    side_b = frame_cells(part[~is_a], hot[~is_a], groups)
    w_group = resample_weights(len(groups), n_boot, rng)
    shares_a = replicate_means(side_a, resample_weights(side_a.n_seeds, n_boot, rng), w_group)
    shares_b = replicate_means(side_b, resample_weights(side_b.n_seeds, n_boot, rng), w_group)
    boots = np.array([_plain_jsd(p, q) for p, q in zip(shares_a, shares_b, strict=True)])
    low, high = percentile_interval(boots[:, None], 0.95)
    seeds = max(side_a.n_seeds, side_b.n_seeds)
    units = describe_interval(groups=len(groups), seeds=seeds, n_boot=n_boot) + " (percentile, plug-in distance)"
    return float(low[0]), float(high[0]), units


def _plain_jsd(p: np.ndarray, q: np.ndarray) -> float:
    if not (np.isfinite(p).all() and np.isfinite(q).all()) or p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return jensen_shannon(p, q)


def _counts(labels: np.ndarray, basins: np.ndarray) -> np.ndarray:
    counts = np.array([(labels == b).sum() for b in basins], dtype=float)
    return np.asarray(counts + 1e-12 * (counts.sum() == 0))


def transitions(
    frame: pd.DataFrame,
    a: str,
    b: str,
    *,
    by: str | None = None,
    pair_on: Sequence[str] = PAIR_KEYS,
) -> pd.DataFrame:
    """Where paired samples go: the basin under condition ``a`` against the basin under ``b``.

    Samples pair up when they share ``pair_on`` (the same probe, temperature and
    sample index). One row per (from_basin, to_basin) with ``count``, ``share`` (of
    the pairs leaving ``from_basin``), ``expected`` (the count if the two answers were
    independent draws: the product of the margins) and ``paired_streams`` (whether
    the two answers of each pair came from the same random stream, the ``seed``
    column). Only with paired streams does the table describe movement; with
    independent streams it is close to ``expected`` by construction.
    """
    column = _by(frame, by)[0]
    keys = _by(frame, [column, *pair_on])[1:]
    extra = ["seed"] if "seed" in frame.columns else []
    left = frame[frame[column] == a][[*keys, *extra, "basin"]]
    right = frame[frame[column] == b][[*keys, *extra, "basin"]]
    if left.empty or right.empty:
        found = sorted(frame[column].unique(), key=str)
        raise DataError(f"no samples for {column}={a!r} or {column}={b!r}; found {found}")
    pairs = left.merge(right, on=keys, suffixes=("_from", "_to"))
    if pairs.empty:
        raise DataError(f"no pairs of {a!r} and {b!r} share {list(keys)}")
    table = pairs.groupby(["basin_from", "basin_to"]).size().rename("count").reset_index()
    table["share"] = table["count"] / table.groupby("basin_from")["count"].transform("sum")
    out_margin = pairs["basin_from"].value_counts()
    in_margin = pairs["basin_to"].value_counts()
    table["expected"] = table["basin_from"].map(out_margin) * table["basin_to"].map(in_margin) / len(pairs)
    table["paired_streams"] = bool((pairs["seed_from"] == pairs["seed_to"]).all()) if extra else False
    return table.rename(columns={"basin_from": "from_basin", "basin_to": "to_basin"})


def stay_share(table: pd.DataFrame) -> tuple[float, float]:
    """Share of pairs that stay in their basin, and the share expected if the two draws were independent."""
    same = table["from_basin"] == table["to_basin"]
    total = float(table["count"].sum())
    return float(table.loc[same, "count"].sum()) / total, float(_diagonal_expected(table)) / total


def _diagonal_expected(table: pd.DataFrame) -> float:
    out_margin = table.groupby("from_basin")["count"].sum()
    in_margin = table.groupby("to_basin")["count"].sum()
    common = out_margin.index.intersection(in_margin.index)
    return float((out_margin[common] * in_margin[common]).sum() / table["count"].sum())
