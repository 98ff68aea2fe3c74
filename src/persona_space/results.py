"""What every result shares: one table, one manifest, ``save``/``load``, one schema version.

:class:`~persona_space.sampling.SampleSet`, :class:`~persona_space.logprobs.ShiftResult`,
:class:`~persona_space.basins.BasinMap`, :class:`~persona_space.arithmetic.SweepResult`
and :class:`~persona_space.training.AdapterRun` (an adapter folder) are all
:class:`Result`\\ s:

* ``.df``: the main table, whose columns join across results: ``condition`` (the
  condition name), ``adapter`` (the model label: ``base``, ``red``, ``red:0`` for
  the first of several training seeds), ``train_seed``, ``probe_id``, ``group``;
* ``.manifest``: how it was made (library version and git hash, model and weight
  hashes, adapter hashes, backend, every parameter, seeds, timings);
* ``.save(folder)`` writes it (atomically, Parquet and JSON, never pickle) and
  ``type(result).load(folder)`` reads it back.

Every file a result writes carries :data:`SCHEMA_VERSION`; loaders read every
version in :data:`READABLE_VERSIONS` (older tables are brought up to date as they
load) and refuse others with :class:`~persona_space.errors.CorruptRunError`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from persona_space import _io
from persona_space.errors import CorruptRunError

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
JOIN_COLUMNS = ("condition", "adapter", "train_seed", "probe_id", "group")


def check_schema(found: object, where: str | os.PathLike[str]) -> int:
    """The schema version of a stored result, refused unless this library can read it."""
    if isinstance(found, bool) or not isinstance(found, int) or found not in READABLE_VERSIONS:
        raise CorruptRunError(
            f"{str(where)!r} has schema version {found!r}; this persona_space reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer library wrote it, or it is not a persona_space result)"
        )
    return found


class Result(ABC):
    """A table with the manifest of how it was made, that saves to and loads from a folder."""

    kind: ClassVar[str]
    df: pd.DataFrame  # the main table (see each class's documentation for its columns)
    manifest: dict[str, Any]  # how the result was made

    @abstractmethod
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the result into ``folder``; return the folder."""

    @classmethod
    @abstractmethod
    def load(cls, folder: str | os.PathLike[str]) -> Self:
        """Read a result written by :meth:`save` (or by the operation that made it, with ``store=``)."""

    def __len__(self) -> int:
        return len(self.df)


def save_tables(
    folder: str | os.PathLike[str], index: str, tables: dict[str, pd.DataFrame], manifest: dict[str, Any]
) -> Path:
    """Write ``tables/<name>.parquet`` for every table (atomically) and ``index`` (the manifest, naming them)."""
    out = Path(folder)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        with _io.atomic_path(out / "tables" / f"{name}.parquet") as tmp:
            table.to_parquet(tmp, index=False)
    _io.write_json(out / index, {**manifest, "tables": list(tables)})
    return out


def load_tables(
    folder: str | os.PathLike[str], index: str, what: str
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The tables and manifest :func:`save_tables` wrote; :class:`CorruptRunError` naming ``what`` otherwise."""
    import pandas as pd

    src = Path(folder)
    try:
        manifest = json.loads((src / index).read_text(encoding="utf-8"))
        check_schema(manifest.get("schema_version"), src / index)
        tables = {name: pd.read_parquet(src / "tables" / f"{name}.parquet") for name in manifest["tables"]}
    except CorruptRunError:
        raise
    except Exception as exc:  # JSON, Parquet and missing-file errors alike mean an unreadable result
        raise CorruptRunError(f"{str(src)!r} holds no readable {what}: {exc}") from exc
    return tables, manifest
