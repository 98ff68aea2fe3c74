"""Run directories: a manifest, tables in Parquet, chunked appends that survive a crash.

Layout of a run directory::

    manifest.json            how the run was made (parameters, versions, hashes) and its state
    samples.parts/           part-00000.parquet, ... written while the run is going
    samples.parquet          all rows, written once the run is complete (the parts are then removed)

Every file is written to a temporary name and renamed into place, so a crash
leaves either a complete part or none. Re-running with the same parameters
resumes: rows already on disk are kept and not generated again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from persona_space import _io
from persona_space.errors import CorruptRunError, StoreMismatchError
from persona_space.results import SCHEMA_VERSION as SCHEMA_VERSION

MANIFEST = "manifest.json"


class RunStore:
    """One run directory holding one table (``name``) written in chunks.

    >>> store = RunStore("runs/exp1", table="samples")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, table: str) -> None:
        self.path = Path(path)
        self.table = table

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def parts_dir(self) -> Path:
        return self.path / f"{self.table}.parts"

    @property
    def table_path(self) -> Path:
        return self.path / f"{self.table}.parquet"

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or ``None`` for a directory that holds no run yet."""
        if not self.manifest_path.exists():
            if self.parts_dir.exists() or self.table_path.exists():
                raise CorruptRunError(
                    f"run directory {str(self.path)!r} has {self.table} data but no {MANIFEST}; "
                    "expected a directory made by persona_space (or an empty one)"
                )
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptRunError(f"{str(self.manifest_path)!r} is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict) or "parameters" not in manifest or "run_id" not in manifest:
            raise CorruptRunError(
                f"{str(self.manifest_path)!r} lacks 'parameters' or 'run_id'; expected a persona_space manifest"
            )
        return manifest

    def open(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Start or resume a run with ``manifest``; refuse a directory made with other parameters.

        Returns the manifest in force (the stored one when resuming).
        """
        existing = self.read_manifest()
        if existing is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_manifest(manifest)
            return manifest
        differing = _differences(existing["parameters"], manifest["parameters"])
        if differing:
            shown = "; ".join(f"{k}: stored {a!r:.80}, given {b!r:.80}" for k, a, b in differing[:5])
            raise StoreMismatchError(
                f"run directory {str(self.path)!r} was made with other parameters ({shown}); "
                "use a new directory, or the same parameters to resume"
            )
        _io.remove_stale_temporaries(self.path)
        _io.remove_stale_temporaries(self.parts_dir)
        return existing

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _io.write_json(self.manifest_path, manifest)

    # -- rows -------------------------------------------------------------------------------

    def read_rows(self) -> pd.DataFrame | None:
        """Every row stored so far (complete table or parts), or ``None`` if there are none."""
        if self.table_path.exists():
            return self._read(self.table_path)
        if not self.parts_dir.exists():
            return None
        parts = sorted(self.parts_dir.glob("part-*.parquet"))
        if not parts:
            return None
        return pd.concat([self._read(p) for p in parts], ignore_index=True)

    def append(self, rows: Sequence[dict[str, Any]] | pd.DataFrame) -> Path:
        """Write ``rows`` as the next part file (atomically); return its path."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.stem.split("-")[1]) for p in self.parts_dir.glob("part-*.parquet")]
        target = self.parts_dir / f"part-{(max(numbers) + 1) if numbers else 0:05d}.parquet"
        with _io.atomic_path(target) as tmp:
            frame.to_parquet(tmp, index=False)
        return target

    def finalize(self, frame: pd.DataFrame) -> Path:
        """Write the complete table and drop the parts."""
        with _io.atomic_path(self.table_path) as tmp:
            frame.to_parquet(tmp, index=False)
        if self.parts_dir.exists():
            shutil.rmtree(self.parts_dir)
        return self.table_path

    def _read(self, path: Path) -> pd.DataFrame:
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise CorruptRunError(f"table {str(path)!r} cannot be read: {exc}") from exc


def _differences(stored: Any, given: Any) -> list[tuple[str, Any, Any]]:
    """Keys whose values differ between two JSON-like parameter trees (compared as JSON reads them back)."""
    return _walk(json.loads(json.dumps(stored, default=str)), json.loads(json.dumps(given, default=str)), "")


def _walk(stored: Any, given: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    if isinstance(stored, dict) and isinstance(given, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(stored) | set(given)):
            out += _walk(stored.get(key), given.get(key), f"{prefix}{key}.")
        return out
    return [] if stored == given else [(prefix.rstrip("."), stored, given)]
