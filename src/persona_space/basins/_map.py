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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from persona_space.basins._geometry import exact_knn, quiet
from persona_space.basins._grain import Grain, check_grain
from persona_space.constants import NOISE
from persona_space.errors import ConfigError, DataError
from persona_space.results import Result

if TYPE_CHECKING:
    from persona_space.embedding import Embedder
    from persona_space.models import LoadedModel
    from persona_space.sampling import SampleSet

from persona_space.basins._placement import MapPlacement
from persona_space.basins._views import as_frame

EXACT_KNN_LIMIT = 100_000


class BasinMap(MapPlacement, Result):
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

    kind: ClassVar[str] = "basin_map"
    table: ClassVar[str] = "samples"

    @property
    def df(self) -> pd.DataFrame:  # type: ignore[override]
        """The per-sample table: the samples' columns with ``basin``, ``sub_basin``, names, ``x``/``y``, strength."""
        self._check_fitted()
        return self.frame_

    @property
    def manifest(self) -> dict[str, Any]:  # type: ignore[override]
        """How the map was made (what :meth:`save` writes as ``manifest.json``).

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
    def load(cls, folder: str | os.PathLike[str], *, partial: bool = False) -> BasinMap:
        """A map written by :meth:`save`, ready for tables, charts and :meth:`assign` (no refit needed).

        A map is written whole, so ``partial`` changes nothing (it is there for :func:`persona_space.results.load`).
        """
        from persona_space.basins._persist import load_map

        return load_map(cls, folder)

    def __repr__(self) -> str:
        if not hasattr(self, "frame_"):
            return f"BasinMap(seed={self.seed}, unfitted)"
        noise = float((self.labels_ == NOISE).mean())
        subs = f" ({self.n_sub_basins_} sub-basins)" if self.n_sub_basins_ != self.n_basins_ else ""
        return f"BasinMap({self.n_basins_} basins{subs} over {len(self.labels_)} samples, noise {noise:.1%})"
