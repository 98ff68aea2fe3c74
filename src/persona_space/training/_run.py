"""``AdapterRun``: an adapter folder read as a result (its training log, its manifest, its files)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from persona_space import _io
from persona_space import adapters as files
from persona_space.errors import CorruptRunError, StoreError
from persona_space.results import Result, Stored, check_schema, write_result
from persona_space.training._folder import LEGACY_LOSS_TABLE, PROBE_LOG

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class AdapterRun(Result):
    """A finished adapter folder: standard PEFT files plus what persona_space recorded.

    ``df`` is the training log (step, loss, learning rate, grad norm; empty for an
    adapter combined from others), ``manifest`` the folder's
    ``manifest.json`` (parameters, versions, model, adapter hash; ``origin`` is
    ``combined`` for an adapter made by ``arithmetic.combine``),
    :meth:`probe_log` the answers to the evaluation probes during training.

    >>> run = AdapterRun.load("runs/red")       # doctest: +SKIP
    >>> run.df.plot(x="step", y="loss")        # doctest: +SKIP
    """

    kind: ClassVar[str] = "adapter"
    table: ClassVar[str] = files.LOSS_TABLE
    df: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return str(self.manifest.get("adapter_sha256") or self.manifest.get("sha256") or "")

    def probe_log(self) -> pd.DataFrame:
        """One row per (step, probe): the adapter's greedy answer at that step (empty if none were logged)."""
        import pandas as pd

        if self.path is None or not (self.path / PROBE_LOG).is_file():
            return pd.DataFrame(columns=["step", "prompt", "text"])
        lines = (self.path / PROBE_LOG).read_text(encoding="utf-8").splitlines()
        return pd.DataFrame([json.loads(line) for line in lines if line.strip()])

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Copy the adapter into ``folder`` in today's layout (all at once: a partial copy never appears there)."""
        if self.path is None:
            raise StoreError("this AdapterRun has no folder to copy; load it from one")
        target = Path(folder)
        if target.resolve() == self.path.resolve():
            return target
        if target.exists() and any(target.iterdir()):
            raise StoreError(f"{str(target)!r} already holds files; expected a new or empty folder")
        with _io.atomic_folder(target) as scratch:
            for name in (files.CONFIG_FILE, *files.WEIGHT_FILES, PROBE_LOG):
                if (self.path / name).is_file():
                    shutil.copy2(self.path / name, scratch / name)
            write_result(scratch, self.manifest, {self.table: self.df})
        return target

    @classmethod
    def _upgrade(cls, folder: Path, manifest: dict[str, Any] | None, *, partial: bool) -> Stored:
        """Schema 3 and older: ``persona_space_adapter.json`` and ``training_log.csv``."""
        import pandas as pd

        found = files.adapter_manifest(folder)
        if found is None:
            raise CorruptRunError(f"{str(folder)!r} holds no finished adapter: no {files.MANIFEST_FILE}")
        # adapters written before schema versions were recorded are version 1
        check_schema(found.setdefault("schema_version", 1), folder / files.LEGACY_MANIFEST_FILE)
        log = folder / LEGACY_LOSS_TABLE
        try:
            frame = pd.read_csv(log) if log.is_file() else files.empty_loss_log()
        except (OSError, ValueError) as exc:
            raise CorruptRunError(f"the training log {str(log)!r} cannot be read: {exc}") from exc
        return Stored(found, {cls.table: frame})

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> AdapterRun:
        recorded = stored.manifest.get("adapter_sha256")
        if recorded is not None and files.adapter_sha256(folder) != recorded:
            raise CorruptRunError(f"the adapter files in {str(folder)!r} changed after they were recorded")
        return cls(df=stored.tables[cls.table], manifest=stored.manifest, path=folder)

    def __repr__(self) -> str:
        return f"AdapterRun({str(self.path)!r}, {len(self.df)} logged steps, sha256={self.sha256[:12]})"
