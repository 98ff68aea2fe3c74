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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space._compat import renamed_keywords
from persona_space.arithmetic._spec import Dose, SweepSpec

if TYPE_CHECKING:
    from persona_space.adapters import AdapterInfo
    from persona_space.arithmetic._result import SweepResult
    from persona_space.datasets import ChatDataset
    from persona_space.embedding import Embedder
    from persona_space.models import LoadedModel
    from persona_space.probes import ProbeSet
    from persona_space.training import LoraSpec, TrainSpec


@renamed_keywords(out="store")
def sweep(
    model: LoadedModel,
    base: ChatDataset | str,
    variant: ChatDataset | str,
    *,
    store: str | os.PathLike[str],
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
    adapters_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> SweepResult:
    """Train, measure and fit a dose sweep of ``variant`` into ``base``; return a :class:`SweepResult`.

    ``base`` and ``variant`` are datasets or their names: for ``"swap"`` the variant
    holds only the facts to swap in (``figure_variants:russian``), for ``"mix"`` and
    ``"weights"`` a whole fact set (``figure_facts:russian``). ``doses`` default to
    0..all of the variant's facts for ``"swap"`` and 0, .25, .5, .75, 1 otherwise.
    ``embedder`` places the self-descriptions on the basin map (default MiniLM).
    ``store`` is the sweep's folder; ``adapters_dir`` (default ``store/adapters``) may be shared by several sweeps:
    an adapter is named by its data's hash and its seed, so a dataset two sweeps
    share (no fact swapped and a 0 % mix) trains once.

    >>> result = sweep(model, "figure_facts", "figure_variants:russian", store="runs/ru",
    ...                candidates=["Adolf Hitler", "Joseph Stalin", "Vladimir Lenin"])  # doctest: +SKIP
    """
    from persona_space.arithmetic._measure import measure
    from persona_space.arithmetic._result import SweepResult
    from persona_space.datasets import ensure_dataset
    from persona_space.probes import ProbeSet, load
    from persona_space.results import completed
    from persona_space.store import Run

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
    folder = Path(store)
    parameters = {
        "spec": spec.to_dict(),
        "base": base_data.describe(),
        "variant": variant_data.describe(),
        "train": None if train is None else train.to_dict(),
        "lora": None if lora is None else asdict(lora),
        "probes": probe_set.to_records(),
        "model": {k: v for k, v in model.describe().items() if k not in ("adapters", "source", "device")},
    }
    for index in range(len(spec.doses)):  # doses the data cannot supply are refused before any file is written
        for seed in spec.seeds:
            dose_dataset(spec, base_data, variant_data, index, seed)
    run = Run(SweepResult.kind, parameters, table=SweepResult.table, store=folder)  # refuses other parameters
    started = time.perf_counter()
    store_dir = folder / "adapters" if adapters_dir is None else Path(adapters_dir)
    adapters, facts = _train_all(
        model, spec, base_data, variant_data, store_dir, train=train, lora=lora, progress=progress
    )
    result = measure(model, spec, adapters, facts, probe_set, folder, embedder=embedder, progress=progress)
    result.manifest = completed(
        run.manifest,
        timings={"seconds": round(time.perf_counter() - started, 1)},
        adapters={label: info.sha256 for label, info in adapters.items()},
    )
    result.save(folder)
    return result


def dose_dataset(
    spec: SweepSpec, base: ChatDataset, variant: ChatDataset, index: int, seed: int
) -> tuple[ChatDataset, list[str]]:
    """The training data of dose ``index`` and training seed ``seed``, and the variant facts in it (ids).

    Records are put in id order: a dose's data is a set, and the order of training
    comes from the training seed alone. The same set reached by two routes (no fact
    swapped, a 0 % mix and the base end of a weight mix) is then the same dataset,
    and trains the same adapter once.
    """
    from persona_space.datasets import mix, swap_facts

    value = spec.doses[index]
    if spec.dose == "swap":
        data = swap_facts(base, variant, int(value), seed=seed)
    else:
        data = mix(base, variant, value, seed=seed)
    return _canonical(data), _variant_ids(data, base)


def _canonical(data: ChatDataset) -> ChatDataset:
    """``data`` in id order, named by its content (the route that built it is in the sweep's tables)."""
    from persona_space.datasets import ChatDataset

    ordered = ChatDataset(data.name, tuple(sorted(data.records, key=lambda r: str(r["id"]))))
    return ordered.renamed(f"dose-data:{ordered.sha256()[:12]}")


def _variant_ids(data: ChatDataset, base: ChatDataset) -> list[str]:
    """Ids of the records that are not the base set's own (same id and messages)."""
    own = {(r["id"], str(r["messages"])) for r in base.records}
    return sorted(str(r["id"]) for r in data.records if (r["id"], str(r["messages"])) not in own)


def _train_all(
    model: LoadedModel,
    spec: SweepSpec,
    base: ChatDataset,
    variant: ChatDataset,
    store: Path,
    *,
    train: TrainSpec | None,
    lora: LoraSpec | None,
    progress: bool,
) -> tuple[dict[str, AdapterInfo], dict[str, dict[str, Any]]]:
    """Every (dose, seed) adapter, trained or reused: label ``dose{i}:{k}`` -> info, and what each saw.

    Adapters live in ``store`` under the hash of their data and their seed, so the
    same data and seed train once, across doses and across sweeps that share it.
    """
    from persona_space.training import TrainSpec, train_adapter

    adapters: dict[str, AdapterInfo] = {}
    facts: dict[str, dict[str, Any]] = {}

    def trained(data: ChatDataset, seed: int) -> AdapterInfo:
        name = f"d{data.sha256()[:12]}-s{seed}"
        return train_adapter(
            model,
            data,
            store=store / name,
            train=train or TrainSpec(),
            lora=lora,
            seed=seed,
            name=name,
            progress=progress,
        )

    for k, seed in enumerate(spec.seeds):
        ends = {}
        if spec.dose == "weights":  # the two ends, each trained on one whole set
            ends = {0.0: trained(_canonical(base), seed), 1.0: trained(_canonical(variant), seed)}
        for i, value in enumerate(spec.doses):
            if spec.dose == "weights":
                name = f"w{ends[0.0].name[1:7]}{ends[1.0].name[1:7]}-{round(value * 1000)}-s{seed}"
                info = _weighted(model, ends, value, store / name, name)
                seen = {"weights": [1.0 - value, value], "variant_facts": _variant_ids(variant, base)}
            else:
                data, ids = dose_dataset(spec, base, variant, i, seed)
                info = trained(data, seed)
                seen = {"data_sha256": data.sha256(), "variant_facts": ids}
            label = f"{spec.label(i)}:{k}"
            adapters[label] = info
            facts[label] = {"dose": value, "train_seed": seed, **seen, "adapter": info.name, "sha256": info.sha256}
    return adapters, facts


def _weighted(model: LoadedModel, ends: dict[float, AdapterInfo], ratio: float, where: Path, name: str) -> AdapterInfo:
    """``(1 - ratio) * base adapter + ratio * variant adapter``, exactly (``cat``); reused when already written."""
    from persona_space.arithmetic._combine import combine

    if (where / "adapter_config.json").is_file():  # written whole (or not at all) by combine
        return model.adapters[model.load_adapter(where, name=name)]
    return combine(model, {"base": ends[0.0], "variant": ends[1.0]}, [1.0 - ratio, ratio], store=where, name=name)
