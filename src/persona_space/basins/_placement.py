"""Placing samples on a fitted basin map (its nearest fitted neighbours) and measuring their novelty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from persona_space.basins._geometry import nearest_distance
from persona_space.errors import DataError

if TYPE_CHECKING:
    from persona_space.embedding import Embedder
    from persona_space.sampling import SampleSet

from persona_space.basins._views import MapViews, as_frame


class MapPlacement(MapViews):
    """Placing samples on a fitted map: by their nearest fitted neighbours, with a novelty score."""

    embedder: Embedder | None
    max_per_condition: int | None
    novelty_quantile: float
    fit_vectors_: np.ndarray
    fit_labels_: np.ndarray
    fit_sub_labels_: np.ndarray
    fit_strength_: np.ndarray
    fit_xy_: np.ndarray
    members_: Any
    novelty_threshold_: float

    def _vectors(self, frame: pd.DataFrame, vectors: np.ndarray | None) -> np.ndarray:
        if vectors is None:
            from persona_space.embedding import Embedder

            if self.embedder is None:
                self.embedder = Embedder()
            return self.embedder.embed(frame["text"].tolist())
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(frame):
            raise DataError(f"vectors have shape {vectors.shape}; expected ({len(frame)}, dim), one row per sample")
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            raise DataError(f"vectors of rows {bad[:5].tolist()} hold NaN or infinity; expected finite numbers")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if np.all(np.abs(norms - 1) < 1e-5):
            return vectors  # already normalised: dividing again would perturb them (and a refit)
        return np.asarray(vectors / np.maximum(norms, 1e-12))

    def _novelty_threshold(self) -> float:
        """The ``novelty_quantile`` of each basin member's distance to its nearest other member.

        Noise samples are left out: they are far from everything by definition, and a
        threshold set by them would call nothing novel. ``members_`` keeps the members
        that novelty is measured against.
        """
        members = self.fit_labels_ >= 0
        pool = self.fit_vectors_[members] if members.sum() >= 2 else self.fit_vectors_
        nearest = nearest_distance(pool, pool, exclude_self=True)
        # HDBSCAN on the UMAP reduction can absorb isolated points into a basin; in the
        # embedding space they stand out (far beyond median + 5 MAD) and are left out.
        median = float(np.median(nearest))
        mad = float(np.median(np.abs(nearest - median))) * 1.4826
        typical = nearest <= median + 5 * max(mad, 1e-6)
        self.members_ = pool[typical]
        return float(np.quantile(nearest[typical], self.novelty_quantile))

    # -- assigning ---------------------------------------------------------------------------

    def assign(
        self, data: SampleSet | pd.DataFrame | Sequence[str], *, vectors: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Put new samples on this map: basin, strength, 2-D position and a novelty flag.

        Each new sample takes the similarity-weighted vote of its 15 nearest fitted
        samples in the embedding space (see ``_neighbours_vote``). UMAP's transform
        would map anything near some basin, hiding new clusters, so novelty
        is measured in the embedding space: a sample farther from every basin member
        than ``novelty_threshold_`` (the ``novelty_quantile`` of the members' own
        nearest-neighbour distances) is ``novel``.
        """
        self._check_fitted()
        frame = as_frame(data)
        return self._place(frame, self._vectors(frame, vectors), None)

    def _place(self, frame: pd.DataFrame, vectors: np.ndarray, fit_rows: np.ndarray | None) -> pd.DataFrame:
        labels = np.empty(len(frame), dtype=int)  # sub-basins; basins follow from them
        strength = np.empty(len(frame), dtype=float)
        xy = np.empty((len(frame), 2), dtype=float)
        rest = np.arange(len(frame))
        if fit_rows is not None:
            labels[fit_rows] = self.fit_sub_labels_
            strength[fit_rows] = self.fit_strength_
            xy[fit_rows] = self.fit_xy_
            rest = np.setdiff1d(rest, fit_rows)
        if len(rest):
            labels[rest], strength[rest], xy[rest] = self._neighbours_vote(vectors[rest])
        distance = nearest_distance(vectors, self.members_, exclude_self=False)
        out = frame.copy()
        out["basin"] = self.basin_of(labels)
        out["sub_basin"] = labels
        out["strength"] = strength
        out["x"], out["y"] = xy[:, 0], xy[:, 1]
        out["nearest_distance"] = distance
        out["novel"] = distance > self.novelty_threshold_
        out["in_fit"] = False
        if fit_rows is not None:
            out.loc[fit_rows, "in_fit"] = True
        return out

    def _neighbours_vote(self, queries: np.ndarray, k: int = 15, block: int = 2048) -> tuple[Any, Any, Any]:
        """Basin, strength and 2-D position of new samples from their ``k`` nearest fitted samples.

        Labels are a similarity-weighted vote of the neighbours (noise is a candidate too),
        strength is the winning share of the vote, and the position is the weighted mean
        of the neighbours' positions. All in the embedding space: no UMAP transform, so
        placing thousands of samples takes a fraction of a second and a loaded map needs
        no refit.
        """
        k = min(k, len(self.fit_vectors_))
        basins = np.unique(self.fit_sub_labels_)
        labels = np.empty(len(queries), dtype=int)
        strength = np.empty(len(queries))
        xy = np.empty((len(queries), 2))
        for start in range(0, len(queries), block):
            sims = queries[start : start + block] @ self.fit_vectors_.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            weights = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0) + 1e-6
            neighbour_labels = self.fit_sub_labels_[idx]
            votes = np.stack([(weights * (neighbour_labels == b)).sum(axis=1) for b in basins], axis=1)
            stop = start + len(idx)
            labels[start:stop] = basins[votes.argmax(axis=1)]
            strength[start:stop] = votes.max(axis=1) / weights.sum(axis=1)
            xy[start:stop] = (weights[:, :, None] * self.fit_xy_[idx]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
        return labels, strength, xy
