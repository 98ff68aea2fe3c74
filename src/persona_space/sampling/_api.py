"""``sample()``: many self-descriptions per probe, adapter and temperature, stored as a table."""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from persona_space import provenance
from persona_space.adapters import AdapterInfo
from persona_space.chat import DEFAULT_SYSTEM_PROMPT
from persona_space.errors import ConfigError
from persona_space.models import LoadedModel
from persona_space.probes import Probe, ProbeSet
from persona_space.store import SCHEMA_VERSION, RunStore

AdapterLike = str | os.PathLike[str] | AdapterInfo | None
COLUMNS = (
    "run_id",
    "adapter",
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
BASE = "base"


@dataclass(frozen=True)
class SamplingSpec:
    """Validated sampling parameters (everything that changes the rows)."""

    n: int = 16
    temperatures: tuple[float, ...] = (1.0,)
    top_p: float = 1.0
    max_new_tokens: int = 128
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed: int = 0
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n must be a positive integer (samples per probe and condition), got {self.n!r}")
        if not self.temperatures:
            raise ConfigError("temperatures is empty; expected at least one temperature >= 0")
        for t in self.temperatures:
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
                raise ConfigError(f"temperature {t!r} is invalid; expected a finite number >= 0 (0 = greedy)")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ConfigError(f"temperatures {self.temperatures!r} contain duplicates")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not isinstance(self.system_prompt, str):
            raise ConfigError(
                f"system_prompt must be a string ('' for an empty system turn), got {self.system_prompt!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["temperatures"] = list(self.temperatures)
        return out


@dataclass
class SampleSet:
    """Sampled answers: ``df`` has one row per sample (see :data:`COLUMNS`)."""

    df: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SampleSet:
        """Read a run directory written by :func:`sample`."""
        from persona_space.errors import CorruptRunError

        store = RunStore(path, table="samples")
        manifest = store.read_manifest()
        if manifest is None:
            raise CorruptRunError(f"{str(path)!r} holds no run: no {store.manifest_path.name}")
        rows = store.read_rows()
        frame = rows if rows is not None else pd.DataFrame(columns=list(COLUMNS))
        params = manifest.get("parameters", {})
        adapters = list(manifest.get("conditions") or params.get("adapters", {}))
        probe_ids = [str(p.get("id")) for p in params.get("probes", []) if isinstance(p, dict)]
        return cls(df=_canonical_order(frame, adapters, probe_ids), manifest=manifest, path=Path(path))

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("state") == "complete")

    def summary(self, confidence: float = 0.95) -> pd.DataFrame:
        """Per adapter and temperature: samples, mean tokens, and the shares of empty and truncated answers.

        Each figure carries a ``confidence`` interval (``*_low``/``*_high``): Student-t
        for the mean, Wilson for the shares. They treat samples as independent; the
        basin statistics resample prompts as well.
        """
        from persona_space.stats import mean_interval, wilson_interval

        rows: list[dict[str, Any]] = []
        for (adapter, temperature), group in self.df.groupby(["adapter", "temperature"], sort=False):
            n = len(group)
            tokens = group["n_tokens"].astype(float).tolist()
            empty = int((group["text"].str.strip() == "").sum())
            truncated = int((group["finish_reason"] == "length").sum())
            t_low, t_high = mean_interval(tokens, confidence)
            e_low, e_high = wilson_interval(empty, n, confidence)
            c_low, c_high = wilson_interval(truncated, n, confidence)
            rows.append(
                {
                    "adapter": adapter,
                    "temperature": temperature,
                    "samples": n,
                    "mean_tokens": sum(tokens) / n,
                    "mean_tokens_low": t_low,
                    "mean_tokens_high": t_high,
                    "empty_share": empty / n,
                    "empty_share_low": e_low,
                    "empty_share_high": e_high,
                    "truncated_share": truncated / n,
                    "truncated_share_low": c_low,
                    "truncated_share_high": c_high,
                }
            )
        return pd.DataFrame(rows)

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"SampleSet({len(self.df)} rows, adapters={sorted(self.df['adapter'].unique())}{where})"


def row_seed(seed: int, adapter: str, probe_id: str, temperature: float, index: int) -> int:
    """The 64-bit random stream of one sample, independent of batching and run order."""
    key = f"{seed}\x1f{adapter}\x1f{probe_id}\x1f{float(temperature)!r}\x1f{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def sample(
    model: LoadedModel,
    probes: ProbeSet | Sequence[str | Probe] | str,
    *,
    adapters: Mapping[str, AdapterLike] | None = None,
    n: int = 16,
    temperatures: float | Sequence[float] = (1.0,),
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    system_prompt: str | None = None,
    seed: int = 0,
    store: str | os.PathLike[str] | None = None,
    batch_size: int | Literal["auto"] = "auto",
    ignore_eos: bool = False,
    chunk_rows: int = 256,
    progress: bool = True,
) -> SampleSet:
    """Sample ``n`` answers per probe, adapter and temperature.

    ``adapters`` maps condition names to adapter folders, with ``None`` for the base
    model (default: ``{"base": None}``); all conditions run through one copy of the
    weights, mixed in the same batches. With ``store=DIR`` rows are appended to
    Parquet in chunks and a second call with the same arguments resumes the run.
    The table is the same whatever ``batch_size`` is: every sample has its own
    random stream (up to floating-point differences between batch shapes).

    >>> samples = sample(model, "identity", n=4, temperatures=[0.7, 1.0], store="runs/exp1")  # doctest: +SKIP
    """
    from persona_space.sampling._runner import run_jobs

    probe_set = _probe_set(probes)
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
    )
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    from persona_space.sampling._stack import check_supported

    check_supported(model.base_module)  # before anything is attached or written
    conditions = attach_conditions(model, adapters)
    described = model.describe()
    parameters = {
        "model": {k: v for k, v in described.items() if k not in ("adapters", "source", "device")},
        "adapters": {name: (model.adapters[a].sha256 if a else None) for name, a in conditions.items()},
        "probes": probe_set.to_records(),
        **spec.to_dict(),
    }
    run_id = provenance.sha256_json(parameters)[:16]
    manifest: dict[str, Any] = {
        "kind": "samples",
        "run_id": run_id,
        "schema_version": SCHEMA_VERSION,
        "parameters": parameters,
        "conditions": list(conditions),
        "model": described,
        "environment": provenance.environment(),
        "state": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    run_store = RunStore(store, table="samples") if store is not None else None
    if run_store is not None:
        manifest = run_store.open(manifest)
    done = run_store.read_rows() if run_store is not None else None
    frame, stats = run_jobs(
        model,
        probe_set,
        conditions,
        spec,
        run_id=run_id,
        done=done,
        store=run_store,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        progress=progress,
    )
    frame = _canonical_order(frame, list(conditions), list(probe_set.ids))
    if run_store is not None:
        run_store.finalize(frame)
        manifest = {**manifest, "state": "complete", "rows": len(frame), "timings": stats}
        manifest.setdefault("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        run_store.write_manifest(manifest)
    else:
        manifest = {**manifest, "state": "complete", "rows": len(frame), "timings": stats}
    return SampleSet(df=frame, manifest=manifest, path=run_store.path if run_store is not None else None)


def _probe_set(probes: ProbeSet | Sequence[str | Probe] | str) -> ProbeSet:
    if isinstance(probes, ProbeSet):
        return probes
    if isinstance(probes, str):
        from persona_space.probes import load

        return load(probes)
    return ProbeSet.from_list(list(probes))


def attach_conditions(model: LoadedModel, adapters: Mapping[str, AdapterLike] | None) -> dict[str, str | None]:
    """Attach adapter folders; map each condition name to its attached adapter (``None`` = base)."""
    if adapters is None:
        adapters = {BASE: None}
    if not isinstance(adapters, Mapping) or not adapters:
        raise ConfigError(f"adapters must be a non-empty mapping of name -> folder or None, got {adapters!r:.80}")
    out: dict[str, str | None] = {}
    for name, where in adapters.items():
        from persona_space.adapters import validate_name

        validate_name(name)
        if where is None:
            out[name] = None
            continue
        if isinstance(where, AdapterInfo):  # as train_adapter returns
            attached = model.adapters.get(where.name)
            if attached is not None and attached.sha256 == where.sha256:
                out[name] = attached.name  # already on the model: no second copy
                continue
            where = where.path
        elif not isinstance(where, (str, os.PathLike)):
            raise ConfigError(
                f"adapter {name!r}: expected a folder, an AdapterInfo or None, got {type(where).__name__} {where!r:.60}"
            )
        if isinstance(where, str) and where in model.adapters and not Path(where).exists():
            out[name] = where
            continue
        out[name] = model.load_adapter(where, name=name)
    return out


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
    keep = [c for c in COLUMNS if c in frame.columns]
    return frame.iloc[order][keep].reset_index(drop=True)


def _rank(values: pd.Series, order: Sequence[str] | None) -> Any:
    if order is None:
        return values.to_numpy()
    position = {v: i for i, v in enumerate(order)}
    return values.map(lambda v: position.get(v, len(position))).to_numpy()
