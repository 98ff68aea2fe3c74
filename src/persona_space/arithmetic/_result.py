"""``SweepResult``: the tables of a dose sweep, in the layout of every result (:mod:`persona_space.results`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from persona_space.results import Result, Stored, check_state, read_legacy_index

TABLES = ("estimates", "curves", "oscillation", "occupancy", "shifts", "user_shifts", "adapters")


@dataclass
class SweepResult(Result):
    """A dose sweep's results.

    ``df`` (the ``estimates`` table): per measure, condition (dose) and candidate,
    the estimate with its interval over question groups and training seeds
    (``set_prob``, ``mention_share`` and, with user candidates, ``user_set_prob``
    and ``user_mention_share``). ``tables`` holds the rest: ``curves`` (logistic and
    monotone fits, tipping doses with intervals over seeds), ``oscillation``
    (entropy and switching share per dose), ``occupancy`` (basins of the shared
    map per dose), ``shifts`` and ``user_shifts`` (log-probability shifts against
    the base model), ``adapters`` (which facts each adapter saw, its hash).
    """

    kind: ClassVar[str] = "sweep"
    table: ClassVar[str] = "estimates"
    json_columns: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "curves": ("monotone_doses", "monotone_values"),
        "adapters": ("variant_facts", "weights"),
    }
    df: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def curves(self) -> pd.DataFrame:
        return self.tables.get("curves", pd.DataFrame())

    @property
    def oscillation(self) -> pd.DataFrame:
        return self.tables.get("oscillation", pd.DataFrame())

    @classmethod
    def _upgrade(cls, folder: Path, manifest: dict[str, Any] | None, *, partial: bool) -> Stored:
        """Schema 3 and older: ``sweep.json`` named the tables, ``manifest.json`` (if any) held the rest."""
        stored = read_legacy_index(folder, "sweep.json", json_columns=cls.json_columns)
        if manifest is not None:
            check_state(manifest, partial, folder)
        return Stored({**(manifest or {}), "schema_version": stored.manifest["schema_version"]}, stored.tables)

    def __repr__(self) -> str:
        doses = sorted(self.df["dose"].dropna().unique().tolist()) if "dose" in self.df.columns else []
        return f"SweepResult(doses={doses}, {len(self.df)} estimates, tables={sorted(self.tables)})"
