"""Run directories: a manifest, tables in Parquet, chunked appends that survive a crash.

Layout of a run directory (the layout of every result, :mod:`persona_space.results`)::

    manifest.json                  how the run was made (parameters, versions, hashes) and its state
    tables/samples.parts/          part-00000.parquet, ... written while the run is going
    tables/samples.parquet         all rows, written once the run is complete (the parts are then removed)

Every file is written to a temporary name and renamed into place, so a crash
leaves either a complete part or none. Re-running with the same parameters
resumes: rows already on disk are kept and not generated again (also rows an
earlier release wrote at the top of the folder; the finished table is written in
today's layout).

:class:`Run` is the one skeleton every operation uses: start (or resume, or refuse
a folder made with other parameters), the rows already done, append, finish.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from persona_space import _io, results
from persona_space.errors import CorruptRunError, StoreError, StoreMismatchError
from persona_space.results import MANIFEST as MANIFEST
from persona_space.results import SCHEMA_VERSION as SCHEMA_VERSION

if TYPE_CHECKING:
    import numpy as np


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
        return results.parts_dir(self.path, self.table)

    @property
    def table_path(self) -> Path:
        return results.table_path(self.path, self.table)

    def _has_rows(self) -> bool:
        legacy = (self.path / f"{self.table}.parquet", self.path / f"{self.table}.parts")
        return any(p.exists() for p in (self.parts_dir, self.table_path, *legacy))

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or ``None`` for a directory that holds no run yet."""
        if not self.manifest_path.exists():
            if self._has_rows():
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
            created = not self.path.exists()
            with _io.writable(self.path):
                self.path.mkdir(parents=True, exist_ok=True)
            try:
                self.write_manifest(manifest)
            except StoreError:
                if created:  # a folder that cannot take its manifest is not left behind
                    shutil.rmtree(self.path, ignore_errors=True)
                raise
            return manifest
        # refused on resume as on load: a newer library's run is never rewritten as this one's
        results.check_schema(existing.get("schema_version", results.SCHEMA_VERSION), self.manifest_path)
        differing = _differences(existing["parameters"], manifest["parameters"])
        if differing:
            shown = "; ".join(f"{k}: stored {a!r:.80}, given {b!r:.80}" for k, a, b in differing[:5])
            raise StoreMismatchError(
                f"run directory {str(self.path)!r} was made with other parameters ({shown}); "
                "use a new directory, or the same parameters to resume"
            )
        for folder in (self.path, self.path / results.TABLES, self.parts_dir, self.path / f"{self.table}.parts"):
            _io.remove_stale_temporaries(folder)
        return existing

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _io.write_json(self.manifest_path, manifest)

    # -- rows -------------------------------------------------------------------------------

    def read_rows(self) -> pd.DataFrame | None:
        """Every row stored so far (complete table or parts, in either layout), or ``None`` if there are none."""
        return results.read_table(self.path, self.table, partial=True)

    def append(self, rows: Sequence[dict[str, Any]] | pd.DataFrame) -> Path:
        """Write ``rows`` as the next part file (atomically); return its path."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        with _io.writable(self.parts_dir):
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.stem.split("-")[1]) for p in results.part_files(self.path, self.table)]
        target = self.parts_dir / f"part-{(max(numbers) + 1) if numbers else 0:05d}.parquet"
        with _io.atomic_path(target) as tmp:
            frame.to_parquet(tmp, index=False)
        return target

    def finalize(self, frame: pd.DataFrame) -> Path:
        """Write the complete table and drop the parts (and the table of an earlier layout)."""
        with _io.atomic_path(self.table_path) as tmp:
            frame.to_parquet(tmp, index=False)
        self.drop_parts()
        return self.table_path

    def drop_parts(self) -> None:
        """Remove the part files (the complete table is written), in both layouts."""
        for parts in (self.parts_dir, self.path / f"{self.table}.parts"):
            if parts.exists():
                shutil.rmtree(parts)
        legacy = self.path / f"{self.table}.parquet"
        if legacy.exists():
            legacy.unlink()


class Run:
    """One operation's run: its manifest, the rows already done, appends, and the finished result.

    ``parameters`` decide the run id; a ``store`` folder made with other parameters is
    refused (:class:`~persona_space.errors.StoreMismatchError`), one made with the same
    ones resumes. Without ``store`` nothing is written.

    >>> run = Run("samples", parameters, table="samples", store="runs/exp1", model=described)  # doctest: +SKIP
    >>> done = run.done()  # rows of an earlier, interrupted call
    >>> run.append(chunk)  # as rows are made
    >>> manifest = run.finish(frame, rows=len(frame))
    """

    def __init__(
        self,
        kind: str,
        parameters: Mapping[str, Any],
        *,
        table: str,
        store: str | os.PathLike[str] | None = None,
        **fields: Any,
    ) -> None:
        self.table = table
        manifest = results.new_manifest(kind, parameters, state="running", **fields)
        self.manifest: dict[str, Any] = {**manifest, "tables": [table], "arrays": [], "json_columns": {}}
        self.store = RunStore(store, table=table) if store is not None else None
        if self.store is not None:
            self.manifest = self.store.open(self.manifest)

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    @property
    def path(self) -> Path | None:
        return self.store.path if self.store is not None else None

    def done(self, upgrade: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame | None:
        """The rows stored by an earlier call (``upgrade`` brings rows of an older schema up to date)."""
        rows = self.store.read_rows() if self.store is not None else None
        return upgrade(rows) if rows is not None and upgrade is not None else rows

    def append(self, rows: Sequence[dict[str, Any]] | pd.DataFrame) -> None:
        if self.store is not None:
            self.store.append(rows)

    def finish(
        self, frame: pd.DataFrame, *, arrays: Mapping[str, np.ndarray] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Mark the run complete (with ``fields``); with a store, write the table, ``arrays`` and the manifest."""
        manifest = results.completed(self.manifest, rows=len(frame), **fields)
        if self.store is not None:
            manifest = {**manifest, "tables": [self.table], "arrays": list(arrays or {}), "json_columns": {}}
            results.write_result(self.store.path, manifest, {self.table: frame}, arrays)
            self.store.drop_parts()
        self.manifest = manifest
        return manifest


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
