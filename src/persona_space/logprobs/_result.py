"""``ShiftResult``: an identity-shift run's rows and the comparisons read from them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from persona_space.constants import BASE, DEFAULT_BOOT
from persona_space.errors import ConfigError, CorruptRunError, DataError
from persona_space.logprobs._spec import (
    _SCORES,
    SET_MASS_FLOOR,
    Normalize,
    candidates_disjoint,
)
from persona_space.logprobs._tables import (
    COLUMNS,
    _below,
    _tested_score,
    _with_set_logmass,
    shift_table,
)
from persona_space.results import Result, Stored
from persona_space.stats import Adjustment

TABLE = "shift"


@dataclass
class ShiftResult(Result):
    """Candidate scores per (probe, candidate, adapter) in :attr:`df`; :meth:`shifts` compares them."""

    kind: ClassVar[str] = "identity_shift"
    table: ClassVar[str] = TABLE
    df: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def conditions(self) -> list[str]:
        """The adapter conditions, in the order they were given (the base model excluded)."""
        return [c for c in dict.fromkeys(self.df["condition"]) if c != BASE]

    @property
    def set_mass_floor(self) -> float:
        """The floor (nats) the run was checked against: the manifest's, or :data:`SET_MASS_FLOOR` for older runs."""
        recorded = self.manifest.get("set_mass")
        if not isinstance(recorded, dict) or "floor" not in recorded:
            return SET_MASS_FLOOR
        floor = recorded["floor"]
        return -math.inf if floor is None else float(floor)

    def shifts(
        self,
        *,
        by_prompt: bool = False,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        seed: int = 0,
        adjust: Adjustment = "holm",
        set_mass_floor: float | None = None,
    ) -> pd.DataFrame:
        """Adapter minus base, per condition and candidate, with bootstrap intervals.

        Per prompt (and adapter seed) the differences are ``delta_logprob``,
        ``delta_mean_logprob``, ``delta_set_prob`` (where ``set_prob`` is a
        probability) and ``delta_pmi`` (with PMI), and ``rank_change`` (base rank minus
        adapter rank: positive = the candidate rose). Aggregated (the default), each is
        the mean over prompts and seeds with an interval from a bootstrap over question
        groups (paraphrases of one question are one unit) crossed with training seeds;
        ``interval`` says what it is over. The shift in the ranking score is tested
        against zero, with p-values ``adjust``-ed over every condition x candidate.
        ``by_prompt=True`` returns the per-prompt differences instead.

        Where ``set_prob`` is a probability the table also gives the mass it is a share
        of: the mean set log-mass under base and adapter and the share of prompts whose
        set holds less than ``set_mass_floor`` (default: the floor the run was checked
        against, :attr:`set_mass_floor`); see :func:`shift_table`.
        """
        return shift_table(
            self.df,
            by_prompt=by_prompt,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            adjust=adjust,
            normalize=self._normalize,
            set_mass_floor=self.set_mass_floor if set_mass_floor is None else set_mass_floor,
        )

    def compare(
        self,
        reference: str,
        *,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        seed: int = 0,
        adjust: Adjustment = "holm",
    ) -> pd.DataFrame:
        """Each condition's shift minus ``reference``'s, per candidate, paired by question group.

        What a control needs: a Bitcoin adapter against one trained on the same prices
        shuffled across dates, a variant against the figure's own facts, a dose against
        dose 0. Both sides are shifts from the same base rows, so this is also the
        difference of their scores. The tested score is the one that ranks candidates
        (``delta_logprob``, or ``delta_pmi``); columns as
        :func:`~persona_space.estimates.difference_table`, with ``candidate`` as the
        stratum and ``p_adjusted`` over every condition x candidate that varies.
        """
        from persona_space.estimates import difference_table

        if reference not in self.conditions:
            raise ConfigError(f"reference {reference!r} is not a condition of this run; conditions: {self.conditions}")
        if len(self.conditions) < 2:
            raise DataError(f"the run has one condition ({self.conditions[0]!r}); nothing to compare it with")
        per = self.shifts(by_prompt=True)
        tested = _tested_score(per.columns, self._normalize)
        return difference_table(
            per,
            per[[tested]].to_numpy(dtype=np.float64),
            [tested],
            by="condition",
            reference=reference,
            strata=["candidate"],
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            adjust=adjust,
        )

    @property
    def _normalize(self) -> Normalize | None:
        """The score that ranked the candidates, as the run recorded it (``None`` where it did not)."""
        normalize = self.manifest.get("parameters", {}).get("normalize")
        return normalize if normalize in _SCORES else None

    def ranking(self, adapter: str = BASE) -> pd.DataFrame:
        """Candidates under ``adapter`` (a model label) by mean rank over prompts, with log-probability and share.

        ``set_prob`` is the mean share within the set; ``set_logmass`` the mean log-mass
        (nats) of the set it is a share of, and ``set_below_floor`` the share of prompts
        whose set holds less than :attr:`set_mass_floor` (both the same for every candidate).
        """
        rows = _with_set_logmass(self.df)
        rows = rows[rows["adapter"] == adapter]
        if rows.empty:
            raise DataError(f"no rows for adapter {adapter!r}; labels are {sorted(self.df['adapter'].unique())}")
        rows = rows.assign(_below=_below(rows["set_logmass"], self.set_mass_floor))
        table = rows.groupby("candidate", sort=False).agg(
            mean_rank=("rank", "mean"),
            logprob=("logprob", "mean"),
            set_prob=("set_prob", "mean"),
            set_logmass=("set_logmass", "mean"),
            set_below_floor=("_below", "mean"),
            greedy_prompts=("greedy", "sum"),
        )
        # one model label has one row per prompt, so greedy_prompts counts prompts
        return table.sort_values(["mean_rank", "logprob"], ascending=[True, False]).reset_index()

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> ShiftResult:
        frame = stored.tables[cls.table]
        if len(frame.columns):
            frame = _upgrade(frame, disjoint=_disjoint_from_parameters(stored.manifest.get("parameters", {})))
        missing = [c for c in COLUMNS if c not in frame.columns] if len(frame) else []
        if missing:
            raise CorruptRunError(f"the shift table in {str(folder)!r} lacks columns {missing}; expected {COLUMNS}")
        return cls(df=frame, manifest=stored.manifest, path=folder)

    def __repr__(self) -> str:
        prompts, candidates = self.df["probe_id"].nunique(), self.df["candidate"].nunique()
        labels = list(dict.fromkeys(self.df["adapter"]))
        return f"ShiftResult({prompts} prompts x {candidates} candidates, adapters={labels})"


def _upgrade(frame: pd.DataFrame, *, disjoint: bool | None = None) -> pd.DataFrame:
    """Rows stored by an older schema, in today's column names (``disjoint``: see :func:`_with_set_logmass`)."""
    frame = frame.rename(columns={"prompt_id": "probe_id", "model": "adapter"})  # schema 1 and 2 names
    if "group" not in frame.columns:  # schema 1: no question groups recorded
        frame.insert(1, "group", frame["probe_id"])
    if "set_logmass" not in frame.columns:  # written before the set's mass was recorded
        frame = _with_set_logmass(frame, disjoint=disjoint)
        frame.insert(list(frame.columns).index("set_prob") + 1, "set_logmass", frame.pop("set_logmass"))
    return frame


def _disjoint_from_parameters(parameters: Mapping[str, Any]) -> bool | None:
    """:func:`candidates_disjoint` from a manifest's parameters; ``None`` where they do not say."""
    try:
        return candidates_disjoint(
            [str(c) for c in parameters["candidates"]],
            str(parameters.get("template", "{candidate}")),
            str(parameters.get("answer_prefix") or ""),
            end_of_turn=bool(parameters.get("end_of_turn", False)),
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None


# -- inputs -----------------------------------------------------------------------------------
