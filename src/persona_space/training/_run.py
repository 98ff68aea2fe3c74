"""``AdapterRun``: an adapter folder read as a result (its training log, its manifest, its files)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from persona_space import _io
from persona_space.adapters import CONFIG_FILE, MANIFEST_FILE, WEIGHT_FILES, adapter_sha256
from persona_space.errors import CorruptRunError, StoreError
from persona_space.results import Result, check_schema
from persona_space.training._folder import LOSS_TABLE, PROBE_LOG

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class AdapterRun(Result):
    """A finished adapter folder: standard PEFT files plus what persona_space recorded.

    ``df`` is the training log (step, loss, learning rate, grad norm; empty for an
    adapter combined from others), ``manifest`` the folder's
    ``persona_space_adapter.json`` (parameters, versions, model, adapter hash),
    :meth:`probe_log` the answers to the evaluation probes during training.

    >>> run = AdapterRun.load("runs/red")       # doctest: +SKIP
    >>> run.df.plot(x="step", y="loss")        # doctest: +SKIP
    """

    kind: ClassVar[str] = "adapter"
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
        """Copy the adapter's files into ``folder`` (all at once: a partial copy never appears there)."""
        if self.path is None:
            raise StoreError("this AdapterRun has no folder to copy; load it from one")
        target = Path(folder)
        if target.resolve() == self.path.resolve():
            return target
        if target.exists() and any(target.iterdir()):
            raise StoreError(f"{str(target)!r} already holds files; expected a new or empty folder")
        with _io.atomic_folder(target) as scratch:
            for name in (CONFIG_FILE, *WEIGHT_FILES, MANIFEST_FILE, LOSS_TABLE, PROBE_LOG):
                if (self.path / name).is_file():
                    shutil.copy2(self.path / name, scratch / name)
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AdapterRun:
        """A finished adapter folder (trained, or combined by ``arithmetic.combine``), its files checked."""
        import pandas as pd

        src = Path(folder)
        path = src / MANIFEST_FILE
        if not path.is_file():
            raise CorruptRunError(f"{str(src)!r} holds no finished adapter: no {MANIFEST_FILE}")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptRunError(f"{str(path)!r} cannot be read: {exc}") from exc
        check_schema(manifest.get("schema_version", 1), path)
        recorded = manifest.get("adapter_sha256")
        if recorded is not None and adapter_sha256(src) != recorded:
            raise CorruptRunError(f"the adapter files in {str(src)!r} changed after they were recorded")
        log = src / LOSS_TABLE
        frame = pd.read_csv(log) if log.is_file() else pd.DataFrame(columns=["step", "loss"])
        return cls(df=frame, manifest=manifest, path=src)

    def __repr__(self) -> str:
        return f"AdapterRun({str(self.path)!r}, {len(self.df)} logged steps, sha256={self.sha256[:12]})"
