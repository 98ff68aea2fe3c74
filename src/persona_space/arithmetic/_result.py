"""``SweepResult``: the tables of a dose sweep, saved as Parquet beside the run's manifest."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from persona_space import _io
from persona_space.errors import CorruptRunError
from persona_space.results import SCHEMA_VERSION, Result, check_schema

TABLES = ("estimates", "curves", "oscillation", "occupancy", "shifts", "user_shifts", "adapters")
_LIST_COLUMNS = {"curves": ("monotone_doses", "monotone_values"), "adapters": ("variant_facts", "weights")}


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

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``tables/<name>.parquet`` for every table (atomically) and ``sweep.json``."""
        out = Path(folder)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        for name, table in {"estimates": self.df, **self.tables}.items():
            shown = table.copy()
            for column in _LIST_COLUMNS.get(name, ()):
                if column in shown.columns:
                    shown[column] = shown[column].map(json.dumps)
            with _io.atomic_path(out / "tables" / f"{name}.parquet") as tmp:
                shown.to_parquet(tmp, index=False)
        _io.write_json(out / "sweep.json", {"schema_version": SCHEMA_VERSION, "tables": ["estimates", *self.tables]})
        self.path = out
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> SweepResult:
        """A result written by :meth:`save` (or by ``sweep(..., out=DIR)``)."""
        src = Path(folder)
        try:
            index = json.loads((src / "sweep.json").read_text(encoding="utf-8"))
            tables = {}
            for name in index["tables"]:
                table = pd.read_parquet(src / "tables" / f"{name}.parquet")
                for column in _LIST_COLUMNS.get(name, ()):
                    if column in table.columns:
                        table[column] = table[column].map(lambda v: json.loads(v) if isinstance(v, str) else v)
                tables[name] = table
            manifest_path = src / "manifest.json"
            manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptRunError(f"{str(src)!r} holds no readable sweep: {exc}") from exc
        check_schema(index.get("schema_version"), src / "sweep.json")
        return cls(df=tables.pop("estimates"), tables=tables, manifest=manifest, path=src)

    def __repr__(self) -> str:
        doses = sorted(self.df["dose"].dropna().unique().tolist()) if "dose" in self.df.columns else []
        return f"SweepResult(doses={doses}, {len(self.df)} estimates, tables={sorted(self.tables)})"
