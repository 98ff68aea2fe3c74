"""How stable a basin map is: refit on subsamples with other seeds and match the basins.

For each seed the map is refitted (same parameters) on a random ``fraction`` of the
samples it was discovered on. Basins of the refit are matched one-to-one to the
original ones by the Hungarian algorithm on their Jaccard overlap (over the samples
both fits saw), and the adjusted Rand index compares the two labellings outright.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from persona_space.errors import ConfigError


def jaccard_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jaccard overlap of every basin of labelling ``a`` with every basin of ``b`` (noise left out)."""
    basins_a = np.unique(a[a >= 0])
    basins_b = np.unique(b[b >= 0])
    table = np.zeros((len(basins_a), len(basins_b)))
    for i, x in enumerate(basins_a):
        in_a = a == x
        for j, y in enumerate(basins_b):
            in_b = b == y
            union = np.logical_or(in_a, in_b).sum()
            table[i, j] = np.logical_and(in_a, in_b).sum() / union if union else 0.0
    return table, basins_a, basins_b


def stability(
    basin_map: Any, *, seeds: Sequence[int] = (1, 2, 3), fraction: float = 0.8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-basin table, per-seed table): matched Jaccard of every original basin, and ARI per refit.

    ``basin_map`` is a fitted :class:`~persona_space.basins.BasinMap`; each refit is one of its class.

    The per-basin table has ``basin``, ``basin_name``, ``mean_jaccard``, ``min_jaccard``
    over seeds; the per-seed table has ``seed``, ``adjusted_rand``, ``n_basins``.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    if not 0.2 <= fraction <= 1.0:
        raise ConfigError(f"fraction must be in [0.2, 1], got {fraction!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be non-negative integers, got {seeds!r}")
    reference = basin_map.fit_labels_
    texts = basin_map.frame_["text"].iloc[basin_map.fit_rows_].reset_index(drop=True)
    per_seed, per_basin = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(reference), size=max(10, int(fraction * len(reference))), replace=False))
        params = {**basin_map.get_params(), "embedder": basin_map.embedder, "seed": seed}
        params.update(balance_by=None, max_per_condition=None)
        refit = type(basin_map)(**params).fit(texts.iloc[keep].tolist(), vectors=basin_map.fit_vectors_[keep])
        ref, new = reference[keep], refit.fit_labels_
        per_seed.append(
            {"seed": seed, "adjusted_rand": float(adjusted_rand_score(ref, new)), "n_basins": refit.n_basins_}
        )
        table, basins_ref, _ = jaccard_matrix(ref, new)
        matched = dict.fromkeys(basins_ref.tolist(), 0.0)
        if table.size:
            rows, cols = linear_sum_assignment(-table)
            for r, c in zip(rows, cols, strict=True):
                matched[int(basins_ref[r])] = float(table[r, c])
        per_basin += [{"seed": seed, "basin": b, "jaccard": j} for b, j in matched.items()]
    names = basin_map.basin_names()
    frame = pd.DataFrame(per_basin)
    summary = frame.groupby("basin")["jaccard"].agg(mean_jaccard="mean", min_jaccard="min").reset_index()
    summary.insert(1, "basin_name", summary["basin"].map(names))
    return summary, pd.DataFrame(per_seed)
