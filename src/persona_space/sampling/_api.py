"""``sample()``: many self-descriptions per probe, adapter and temperature, stored as a table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from persona_space.adapters import ConditionsLike, expand_conditions
from persona_space.constants import BASE, DEFAULT_BOOT
from persona_space.engine import BackendLike, require_adapters, require_generation, resolve_backend
from persona_space.errors import ConfigError
from persona_space.models import LoadedModel
from persona_space.probes import Probe, ProbeSet
from persona_space.results import Result, Stored
from persona_space.sampling._spec import Pairing, SamplingSpec
from persona_space.stats import Adjustment
from persona_space.store import Run

COLUMNS = (
    "run_id",
    "condition",
    "adapter",
    "train_seed",
    "probe_id",
    "group",
    "category",
    "prompt",
    "temperature",
    "top_p",
    "sample_index",
    "seed",
    "text",
    "n_tokens",
    "finish_reason",
    "schema_version",
)
OPTIONAL_COLUMNS = ("transcript",)  # conversation probes: the whole chat, earlier answers included (JSON)


@dataclass
class SampleSet(Result):
    """Sampled answers: ``df`` has one row per sample (see :data:`COLUMNS`)."""

    kind: ClassVar[str] = "samples"
    table: ClassVar[str] = "samples"
    df: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> SampleSet:
        frame = stored.tables[cls.table]
        frame = _upgrade(frame) if len(frame.columns) else pd.DataFrame(columns=list(COLUMNS))
        manifest = stored.manifest
        params = manifest.get("parameters", {})
        adapters = list(manifest.get("conditions") or params.get("adapters", {}))
        probe_ids = [str(p.get("id")) for p in params.get("probes", []) if isinstance(p, dict)]
        return cls(df=_canonical_order(frame, adapters, probe_ids), manifest=manifest, path=folder)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("state") == "complete")

    def summary(self, *, n_boot: int = DEFAULT_BOOT, confidence: float = 0.95) -> pd.DataFrame:
        """Per condition and temperature: samples, mean tokens and characters, empty and truncated shares.

        Every figure carries a ``confidence`` interval (``*_low``/``*_high``) from a
        bootstrap over question groups crossed with training seeds (samples of one
        question are not independent); ``interval`` says what it is over.
        """
        from persona_space.sampling._summary import summary_table

        return summary_table(self.df, n_boot=n_boot, confidence=confidence)

    def compare(
        self,
        reference: str = BASE,
        *,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        adjust: Adjustment = "holm",
    ) -> pd.DataFrame:
        """Each condition minus ``reference`` (mean tokens and characters, empty and truncated shares).

        Differences are paired by question group, with bootstrap intervals, p-values
        and ``adjust``-ed p-values over every test in the table (``"holm"``, ``"bh"``
        or ``"none"``). With paired sampling (the default) both sides also share
        their random streams, which makes the differences far less noisy.
        """
        from persona_space.sampling._summary import compare_table

        table = compare_table(self.df, reference, n_boot=n_boot, confidence=confidence, adjust=adjust)
        pairing = self.manifest.get("parameters", {}).get("pairing", "independent")
        return table.assign(pairing=pairing) if not table.empty else table

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"SampleSet({len(self.df)} rows, adapters={sorted(self.df['adapter'].unique())}{where})"


def sample(
    model: LoadedModel,
    probes: ProbeSet | Sequence[str | Probe] | str,
    *,
    adapters: ConditionsLike | None = None,
    n: int = 16,
    temperatures: float | Sequence[float] = (1.0,),
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    system_prompt: str | None = None,
    seed: int = 0,
    store: str | os.PathLike[str] | None = None,
    batch_size: int | Literal["auto"] = "auto",
    ignore_eos: bool = False,
    pairing: Pairing = "paired",
    backend: BackendLike = "auto",
    chunk_rows: int = 256,
    progress: bool = True,
) -> SampleSet:
    """Sample ``n`` answers per probe, adapter and temperature.

    ``adapters`` maps condition names to adapter folders, with ``None`` for the base
    model (default: ``{"base": None}``); a condition may hold several adapters (one
    per training seed: ``{"red": [seed0_dir, seed1_dir]}``), whose rows carry
    ``adapter`` = ``red:0``, ``red:1`` and their ``train_seed``. All conditions run
    through one copy of the weights, mixed in the same batches. With ``store=DIR``
    rows are appended to Parquet in chunks and a second call with the same arguments
    resumes the run. The table is the same whatever ``batch_size`` is: every sample
    has its own random stream (up to floating-point differences between batch shapes).

    ``pairing="paired"`` (default) gives every condition the same random stream for
    the same (probe, temperature, index), so base and adapter answers pair up and
    their differences get paired intervals; ``"independent"`` draws each condition
    separately. At temperature 0 one answer per probe and condition is generated.

    ``backend`` runs the requests (see :mod:`persona_space.engine`): ``"auto"`` (the
    fast ``cpu`` engine where it supports the architecture, else ``"hf"``), ``"hf"``,
    ``"cpu"``, ``"ray"``, or a backend object such as ``RayBackend(model, address=...)``.
    Every backend gives the same rows for the same seeds (up to floating-point noise);
    the manifest records which one ran.

    >>> samples = sample(model, "identity", n=4, temperatures=[0.7, 1.0], store="runs/exp1")  # doctest: +SKIP
    """
    spec = SamplingSpec(
        n=n,
        temperatures=tuple(
            float(t) for t in ([temperatures] if isinstance(temperatures, (int, float)) else temperatures)
        ),
        top_p=float(top_p),
        max_new_tokens=max_new_tokens,
        system_prompt=model.system_prompt if system_prompt is None else system_prompt,
        seed=seed,
        ignore_eos=ignore_eos,
        pairing=pairing,
    )
    return run_sample(
        model,
        _probe_set(probes),
        spec,
        adapters=adapters,
        store=store,
        batch_size=batch_size,
        backend=backend,
        chunk_rows=chunk_rows,
        progress=progress,
    )


def run_sample(
    model: LoadedModel,
    probes: ProbeSet,
    spec: SamplingSpec,
    *,
    adapters: ConditionsLike | None = None,
    store: str | os.PathLike[str] | None = None,
    batch_size: int | Literal["auto"] = "auto",
    backend: BackendLike = "auto",
    chunk_rows: int = 256,
    progress: bool = True,
) -> SampleSet:
    """:func:`sample` for a validated spec: what operations built on sampling call with their own spec.

    The spec is used as it is (its system prompt included), so an operation that
    samples and then scores under one spec cannot drift apart.
    """
    from persona_space.sampling._runner import run_jobs

    if not isinstance(spec, SamplingSpec) or not isinstance(probes, ProbeSet):
        raise ConfigError(
            f"run_sample takes a ProbeSet and a SamplingSpec, got {type(probes).__name__} and {type(spec).__name__}"
        )
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    probe_set = probes
    engine = resolve_backend(model, backend, batch_size=batch_size)
    require_generation(engine, model)  # before anything is attached or written
    members = expand_conditions({BASE: None} if adapters is None else adapters)
    routes = model.adapters.attach_members(members)
    require_adapters(engine, routes.values())  # before anything is written
    described = model.describe()
    parameters = {
        "model": {k: v for k, v in described.items() if k not in ("adapters", "source", "device")},
        "adapters": {name: model.adapters.record(a) for name, a in routes.items()},
        "conditions": {m.label: {"condition": m.condition, "train_seed": m.train_seed} for m in members},
        "probes": probe_set.to_records(),
        **spec.to_dict(),
    }
    run = Run(SampleSet.kind, parameters, table=SampleSet.table, store=store, conditions=list(routes), model=described)
    frame, stats = run_jobs(
        model,
        probe_set,
        members,
        routes,
        spec,
        backend=engine,
        run_id=run.run_id,
        done=run.done(_upgrade),  # parts written by an older version resume too
        store=run.store,
        chunk_rows=chunk_rows,
        progress=progress,
    )
    frame = _canonical_order(frame, list(routes), list(probe_set.ids))
    manifest = run.finish(frame, timings=stats, backend=engine.describe())
    return SampleSet(df=frame, manifest=manifest, path=run.path)


def _probe_set(probes: ProbeSet | Sequence[str | Probe] | str) -> ProbeSet:
    if isinstance(probes, ProbeSet):
        return probes
    if isinstance(probes, str):
        from persona_space.probes import load

        return load(probes)
    return ProbeSet.from_list(list(probes))


def _upgrade(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows stored by an older schema, in today's column names."""
    if "condition" not in frame.columns:  # written before conditions could hold several seeds
        frame = frame.assign(condition=frame["adapter"], train_seed=np.nan)
    return frame


def _canonical_order(
    frame: pd.DataFrame, adapters: Sequence[str] | None = None, probe_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows in a fixed order (adapter, probe, temperature, index), whatever order they finished in."""
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = pd.DataFrame(
        {
            "a": _rank(frame["adapter"], adapters),
            "p": _rank(frame["probe_id"], probe_ids),
            "t": frame["temperature"].to_numpy(),
            "i": frame["sample_index"].to_numpy(),
        }
    )
    order = keys.sort_values(["a", "p", "t", "i"], kind="stable").index
    keep = [c for c in (*COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
    return frame.iloc[order][keep].reset_index(drop=True)


def _rank(values: pd.Series, order: Sequence[str] | None) -> Any:
    if order is None:
        return values.to_numpy()
    position = {v: i for i, v in enumerate(order)}
    return values.map(lambda v: position.get(v, len(position))).to_numpy()
