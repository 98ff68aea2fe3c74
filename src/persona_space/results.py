"""What every result shares: one folder layout, one manifest, ``save``/``load``, one schema version.

There are eleven kinds of result, each a :class:`Result`:
:class:`~persona_space.sampling.SampleSet` (``samples``),
:class:`~persona_space.logprobs.ShiftResult` (``identity_shift``),
:class:`~persona_space.evals.LeakageResult` (``leakage``),
:class:`~persona_space.evals.DateSweepResult` (``date_sweep``),
:class:`~persona_space.evals.CoauthorResult` (``coauthor_rank``),
:class:`~persona_space.arithmetic.SweepResult` (``sweep``),
:class:`~persona_space.basins.BasinMap` (``basin_map``),
:class:`~persona_space.activations.ActivationSet` (``activations``),
:class:`~persona_space.activations.Direction` (``direction``),
:class:`~persona_space.activations.PersonaSpace` (``persona_space``) and
:class:`~persona_space.training.AdapterRun` (``adapter``, a trained or combined LoRA folder).
Each has

* ``.df``: the main table, whose columns join across results: ``condition`` (the
  condition name), ``adapter`` (the model label: ``base``, ``red``, ``red:0`` for
  the first of several training seeds), ``train_seed``, ``probe_id``, ``group``;
* ``.manifest``: how it was made (library version and git hash, model and weight
  hashes, adapter hashes, backend, every parameter, seeds, timings);
* ``.save(folder)`` writes it (atomically, Parquet, NumPy and JSON, never pickle)
  and ``type(result).load(folder)``, or :func:`load` for any kind, reads it back.

One layout for every kind (:func:`write_result` writes it, :func:`read_result` reads it)::

    manifest.json          kind, schema_version, run_id, state, parameters, provenance; "tables" and
                           "arrays" name the files below (written last: a folder without it holds no result)
    tables/<name>.parquet  the tables; the first is the main one (.df)
    tables/<name>.parts/   part-00000.parquet, ... while a resumable run is going
    arrays/<name>.npy      arrays (a basin map's vectors)

An adapter keeps PEFT's files at the top of its folder, beside these.

Every manifest carries :data:`SCHEMA_VERSION`; loaders read every version in
:data:`READABLE_VERSIONS` and refuse others with
:class:`~persona_space.errors.CorruptRunError`. Folders written by an earlier
release (schema 3 and older: index files such as ``sweep.json``, tables at the top)
are read by each kind's upgrade step, without writing to them.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from persona_space import _io
from persona_space._compat import renamed_keywords
from persona_space.errors import ConfigError, CorruptRunError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from typing_extensions import Self

SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
LAYOUT_VERSION = 4  # the first schema version written in the layout above; older ones go through an upgrade
JOIN_COLUMNS = ("condition", "adapter", "train_seed", "probe_id", "group")
MANIFEST = "manifest.json"
TABLES = "tables"
ARRAYS = "arrays"

# Where each kind's class lives: results.load imports it from there on first use (importlib, so this
# module imports no subpackage and every subpackage may import it).
KIND_HOMES = {
    "samples": "persona_space.sampling",
    "identity_shift": "persona_space.logprobs",
    "leakage": "persona_space.evals",
    "date_sweep": "persona_space.evals",
    "coauthor_rank": "persona_space.evals",
    "sweep": "persona_space.arithmetic",
    "basin_map": "persona_space.basins",
    "adapter": "persona_space.training",
    "activations": "persona_space.activations",
    "direction": "persona_space.activations",
    "persona_space": "persona_space.activations",
}
# Files that marked a kind before one manifest did (schema 3 and older), in the order they are tried.
LEGACY_INDEXES = {
    "sweep.json": "sweep",
    "date_sweep.json": "date_sweep",
    "coauthor_rank.json": "coauthor_rank",
    "basin_map.json": "basin_map",
    "persona_space_adapter.json": "adapter",
}
KIND_ALIASES = {"combined": "adapter", "combined_adapter": "adapter"}  # how earlier releases stamped combined adapters
_REGISTRY: dict[str, type[Result]] = {}


def check_schema(found: object, where: str | os.PathLike[str]) -> int:
    """The schema version of a stored result, refused unless this library can read it."""
    if isinstance(found, bool) or not isinstance(found, int) or found not in READABLE_VERSIONS:
        raise CorruptRunError(
            f"{str(where)!r} has schema version {found!r}; this persona_space reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer library wrote it, or it is not a persona_space result)"
        )
    return found


def now() -> str:
    """The local time as manifests record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_manifest(kind: str, parameters: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """The manifest every operation starts from: kind, run id (a hash of ``parameters``), schema, provenance.

    ``fields`` are the kind's own entries (``model``, ``state``, ...), added after the shared ones.
    """
    from persona_space import provenance

    return {
        "kind": kind,
        "run_id": provenance.sha256_json(dict(parameters))[:16],
        "schema_version": SCHEMA_VERSION,
        "parameters": dict(parameters),
        "environment": provenance.environment(),
        "created": now(),
        **fields,
    }


def completed(manifest: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """``manifest`` finished: state complete, today's schema (a resumed run is written in today's columns)."""
    return {**manifest, **fields, "state": "complete", "schema_version": SCHEMA_VERSION, "finished": now()}


@dataclass(frozen=True)
class Stored:
    """What a result folder holds: its manifest, its tables (main one first) and its arrays."""

    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def require(self, folder: str | os.PathLike[str], kind: str, *, tables: tuple[str, ...] = (),
                arrays: tuple[str, ...] = ()) -> None:  # fmt: skip
        """Refuse, with :class:`CorruptRunError` naming the folder, a stored ``kind`` lacking these parts."""
        missing = sorted(set(tables) - set(self.tables)) + sorted(set(arrays) - set(self.arrays))
        if missing:
            raise CorruptRunError(f"{str(folder)!r} lacks {missing} of a {kind} result")


def write_result(
    folder: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    arrays: Mapping[str, np.ndarray] | None = None,
    *,
    json_columns: Mapping[str, tuple[str, ...]] | None = None,
) -> Path:
    """Write ``tables/<name>.parquet``, ``arrays/<name>.npy`` and then ``manifest.json``, each atomically.

    ``json_columns`` names list-valued columns per table, stored as JSON text (Parquet
    lists of mixed types do not round-trip); :func:`read_result` decodes them. The
    manifest is written last and names every file, so a folder is a result only once
    all of it is there.
    """
    import numpy as np

    out = Path(folder)
    (out / TABLES).mkdir(parents=True, exist_ok=True)
    encoded = {name: list(cols) for name, cols in (json_columns or {}).items() if name in tables}
    for name, table in tables.items():
        shown = table
        for column in encoded.get(name, ()):
            if column in shown.columns:
                shown = shown.assign(**{column: shown[column].map(json.dumps)})
        with _io.atomic_path(out / TABLES / f"{name}.parquet") as tmp:
            shown.to_parquet(tmp, index=False)
    for name, array in (arrays or {}).items():
        with _io.atomic_path(out / ARRAYS / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    index = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "tables": list(tables),
        "arrays": list(arrays or {}),
        "json_columns": encoded,
    }
    _io.write_json(out / MANIFEST, index)
    return out


def read_manifest(folder: str | os.PathLike[str], name: str = MANIFEST) -> dict[str, Any] | None:
    """A folder's ``manifest.json`` (or the JSON object ``name``), ``None`` where there is none.

    A file that is not a JSON object raises :class:`CorruptRunError` naming it.
    """
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptRunError(f"{str(path)!r} cannot be read: it is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise CorruptRunError(f"{str(path)!r} holds a JSON {type(manifest).__name__}; expected a manifest object")
    return manifest


def in_layout(manifest: Mapping[str, Any] | None) -> bool:
    """Whether a manifest was written in today's layout (else an upgrade step reads its folder)."""
    return manifest is not None and isinstance(manifest.get("tables"), list) and "json_columns" in manifest


def table_path(folder: str | os.PathLike[str], name: str) -> Path:
    return Path(folder) / TABLES / f"{name}.parquet"


def parts_dir(folder: str | os.PathLike[str], name: str) -> Path:
    return Path(folder) / TABLES / f"{name}.parts"


def read_table(folder: str | os.PathLike[str], name: str, *, partial: bool = False) -> pd.DataFrame | None:
    """Table ``name`` of a folder: ``tables/<name>.parquet``, else (schema 3 and older) ``<name>.parquet``.

    With ``partial``, the part files of a run still going (``tables/<name>.parts/`` and
    the older ``<name>.parts/``) stand in for a table not yet written. ``None`` where
    there is nothing.
    """
    import pandas as pd

    src = Path(folder)
    for path in (table_path(src, name), src / f"{name}.parquet"):
        if path.is_file():
            return _read_parquet(path)
    if not partial:
        return None
    parts = sorted(part_files(src, name), key=lambda p: int(p.stem.split("-")[1]))
    return pd.concat([_read_parquet(p) for p in parts], ignore_index=True) if parts else None


def part_files(folder: str | os.PathLike[str], name: str) -> list[Path]:
    """The part files of table ``name`` in both layouts."""
    src = Path(folder)
    return [*(src / f"{name}.parts").glob("part-*.parquet"), *parts_dir(src, name).glob("part-*.parquet")]


def _read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise CorruptRunError(f"table {str(path)!r} cannot be read: {exc}") from exc


def read_result(folder: str | os.PathLike[str], *, kind: str | None = None, partial: bool = False) -> Stored:
    """The manifest, tables and arrays :func:`write_result` wrote; :class:`CorruptRunError` naming the folder.

    ``kind`` refuses a folder of another kind. A run that is not complete is refused
    unless ``partial`` (then its part files stand in for its tables).
    """
    import numpy as np

    src = Path(folder)
    manifest = read_manifest(src)
    if manifest is None:
        raise CorruptRunError(f"{str(src)!r} holds no {kind or 'persona_space'} result: no {MANIFEST}")
    check_schema(manifest.get("schema_version"), src / MANIFEST)
    check_kind(manifest, kind, src)
    check_state(manifest, partial, src)
    names = manifest.get("tables") or []
    tables: dict[str, pd.DataFrame] = {}
    for name in names:
        table = read_table(src, name, partial=partial)
        if table is None:
            where = table_path(src, name)
            raise CorruptRunError(f"{str(src)!r} lacks table {name!r} ({where}), which its manifest names")
        for column in (manifest.get("json_columns") or {}).get(name, ()):
            if column in table.columns:
                table[column] = table[column].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        tables[name] = table
    arrays: dict[str, np.ndarray] = {}
    for name in manifest.get("arrays") or []:
        path = src / ARRAYS / f"{name}.npy"
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptRunError(f"array {str(path)!r} cannot be read: {exc}") from exc
    return Stored(manifest, tables, arrays)


def check_kind(manifest: Mapping[str, Any], kind: str | None, src: Path) -> None:
    found = KIND_ALIASES.get(str(manifest.get("kind")), manifest.get("kind"))
    if kind is not None and found != kind:
        raise CorruptRunError(f"{str(src)!r} holds a {found!r} result, not {kind!r}")


def check_state(manifest: Mapping[str, Any], partial: bool, src: Path) -> None:
    state = manifest.get("state", "complete")
    if state != "complete" and not partial:
        raise CorruptRunError(
            f"the {manifest.get('kind', 'persona_space')} run in {str(src)!r} is not complete (state {state!r}); "
            "run it again with the same arguments and store= to finish it, or load(..., partial=True) for the rows "
            "so far"
        )


def read_legacy_index(folder: Path, index: str, *, json_columns: Mapping[str, tuple[str, ...]] | None = None) -> Stored:
    """A folder of schema 3 and older whose index file ``index`` (``sweep.json``, ...) names ``tables/*.parquet``."""
    try:
        manifest = json.loads((folder / index).read_text(encoding="utf-8"))
        check_schema(manifest.get("schema_version"), folder / index)
        tables = {}
        for name in manifest["tables"]:
            table = _read_parquet(table_path(folder, name))
            for column in (json_columns or {}).get(name, ()):
                if column in table.columns:
                    table[column] = table[column].map(lambda v: json.loads(v) if isinstance(v, str) else v)
            tables[name] = table
    except CorruptRunError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptRunError(f"{str(folder)!r} holds no readable result ({index}): {exc}") from exc
    return Stored({k: v for k, v in manifest.items() if k != "tables"}, tables)


# -- kinds --------------------------------------------------------------------------------------


def kind_of(folder: str | os.PathLike[str]) -> str | None:
    """The kind of result a folder holds (from its manifest, or an earlier release's index file), or ``None``."""
    src = Path(folder)
    try:
        manifest = read_manifest(src)
    except CorruptRunError:
        manifest = None
    if manifest is not None and manifest.get("kind") is not None:
        stated = str(manifest["kind"])
        stated = KIND_ALIASES.get(stated, stated)
        if stated in KIND_HOMES and (in_layout(manifest) or stated in ("samples", "identity_shift", "leakage")):
            return stated
    for index, kind in LEGACY_INDEXES.items():
        if (src / index).is_file():
            return kind
    return None


def result_class(kind: str) -> type[Result]:
    """The :class:`Result` class of ``kind`` (its package is imported on first use)."""
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KIND_HOMES:
        raise ConfigError(f"unknown result kind {kind!r}; expected one of {sorted(KIND_HOMES)}")
    if kind not in _REGISTRY:
        importlib.import_module(KIND_HOMES[kind])  # its classes register themselves (Result.__init_subclass__)
    return _REGISTRY[kind]


def load(folder: str | os.PathLike[str], *, partial: bool = False) -> Result:
    """Any result folder, as the class its manifest names (``load("runs/exp1")`` -> a SampleSet, ...)."""
    kind = kind_of(folder)
    if kind is None:
        read_manifest(folder)  # a manifest that is there but does not parse is named as such
        raise CorruptRunError(
            f"{str(folder)!r} holds no persona_space result: no {MANIFEST} naming a kind, and no earlier index file"
        )
    return result_class(kind).load(folder, partial=partial)


class Result(ABC):
    """A main table with the manifest of how it was made, saved to and loaded from one folder layout.

    A subclass names its ``kind`` and its main ``table``, and keeps any other tables in
    ``tables``; :meth:`save` and :meth:`load` then need no code of their own. Kinds
    with arrays or extra state override :meth:`_stored` and :meth:`_from_stored`, and
    every kind reads the layout of earlier releases in :meth:`_upgrade`.
    """

    kind: ClassVar[str]
    table: ClassVar[str]  # the main table's name under tables/
    json_columns: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    df: pd.DataFrame  # the main table (see each class's documentation for its columns)
    manifest: dict[str, Any]  # how the result was made
    path: Path | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _REGISTRY[cls.kind] = cls

    def _stored(self) -> Stored:
        """What :meth:`save` writes."""
        extra: dict[str, pd.DataFrame] = dict(getattr(self, "tables", None) or {})
        return Stored({**self.manifest, "rows": len(self.df)}, {self.table: self.df, **extra})

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> Self:
        """The result from what :func:`read_result` (or :meth:`_upgrade`) read."""
        tables = dict(stored.tables)
        frame = tables.pop(cls.table)
        extra: dict[str, Any] = {"tables": tables} if "tables" in getattr(cls, "__dataclass_fields__", {}) else {}
        return cls(df=frame, manifest=stored.manifest, path=folder, **extra)  # type: ignore[call-arg]

    @classmethod
    def _upgrade(cls, folder: Path, manifest: dict[str, Any] | None, *, partial: bool) -> Stored:
        """Read a folder an earlier release wrote (schema 3 and older), without writing to it.

        The default reads the kind's earlier index file where it has one
        (:data:`LEGACY_INDEXES`), else a run directory: ``manifest.json`` and the main
        table at the top of the folder (or its part files, with ``partial``).
        """
        index = next((name for name, kind in LEGACY_INDEXES.items() if kind == cls.kind), None)
        if index is not None and (folder / index).is_file():
            return read_legacy_index(folder, index, json_columns=cls.json_columns)
        if manifest is None:
            raise CorruptRunError(f"{str(folder)!r} holds no {cls.kind} result: no {MANIFEST}")
        check_schema(manifest.get("schema_version"), folder / MANIFEST)
        check_kind(manifest, cls.kind, folder)
        check_state(manifest, partial, folder)
        frame = read_table(folder, cls.table, partial=partial)
        if frame is None:
            if not partial:
                raise CorruptRunError(f"{str(folder)!r} lacks its {cls.table!r} table")
            frame = cls._empty()
        return Stored(manifest, {cls.table: frame})

    @classmethod
    def _empty(cls) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame()

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the result into ``folder`` (the layout in :mod:`persona_space.results`); return the folder."""
        stored = self._stored()
        self.path = write_result(folder, stored.manifest, stored.tables, stored.arrays, json_columns=self.json_columns)
        return self.path

    @classmethod
    @renamed_keywords(path="folder")  # SampleSet.load(path=...) of earlier releases
    def load(cls, folder: str | os.PathLike[str], *, partial: bool = False) -> Self:
        """Read a result written by :meth:`save` (or by the operation that made it, with ``store=``).

        A run that is not complete is refused unless ``partial``: then it holds the rows
        stored so far. Folders of earlier releases are read through :meth:`_upgrade`.
        """
        src = Path(folder)
        manifest = read_manifest(src)
        if in_layout(manifest):
            stored = read_result(src, kind=cls.kind, partial=partial)
        else:
            stored = cls._upgrade(src, manifest, partial=partial)
        return cls._from_stored(stored, src)

    def __len__(self) -> int:
        return len(self.df)
