"""What a fitted basin map reads out: the sample table, occupancy, divergence, transitions, stability."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from persona_space.constants import BASE, DEFAULT_BOOT, DEFAULT_PERM, NOISE, NOISE_NAME
from persona_space.errors import ConfigError, DataError
from persona_space.stats import Adjustment

if TYPE_CHECKING:
    from persona_space.sampling import SampleSet


Level = Literal["basin", "sub_basin"]


def _check_level(level: str) -> Level:
    if level not in ("basin", "sub_basin"):
        raise ConfigError(f"level must be 'basin' or 'sub_basin', got {level!r}")
    return level  # type: ignore[return-value]


HELD_OUT = "held-out half: odd sample indices (the map was fitted on the even ones)"
ALL_SAMPLES = "every sample (the map was fitted on these samples too)"


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


class MapViews:
    """The tables a fitted map reads out: samples, occupancy, divergence, transitions, stability.

    Attributes are set by :meth:`BasinMap.fit` (or a load); a map that has none raises
    :class:`~persona_space.errors.ConfigError` from every view.
    """

    frame_: pd.DataFrame
    basins_: pd.DataFrame
    sub_basins_: pd.DataFrame
    parents_: dict[int, int]
    fit_rows_: np.ndarray
    seed: int

    def basin_of(self, sub_basins: np.ndarray) -> np.ndarray:
        """The basin of each sub-basin id (noise, -1, stays noise)."""
        return np.array([self.parents_.get(int(s), NOISE) for s in sub_basins], dtype=int)

    def _check_fitted(self) -> None:
        if not hasattr(self, "frame_"):
            raise ConfigError("this BasinMap is not fitted yet; call fit(samples) first")

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
