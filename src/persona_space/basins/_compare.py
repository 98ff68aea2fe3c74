"""Comparing conditions on a basin map: occupancy with intervals, divergence, migration between basins.

Intervals come from a cluster bootstrap: whole prompts (``group``, the base probe of
its paraphrases) are resampled within each condition, and so are seeds where a
column names them, because samples of one prompt are not independent.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from persona_space.errors import ConfigError, DataError

NOISE_NAME = "noise"


def _by(frame: pd.DataFrame, by: str | Sequence[str]) -> list[str]:
    cols = [by] if isinstance(by, str) else list(by)
    missing = [c for c in cols if c not in frame.columns]
    if missing or not cols:
        raise ConfigError(f"cannot group by {missing or cols}; columns are {list(frame.columns)}")
    return cols


def _units(frame: pd.DataFrame, clusters: Sequence[str]) -> np.ndarray:
    present = [c for c in clusters if c in frame.columns]
    if not present:
        return np.arange(len(frame))  # no prompt structure: resample samples
    return np.asarray(frame.groupby(present, sort=True).ngroup().to_numpy())


def _shares(labels: np.ndarray, basins: np.ndarray) -> np.ndarray:
    return np.array([(labels == b).mean() for b in basins]) if len(labels) else np.zeros(len(basins))


def occupancy(
    frame: pd.DataFrame,
    by: str | Sequence[str] = "adapter",
    *,
    clusters: Sequence[str] = ("group", "train_seed"),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Share of each condition's samples in each basin (noise is its own row), with bootstrap intervals.

    One row per (condition, basin): ``samples``, ``count``, ``share``, ``low``, ``high``.
    """
    cols = _by(frame, by)
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ConfigError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    basins = np.sort(frame["basin"].unique())
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    rows = []
    for key, part in frame.groupby(cols, sort=True):
        labels = part["basin"].to_numpy()
        units = _units(part, clusters)
        members = [np.flatnonzero(units == u) for u in np.unique(units)]
        boots = np.empty((n_boot, len(basins)))
        for b in range(n_boot):
            pick = rng.integers(len(members), size=len(members))
            boots[b] = _shares(labels[np.concatenate([members[i] for i in pick])], basins)
        low, high = np.quantile(boots, [alpha, 1 - alpha], axis=0)
        point = _shares(labels, basins)
        values = key if isinstance(key, tuple) else (key,)
        for j, basin in enumerate(basins):
            rows.append(
                {
                    **dict(zip(cols, values, strict=True)),
                    "basin": int(basin),
                    "samples": len(labels),
                    "count": int((labels == basin).sum()),
                    "share": float(point[j]),
                    "low": float(low[j]),
                    "high": float(high[j]),
                    "units": len(members),
                }
            )
    return pd.DataFrame(rows)


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
    by: str = "adapter",
    *,
    n_perm: int = 1000,
    strata: Sequence[str] = ("probe_id",),
    seed: int = 0,
) -> pd.DataFrame:
    """Pairwise Jensen-Shannon distance between conditions, with a permutation p-value.

    The permutation shuffles condition labels within each stratum (the probe, by
    default), so a difference in which prompts each condition answered cannot make
    a difference in basins. One row per pair: ``a``, ``b``, ``jsd``, ``p_value``,
    ``effective_basins_a``/``_b`` (noise counted as one basin).
    """
    cols = _by(frame, by)[0]
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
        blocks = [np.asarray(ix) for ix in blocks]
        exceed = 0
        for _ in range(n_perm):
            shuffled = is_a.copy()
            for ix in blocks:
                shuffled[ix] = rng.permutation(is_a[ix])
            exceed += jensen_shannon(_counts(labels[shuffled], basins), _counts(labels[~shuffled], basins)) >= observed
        rows.append(
            {
                "a": a,
                "b": b,
                "jsd": observed,
                "p_value": (1 + exceed) / (1 + n_perm),
                "effective_basins_a": effective_basins(_counts(labels[is_a], basins)),
                "effective_basins_b": effective_basins(_counts(labels[~is_a], basins)),
            }
        )
    return pd.DataFrame(rows)


def _counts(labels: np.ndarray, basins: np.ndarray) -> np.ndarray:
    counts = np.array([(labels == b).sum() for b in basins], dtype=float)
    return np.asarray(counts + 1e-12 * (counts.sum() == 0))


def transitions(
    frame: pd.DataFrame,
    a: str,
    b: str,
    *,
    by: str = "adapter",
    pair_on: Sequence[str] = ("probe_id", "temperature", "sample_index"),
) -> pd.DataFrame:
    """Where paired samples go: the basin under condition ``a`` against the basin under ``b``.

    Samples pair up when they share ``pair_on`` (the same probe, temperature and
    sample index). One row per (from_basin, to_basin) with ``count`` and ``share``
    (of the pairs leaving ``from_basin``).
    """
    keys = _by(frame, [by, *pair_on])[1:]
    left = frame[frame[by] == a][[*keys, "basin"]]
    right = frame[frame[by] == b][[*keys, "basin"]]
    if left.empty or right.empty:
        raise DataError(f"no samples for {by}={a!r} or {by}={b!r}; found {sorted(frame[by].unique(), key=str)}")
    pairs = left.merge(right, on=keys, suffixes=("_from", "_to"))
    if pairs.empty:
        raise DataError(f"no pairs of {a!r} and {b!r} share {list(keys)}")
    table = pairs.groupby(["basin_from", "basin_to"]).size().rename("count").reset_index()
    table["share"] = table["count"] / table.groupby("basin_from")["count"].transform("sum")
    return table.rename(columns={"basin_from": "from_basin", "basin_to": "to_basin"})
