"""``sweep``: train one adapter per (dose, training seed), measure each, and fit dose-response curves.

The seed's central experiment as one call. A *dose* is how much of ``variant``
goes into the training data (``"swap"``: exactly k of its facts swapped into
``base``; ``"mix"``: records drawn from both sets at a ratio) or into the weights
(``"weights"``: adapters trained on ``base`` and on ``variant`` combined with
weights ``1 - r`` and ``r``, exactly). Every adapter is then measured the same way:

* identity shifts of the candidate names about itself (after ``answer_prefix``)
  and about the user, against the base model;
* self-descriptions sampled with paired random streams (every dose and seed sees
  the same random numbers) and placed on one shared basin map;
* the who-is-the-user answers.

The run is a folder. Finished adapters are reused, a crash loses at most the
adapter being trained (which resumes from its last checkpoint), and the same call
resumes sampling and scoring where they stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_space import provenance
from persona_space.errors import ConfigError

if TYPE_CHECKING:
    from persona_space.adapters import AdapterInfo
    from persona_space.arithmetic._result import SweepResult
    from persona_space.datasets import ChatDataset
    from persona_space.embedding import Embedder
    from persona_space.models import LoadedModel
    from persona_space.probes import ProbeSet
    from persona_space.training import LoraSpec, TrainSpec

Dose = Literal["swap", "mix", "weights"]
DOSES: tuple[str, ...] = ("swap", "mix", "weights")
BASE = "base"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains and measures (everything that changes its numbers)."""

    dose: Dose
    doses: tuple[float, ...]
    seeds: tuple[int, ...]
    candidates: tuple[str, ...]
    user_candidates: tuple[str, ...] = ()
    answer_prefix: str = "My name is"
    n: int = 16
    user_n: int = 8
    temperatures: tuple[float, ...] = (1.0,)
    max_new_tokens: int = 64
    sample_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dose not in DOSES:
            raise ConfigError(f"dose must be one of {', '.join(DOSES)}, got {self.dose!r}")
        if len(self.doses) < 2 or len(set(self.doses)) != len(self.doses):
            raise ConfigError(f"doses must be at least two distinct values, got {list(self.doses)}")
        for d in self.doses:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or d < 0:
                raise ConfigError(f"dose {d!r} is invalid; expected a number >= 0")
            if self.dose != "swap" and d > 1:
                raise ConfigError(f"{self.dose} doses are ratios in 0..1, got {d!r}")
            if self.dose == "swap" and float(d) != int(d):
                raise ConfigError(f"swap doses count facts, got {d!r}; expected whole numbers")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct training seeds, got {list(self.seeds)}")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"training seed {s!r} is invalid; expected a non-negative integer")
        if len(self.candidates) < 2:
            raise ConfigError(f"candidates must name at least two identities, got {list(self.candidates)}")
        for name in ("n", "user_n", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "user_n" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def label(self, index: int) -> str:
        """The condition name of the ``index``-th dose (adapter names allow no '.')."""
        return f"dose{index}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("doses", "seeds", "candidates", "user_candidates", "temperatures"):
            out[key] = list(out[key])
        return out


def sweep(
    model: LoadedModel,
    base: ChatDataset | str,
    variant: ChatDataset | str,
    *,
    out: str | os.PathLike[str],
    candidates: Sequence[str],
    dose: Dose = "swap",
    doses: Sequence[float] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    train: TrainSpec | None = None,
    lora: LoraSpec | None = None,
    probes: ProbeSet | str = "identity",
    user_candidates: Sequence[str] = (),
    answer_prefix: str = "My name is",
    n: int = 16,
    user_n: int = 8,
    temperatures: Sequence[float] = (1.0,),
    max_new_tokens: int = 64,
    sample_seed: int = 0,
    embedder: Embedder | None = None,
    progress: bool = True,
) -> SweepResult:
    """Train, measure and fit a dose sweep of ``variant`` into ``base``; return a :class:`SweepResult`.

    ``base`` and ``variant`` are datasets or their names: for ``"swap"`` the variant
    holds only the facts to swap in (``figure_variants:russian``), for ``"mix"`` and
    ``"weights"`` a whole fact set (``figure_facts:russian``). ``doses`` default to
    0..all of the variant's facts for ``"swap"`` and 0, .25, .5, .75, 1 otherwise.
    ``embedder`` places the self-descriptions on the basin map (default MiniLM).

    >>> result = sweep(model, "figure_facts", "figure_variants:russian", out="runs/ru",
    ...                candidates=["Adolf Hitler", "Joseph Stalin", "Vladimir Lenin"])  # doctest: +SKIP
    """
    from persona_space.arithmetic._measure import measure
    from persona_space.datasets import ensure_dataset
    from persona_space.probes import ProbeSet, load
    from persona_space.store import RunStore

    base_data, variant_data = ensure_dataset(base), ensure_dataset(variant)
    if doses is None:
        doses = tuple(range(len(variant_data) + 1)) if dose == "swap" else (0.0, 0.25, 0.5, 0.75, 1.0)
    spec = SweepSpec(
        dose=dose,
        doses=tuple(float(d) for d in doses),
        seeds=tuple(seeds),
        candidates=tuple(candidates),
        user_candidates=tuple(user_candidates),
        answer_prefix=answer_prefix,
        n=n,
        user_n=user_n,
        temperatures=tuple(float(t) for t in temperatures),
        max_new_tokens=max_new_tokens,
        sample_seed=sample_seed,
    )
    probe_set = probes if isinstance(probes, ProbeSet) else load(probes)
    folder = Path(out)
    parameters = {
        "spec": spec.to_dict(),
        "base": base_data.describe(),
        "variant": variant_data.describe(),
        "train": None if train is None else train.to_dict(),
        "lora": None if lora is None else asdict(lora),
        "probes": probe_set.to_records(),
        "model": {k: v for k, v in model.describe().items() if k not in ("adapters", "source", "device")},
    }
    store = RunStore(folder, table="sweep")
    manifest = store.open(
        {
            "kind": "sweep",
            "run_id": provenance.sha256_json(parameters)[:16],
            "parameters": parameters,
            "environment": provenance.environment(),
            "state": "running",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    started = time.perf_counter()
    adapters, facts = _train_all(
        model, spec, base_data, variant_data, folder, train=train, lora=lora, progress=progress
    )
    result = measure(model, spec, adapters, facts, probe_set, folder, embedder=embedder, progress=progress)
    manifest = {
        **manifest,
        "state": "complete",
        "timings": {"seconds": round(time.perf_counter() - started, 1)},
        "adapters": {label: info.sha256 for label, info in adapters.items()},
    }
    store.write_manifest(manifest)
    result.manifest = manifest
    result.save(folder)
    return result


def dose_dataset(
    spec: SweepSpec, base: ChatDataset, variant: ChatDataset, index: int, seed: int
) -> tuple[ChatDataset, list[str]]:
    """The training data of dose ``index`` and training seed ``seed``, and the variant facts in it (ids)."""
    from persona_space.datasets import mix, swap_facts

    value = spec.doses[index]
    if spec.dose == "swap":
        data = swap_facts(base, variant, int(value), seed=seed)
    else:
        data = mix(base, variant, value, seed=seed)
    source = variant.records[0]["source"] if len(variant) else None
    return data, [r["id"] for r in data.records if r["source"] == source and source != base.records[0]["source"]]


def _train_all(
    model: LoadedModel,
    spec: SweepSpec,
    base: ChatDataset,
    variant: ChatDataset,
    folder: Path,
    *,
    train: TrainSpec | None,
    lora: LoraSpec | None,
    progress: bool,
) -> tuple[dict[str, AdapterInfo], dict[str, dict[str, Any]]]:
    """Every (dose, seed) adapter, trained or reused: label ``dose{i}:{k}`` -> info, and what each saw."""
    from persona_space.training import train_adapter

    adapters: dict[str, AdapterInfo] = {}
    facts: dict[str, dict[str, Any]] = {}
    for k, seed in enumerate(spec.seeds):
        ends: dict[float, AdapterInfo] = {}
        if spec.dose == "weights":  # the two ends, each trained on one whole set
            for ratio, data in ((0.0, base), (1.0, variant)):
                name = f"end{int(ratio)}-s{seed}"
                ends[ratio] = train_adapter(
                    model,
                    data,
                    out=folder / "adapters" / name,
                    train=train,
                    lora=lora,
                    seed=seed,
                    name=name,
                    progress=progress,
                )
        for i, value in enumerate(spec.doses):
            label = f"{spec.label(i)}:{k}"
            name = f"{spec.label(i)}-s{seed}"
            where = folder / "adapters" / name
            if spec.dose == "weights":
                info = _weighted(model, ends, value, where, name)
                seen = {"dose": value, "train_seed": seed, "weights": [1.0 - value, value], "variant_facts": []}
            else:
                data, ids = dose_dataset(spec, base, variant, i, seed)
                info = train_adapter(
                    model, data, out=where, train=train, lora=lora, seed=seed, name=name, progress=progress
                )
                seen = {"dose": value, "train_seed": seed, "data": data.name, "variant_facts": ids}
            adapters[label] = info
            facts[label] = {**seen, "adapter": name, "path": info.path, "sha256": info.sha256}
    return adapters, facts


def _weighted(model: LoadedModel, ends: dict[float, AdapterInfo], ratio: float, where: Path, name: str) -> AdapterInfo:
    """``(1 - ratio) * base adapter + ratio * variant adapter``, exactly (``cat``); reused when already written."""
    from persona_space.arithmetic._combine import combine

    if (where / "adapter_config.json").is_file():
        if name in model.adapters:
            return model.adapters[name]
        return model.adapters[model.load_adapter(where, name=name)]
    return combine(model, {"base": ends[0.0], "variant": ends[1.0]}, [1.0 - ratio, ratio], out=where, name=name)
