"""``BasinMap``: embed self-descriptions, reduce with UMAP, cluster with HDBSCAN, name the basins.

scikit-learn conventions: parameters in ``__init__``, ``fit`` returns the map,
learned attributes end in ``_``. Discovery is balanced: the map is fitted on the
same number of samples from every condition (``balance_by``), so the largest
condition does not define the basins, and every sample is then assigned to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from persona_space.basins._geometry import exact_knn, nearest_distance, quiet
from persona_space.basins._grain import Grain, check_grain
from persona_space.constants import BASE, DEFAULT_BOOT, DEFAULT_PERM, NOISE, NOISE_NAME
from persona_space.errors import ConfigError, DataError
from persona_space.results import Result
from persona_space.stats import Adjustment

if TYPE_CHECKING:
    from persona_space.embedding import Embedder
    from persona_space.models import LoadedModel
    from persona_space.sampling import SampleSet

Level = Literal["basin", "sub_basin"]


def _check_level(level: str) -> Level:
    if level not in ("basin", "sub_basin"):
        raise ConfigError(f"level must be 'basin' or 'sub_basin', got {level!r}")
    return level  # type: ignore[return-value]


EXACT_KNN_LIMIT = 100_000


def as_frame(data: SampleSet | pd.DataFrame | Sequence[str]) -> pd.DataFrame:
    """A table with a ``text`` column from a SampleSet, a DataFrame or a list of texts."""
    frame = getattr(data, "df", data)
    if isinstance(frame, pd.DataFrame):
        if "text" not in frame.columns:
            raise DataError(f"the table has no 'text' column; columns are {list(frame.columns)}")
        return frame.reset_index(drop=True)
    if isinstance(frame, str) or not isinstance(frame, Sequence):
        raise DataError(f"expected a SampleSet, a DataFrame with 'text' or a list of texts, got {type(data).__name__}")
    return pd.DataFrame({"text": list(frame)})


HELD_OUT = "held-out half: odd sample indices (the map was fitted on the even ones)"
ALL_SAMPLES = "every sample (the map was fitted on these samples too)"


class BasinMap(Result):
    """A map of persona basins over sampled self-descriptions.

    Identical texts count once in discovery (``min_cluster_size`` counts distinct
    texts; by default 1/50 of them, at least 5) and every copy gets the basin.
    Both UMAP reductions (``n_components`` for clustering, 2-D for display) share
    one exact neighbour graph and run ``n_epochs`` / ``layout_epochs`` optimisation
    epochs: 200 is UMAP's own choice from 10,000 points up (below that it takes
    500, at 2.5 times the cost, for no visible change in the basins).

    Basins come in two levels: HDBSCAN's groups are *sub-basins*, and *basins* merge
    sub-basins that are variations of one thing (``grain="auto"``: a cut of the
    sub-basin dendrogram at a link distance calibrated on generated planted worlds;
    see ``basins._grain``); ``grain_`` records the choice, ``regrain`` changes it.

    ``cross_fit=True`` (default) finds the basins on the even sample indices only and
    assigns the odd ones, as :meth:`assign` would; occupancy differences and divergence
    are then tested on the odd half alone, so a test never reuses the samples that drew
    the map. Without a ``sample_index`` (plain texts), or with fewer than 10 samples in
    either half, the map is fitted on everything and the tables say so.

    >>> basins = BasinMap(seed=0).fit(samples)        # doctest: +SKIP
    >>> basins.basins_[["basin", "name", "size"]]      # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        n_components: int = 5,
        n_neighbors: int = 15,
        n_epochs: int = 200,
        layout_epochs: int = 200,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        balance_by: str | None = "adapter",
        max_per_condition: int | None = None,
        novelty_quantile: float = 0.99,
        grain: Grain = "auto",
        cross_fit: bool = True,
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_epochs = n_epochs
        self.layout_epochs = layout_epochs
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.balance_by = balance_by
        self.max_per_condition = max_per_condition
        self.novelty_quantile = novelty_quantile
        self.grain = grain
        self.cross_fit = cross_fit
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        for name in ("n_components", "n_neighbors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name} must be an integer >= 2, got {value!r}")
        for name in ("n_epochs", "layout_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 10:
                raise ConfigError(f"{name} must be an integer >= 10 (UMAP optimisation epochs), got {value!r}")
        for name in ("min_cluster_size", "min_samples", "max_per_condition"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise ConfigError(f"{name} must be None or an integer >= 2, got {value!r}")
        if not 0 < self.novelty_quantile <= 1:
            raise ConfigError(f"novelty_quantile must be in (0, 1], got {self.novelty_quantile!r}")
        if not isinstance(self.cross_fit, bool):
            raise ConfigError(f"cross_fit must be True or False, got {self.cross_fit!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        check_grain(self.grain)

    def get_params(self) -> dict[str, Any]:
        return {
            "embedder": None if self.embedder is None else self.embedder.describe(),
            "n_components": self.n_components,
            "n_neighbors": self.n_neighbors,
            "n_epochs": self.n_epochs,
            "layout_epochs": self.layout_epochs,
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "balance_by": self.balance_by,
            "max_per_condition": self.max_per_condition,
            "novelty_quantile": self.novelty_quantile,
            "grain": self.grain,
            "cross_fit": self.cross_fit,
            "seed": self.seed,
        }

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, data: SampleSet | pd.DataFrame | Sequence[str], *, vectors: np.ndarray | None = None) -> BasinMap:
        """Discover basins on a balanced subset, then assign every sample; returns the map.

        ``vectors`` (one normalised row per sample) skips embedding, e.g. when they
        were computed elsewhere.
        """
        import hdbscan

        from persona_space.basins._grain import merge_sub_basins

        frame = as_frame(data)
        if len(frame) < 10:
            raise DataError(f"{len(frame)} samples are too few to map; expected at least 10")
        vectors = self._vectors(frame, vectors)
        held_out = self._held_out(frame)
        fit_rows = self._balanced_rows(frame, eligible=~held_out)
        self.fit_rows_ = fit_rows
        # Identical answers ("Strawberry" x 200) are one point to UMAP and HDBSCAN: repeated
        # vectors would form disconnected neighbour graphs and break the reduction.
        unique, first, inverse = np.unique(vectors[fit_rows], axis=0, return_index=True, return_inverse=True)
        self.fit_unique_ = fit_rows[first]
        self.fit_inverse_ = inverse.reshape(-1)
        if len(unique) < 5:
            raise DataError(f"only {len(unique)} distinct texts to map; expected at least 5")
        size = self.min_cluster_size or max(5, len(unique) // 50)
        neighbours = min(self.n_neighbors, len(unique) - 1)
        # Both reductions share one neighbour graph. Up to EXACT_KNN_LIMIT points it is exact
        # (a blocked matrix product of the normalised vectors; UMAP's own exact path below
        # 4,096 points calls a Python distance per pair, ~20 s for 3,000), above it UMAP's
        # approximate NN-descent.
        knn = exact_knn(unique, neighbours) if len(unique) <= EXACT_KNN_LIMIT else (None, None)
        with quiet():
            import umap

            self.reducer_ = umap.UMAP(
                n_components=self.n_components,
                n_neighbors=neighbours,
                min_dist=0.0,
                metric="cosine",
                n_epochs=self.n_epochs,
                random_state=self.seed,
                precomputed_knn=None if knn[0] is None else (knn[0].copy(), knn[1].copy()),
            ).fit(unique)
            if knn[0] is None:
                knn = (self.reducer_._knn_indices, self.reducer_._knn_dists)
            self.layout_ = umap.UMAP(
                n_components=2,
                n_neighbors=neighbours,
                min_dist=0.1,
                metric="cosine",
                n_epochs=self.layout_epochs,
                random_state=self.seed,
                precomputed_knn=knn,
            ).fit(unique)
        self.clusterer_ = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=self.min_samples).fit(
            self.reducer_.embedding_
        )
        self.vectors_ = vectors
        self.fit_vectors_ = vectors[fit_rows]
        self.fit_sub_labels_ = self.clusterer_.labels_.astype(int)[self.fit_inverse_]
        self.parents_, self.grain_ = merge_sub_basins(
            self.fit_vectors_, self.fit_sub_labels_, self.grain, seed=self.seed
        )
        self.fit_labels_ = self.basin_of(self.fit_sub_labels_)
        self.fit_strength_ = self.clusterer_.probabilities_[self.fit_inverse_]
        self.fit_xy_ = self.layout_.embedding_[self.fit_inverse_]
        self.novelty_threshold_ = self._novelty_threshold()
        self.frame_ = self._place(frame, vectors, fit_rows).assign(held_out=held_out)
        self.environment_: dict[str, Any] | None = None  # scanned on the first manifest, then kept
        self._name(frame["text"].iloc[fit_rows].tolist())
        return self

    def basin_of(self, sub_basins: np.ndarray) -> np.ndarray:
        """The basin of each sub-basin id (noise, -1, stays noise)."""
        return np.array([self.parents_.get(int(s), NOISE) for s in sub_basins], dtype=int)

    def _name(self, fit_texts: list[str]) -> None:
        """Keyword names, exemplars and self-names for basins and for sub-basins (with their basin)."""
        from persona_space.basins._names import name_basins

        self.basins_ = pd.DataFrame(name_basins(fit_texts, self.fit_labels_, self.fit_vectors_))
        subs = pd.DataFrame(name_basins(fit_texts, self.fit_sub_labels_, self.fit_vectors_))
        self.sub_basins_ = subs.rename(columns={"basin": "sub_basin"}).assign(
            basin=self.basin_of(subs["basin"].to_numpy())
        )
        self.labels_ = self.frame_["basin"].to_numpy()

    def regrain(self, grain: Grain) -> BasinMap:
        """Choose another grain without refitting: ``"auto"``, ``"fine"`` (the sub-basins) or a number of basins.

        Sub-basins stay as they are; basins are merged anew from them, every sample
        is relabelled and the basins renamed (judge-written labels are dropped).
        """
        from persona_space.basins._grain import merge_sub_basins

        self._check_fitted()
        self.grain = check_grain(grain)
        self.parents_, self.grain_ = merge_sub_basins(
            self.fit_vectors_, self.fit_sub_labels_, self.grain, seed=self.seed
        )
        self.fit_labels_ = self.basin_of(self.fit_sub_labels_)
        self.frame_ = self.frame_.assign(basin=self.basin_of(self.frame_["sub_basin"].to_numpy()))
        self._name(self.frame_["text"].iloc[self.fit_rows_].tolist())
        self.__dict__.pop("label_writer_", None)
        return self

    def _vectors(self, frame: pd.DataFrame, vectors: np.ndarray | None) -> np.ndarray:
        if vectors is None:
            from persona_space.embedding import Embedder

            if self.embedder is None:
                self.embedder = Embedder()
            return self.embedder.embed(frame["text"].tolist())
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(frame):
            raise DataError(f"vectors have shape {vectors.shape}; expected ({len(frame)}, dim), one row per sample")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if np.all(np.abs(norms - 1) < 1e-5):
            return vectors  # already normalised: dividing again would perturb them (and a refit)
        return np.asarray(vectors / np.maximum(norms, 1e-12))

    def _held_out(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows kept out of discovery for the tests (odd sample indices) when cross-fitting; none otherwise.

        Cross-fitting needs random streams to split: a ``sample_index`` column with even
        and odd values, and at least 10 samples in each half.
        """
        none = np.zeros(len(frame), dtype=bool)
        if not self.cross_fit or "sample_index" not in frame.columns:
            return none
        odd = (pd.to_numeric(frame["sample_index"], errors="coerce").fillna(0).astype(int) % 2 == 1).to_numpy()
        return odd if min(int(odd.sum()), int((~odd).sum())) >= 10 else none

    def _balanced_rows(self, frame: pd.DataFrame, *, eligible: np.ndarray | None = None) -> np.ndarray:
        """Row indices for discovery (among ``eligible``): the same number from every condition (the smallest's)."""
        rng = np.random.default_rng(self.seed)
        pool = np.arange(len(frame)) if eligible is None else np.flatnonzero(eligible)
        if self.balance_by is None or self.balance_by not in frame.columns:
            cap = self.max_per_condition
            return np.sort(rng.choice(pool, size=cap, replace=False)) if cap and cap < len(pool) else pool
        groups = frame.iloc[pool].groupby(self.balance_by, sort=True).indices
        groups = {key: pool[idx] for key, idx in groups.items()}
        per = min(len(idx) for idx in groups.values())
        if self.max_per_condition is not None:
            per = min(per, self.max_per_condition)
        picked = [rng.choice(np.sort(idx), size=per, replace=False) for _, idx in sorted(groups.items())]
        return np.sort(np.concatenate(picked))

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

    def _check_fitted(self) -> None:
        if not hasattr(self, "frame_"):
            raise ConfigError("this BasinMap is not fitted yet; call fit(samples) first")

    # -- naming ------------------------------------------------------------------------------

    def label(
        self, writer: LoadedModel | Callable[[str], str], *, examples: int = 6, max_words: int = 6
    ) -> pd.DataFrame:
        """Judge-written labels: ``writer`` reads each basin's keywords, self-names and exemplars.

        ``writer`` is a loaded chat model (its base weights answer greedily) or any
        function from a prompt to text, e.g. a call to a hosted model. The labels go
        into ``basins_["label"]`` and, from then on, into the basin names of every
        table and chart; the keyword names stay in ``basins_["name"]``. Noise is not
        labelled. Returns ``basins_``.
        """
        from persona_space.basins._names import LABEL_SYSTEM_PROMPT, clean_label, label_prompt

        self._check_fitted()
        write: Callable[[str], str]
        if hasattr(writer, "generate_greedy") and hasattr(writer, "describe"):
            model: Any = writer

            def write(prompt: str) -> str:
                return str(model.generate_greedy(prompt, max_new_tokens=24, system_prompt=LABEL_SYSTEM_PROMPT))

            described: dict[str, Any] = {"model": model.describe(), "system_prompt": LABEL_SYSTEM_PROMPT}
        elif callable(writer):
            write = writer
            described = {"callable": getattr(writer, "__qualname__", type(writer).__name__)}
        else:
            raise ConfigError(f"writer must be a LoadedModel or a function from prompt to text, got {writer!r:.80}")
        labels: list[str | None] = []
        rows: list[dict[Any, Any]] = self.basins_.to_dict("records")
        for row in rows:
            if int(row["basin"]) < 0:
                labels.append(None)
                continue
            prompt = label_prompt(list(row["keywords"]), list(row["exemplars"])[:examples], list(row["self_names"]))
            answer = write(prompt)
            if not isinstance(answer, str):
                kind = type(answer).__name__
                raise DataError(f"the label writer returned {kind} for basin {row['basin']}; expected text")
            labels.append(clean_label(answer, max_words))
        self.basins_ = self.basins_.assign(label=pd.Series(labels, index=self.basins_.index, dtype=object))
        self.label_writer_ = described
        return self.basins_

    def basin_names(self) -> dict[int, str]:
        """Display name per basin: the judge-written label where there is one, else the keyword name."""
        self._check_fitted()
        names = dict(zip(self.basins_["basin"], self.basins_["name"], strict=True))
        if "label" in self.basins_.columns:
            for basin, label in zip(self.basins_["basin"], self.basins_["label"], strict=True):
                if isinstance(label, str) and label:
                    names[basin] = label
        return names

    # -- views -------------------------------------------------------------------------------

    def sub_basin_names(self) -> dict[int, str]:
        """Display name per sub-basin: its keywords."""
        self._check_fitted()
        return dict(zip(self.sub_basins_["sub_basin"], self.sub_basins_["name"], strict=True))

    def to_frame(self, level: Level = "basin") -> pd.DataFrame:
        """Every fitted sample with its basin and sub-basin (ids and names), strength, 2-D position and novelty.

        ``level="sub_basin"`` puts the sub-basins in the ``basin``/``basin_name``
        columns (for charts and tables at the finer grain); ``level`` says which.
        """
        self._check_fitted()
        frame = self.frame_.assign(
            basin_name=self.frame_["basin"].map(self.basin_names()).fillna(NOISE_NAME),
            sub_basin_name=self.frame_["sub_basin"].map(self.sub_basin_names()).fillna(NOISE_NAME),
            level=_check_level(level),
        )
        if level == "sub_basin":
            frame = frame.assign(basin=frame["sub_basin"], basin_name=frame["sub_basin_name"])
        return frame

    def _at(self, level: Level) -> tuple[pd.DataFrame, dict[int, str]]:
        """The sample table with ``basin`` at ``level``, and the names at that level."""
        if _check_level(level) == "sub_basin":
            return self.frame_.assign(basin=self.frame_["sub_basin"]), self.sub_basin_names()
        return self.frame_, self.basin_names()

    @property
    def cross_fitted_(self) -> bool:
        """Whether discovery left out a half (odd sample indices) that the tests then use."""
        self._check_fitted()
        return "held_out" in self.frame_.columns and bool(self.frame_["held_out"].any())

    def _tested(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The rows a test may use, and what they are: the held-out half where the map was cross-fitted."""
        if self.cross_fitted_:
            return frame[frame["held_out"].to_numpy(dtype=bool)], HELD_OUT
        return frame, ALL_SAMPLES

    def occupancy(
        self,
        by: str | Sequence[str] | None = None,
        *,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        seed: int = 0,
        level: Level = "basin",
    ) -> pd.DataFrame:
        """Share of samples per basin and condition (``by``: default ``condition``) with crossed-bootstrap intervals.

        See :func:`persona_space.basins.occupancy`; the ``interval`` column says what
        each interval is over. ``level="sub_basin"`` counts sub-basins instead.
        """
        from persona_space.basins._compare import occupancy

        self._check_fitted()
        frame, names = self._at(level)
        table = occupancy(frame, by, n_boot=n_boot, confidence=confidence, seed=seed)
        return table.assign(basin_name=table["basin"].map(names).fillna(NOISE_NAME), level=level)

    def occupancy_difference(
        self,
        reference: str = BASE,
        *,
        by: str | None = None,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        seed: int = 0,
        adjust: Adjustment = "holm",
        level: Level = "basin",
    ) -> pd.DataFrame:
        """Each condition's basin shares minus ``reference``'s: paired intervals and adjusted p-values.

        On a cross-fitted map (the default where samples carry ``sample_index``) only the
        held-out half is tested: the basins were found on the other half, so the test does
        not reuse the samples that drew them; ``tested`` says which rows were used.
        """
        from persona_space.basins._compare import occupancy_difference

        self._check_fitted()
        frame, names = self._at(level)
        frame, tested = self._tested(frame)
        table = occupancy_difference(
            frame, reference, by=by, n_boot=n_boot, confidence=confidence, seed=seed, adjust=adjust
        )
        return table.assign(basin_name=table["basin"].map(names).fillna(NOISE_NAME), level=level, tested=tested)

    def divergence(
        self,
        by: str | None = None,
        *,
        n_perm: int = DEFAULT_PERM,
        strata: Sequence[str] = ("probe_id", "temperature", "sample_index"),
        seed: int = 0,
        adjust: Adjustment = "holm",
        n_boot: int = DEFAULT_BOOT,
    ) -> pd.DataFrame:
        """Pairwise Jensen-Shannon distances between conditions with permutation p-values, adjusted over pairs.

        Like :meth:`occupancy_difference`, on the held-out half of a cross-fitted map.
        """
        from persona_space.basins._compare import divergence

        self._check_fitted()
        frame, tested = self._tested(self.frame_)
        table = divergence(frame, by, n_perm=n_perm, strata=strata, seed=seed, adjust=adjust, n_boot=n_boot)
        return table.assign(tested=tested)

    def transitions(
        self,
        a: str,
        b: str,
        *,
        by: str | None = None,
        pair_on: Sequence[str] = ("probe_id", "temperature", "sample_index"),
    ) -> pd.DataFrame:
        """Basin-to-basin migration of paired samples from condition ``a`` to ``b`` (see ``basins.transitions``)."""
        from persona_space.basins._compare import transitions

        self._check_fitted()
        return transitions(self.frame_, a, b, by=by, pair_on=pair_on)

    def stability(
        self, *, seeds: Sequence[int] = (1, 2, 3), fraction: float = 0.8
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Refit on subsamples with other seeds; per-basin matched Jaccard and per-seed adjusted Rand."""
        from persona_space.basins._stability import stability

        self._check_fitted()
        return stability(self, seeds=seeds, fraction=fraction)

    @property
    def n_basins_(self) -> int:
        self._check_fitted()
        return int((self.basins_["basin"] >= 0).sum())

    @property
    def n_sub_basins_(self) -> int:
        self._check_fitted()
        return int((self.sub_basins_["sub_basin"] >= 0).sum())

    kind: ClassVar[str] = "basin_map"

    @property
    def df(self) -> pd.DataFrame:  # type: ignore[override]
        """The per-sample table: the samples' columns with ``basin``, ``sub_basin``, names, ``x``/``y``, strength."""
        self._check_fitted()
        return self.frame_

    @property
    def manifest(self) -> dict[str, Any]:  # type: ignore[override]
        """How the map was made (what :meth:`save` writes as ``basin_map.json``).

        The environment is the one that fitted the map (scanned once), or for a loaded
        map the one its manifest records.
        """
        from persona_space.basins._persist import map_manifest

        self._check_fitted()
        return map_manifest(self)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the map to ``folder`` as Parquet, JSON and NumPy arrays (no pickle)."""
        from persona_space.basins._persist import save_map

        self._check_fitted()
        return save_map(self, folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> BasinMap:
        """A map written by :meth:`save`, ready for tables, charts and :meth:`assign` (no refit needed)."""
        from persona_space.basins._persist import load_map

        return load_map(cls, folder)

    def __repr__(self) -> str:
        if not hasattr(self, "frame_"):
            return f"BasinMap(seed={self.seed}, unfitted)"
        noise = float((self.labels_ == NOISE).mean())
        subs = f" ({self.n_sub_basins_} sub-basins)" if self.n_sub_basins_ != self.n_basins_ else ""
        return f"BasinMap({self.n_basins_} basins{subs} over {len(self.labels_)} samples, noise {noise:.1%})"
