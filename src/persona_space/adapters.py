"""LoRA adapter folders (standard PEFT) and conditions: named groups of adapters.

Reading and hashing folders, naming adapters, and expanding a mapping of
conditions into the models it holds. Putting adapters on a loaded model is the
engine's adapter set (:class:`persona_space.engine.AdapterSet`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from persona_space.errors import AdapterError, ConfigError, CorruptRunError
from persona_space.steering import Steer

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch
_NAME = re.compile(r"^[A-Za-z0-9_:-]+$")  # PEFT refuses "." in adapter names


@dataclass(frozen=True)
class AdapterInfo:
    """Where an attached adapter came from and what it is."""

    name: str
    path: str
    sha256: str
    base_model: str | None
    rank: int | None
    target_modules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name == BASE_ROW:
        raise ConfigError(
            f"adapter name {name!r} is not allowed; expected letters, digits, '_', ':' or '-' (and not {BASE_ROW!r})"
        )
    return name


def read_adapter_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {str(folder)!r} does not exist; expected a PEFT adapter folder")
    cfg_path = folder / CONFIG_FILE
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AdapterError(f"{str(folder)!r} has no {CONFIG_FILE}; expected a PEFT adapter folder") from exc
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{str(cfg_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"{str(cfg_path)!r} should hold a JSON object, found {type(config).__name__}")
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise AdapterError(f"{str(folder)!r} is a {peft_type} adapter; expected a LoRA adapter")
    if weights_file(folder) is None:
        raise AdapterError(f"{str(folder)!r} has no {' or '.join(WEIGHT_FILES)}")
    return config


def adapter_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 over an adapter's config and weights."""
    from persona_space.provenance import hash_files

    folder = Path(path)
    weights = weights_file(folder)
    files = [folder / CONFIG_FILE] + ([weights] if weights is not None else [])
    return hash_files(files, root=folder)


def info_for_folder(
    name: str, path: str | os.PathLike[str], *, config: Mapping[str, Any] | None = None, sha256: str | None = None
) -> AdapterInfo:
    """What an adapter folder is (its hash, base model, rank and targets), under ``name``; ``config`` and
    ``sha256`` where the caller has read them already."""
    folder = Path(path)
    config = read_adapter_config(folder) if config is None else config
    targets = config.get("target_modules") or ()
    return AdapterInfo(
        name=name,
        path=str(folder.resolve()),
        sha256=adapter_sha256(folder) if sha256 is None else sha256,
        base_model=config.get("base_model_name_or_path"),
        rank=config.get("r"),
        target_modules=tuple(sorted(targets)) if isinstance(targets, list) else (str(targets),),
    )


def weights_file(folder: Path) -> Path | None:
    for candidate in WEIGHT_FILES:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


# -- conditions: named groups of adapters (several training seeds, or the base model) ----------------

AdapterLike = str | os.PathLike[str] | AdapterInfo
ModelLike = AdapterLike | Steer
"""One model of a condition: an adapter, or a steering (on the base model or on an adapter)."""
ConditionsLike = Mapping[str, ModelLike | Sequence[ModelLike] | None]
MANIFEST_FILE = "manifest.json"  # the layout of every result (persona_space.results); written last
LEGACY_MANIFEST_FILE = "persona_space_adapter.json"  # what schema 3 and older wrote instead
LOSS_TABLE = "training_log"  # tables/training_log.parquet: the loss per logged step
LOSS_COLUMNS = ("step", "loss")


def empty_loss_log() -> Any:
    """The loss table of an adapter that was not trained (combined, scaled): no rows, its columns."""
    import pandas as pd

    return pd.DataFrame(columns=list(LOSS_COLUMNS))


def combined_parameters(manifest: Mapping[str, Any], base_model: Any) -> dict[str, Any]:
    """What decides a combined adapter's weights (its run id hashes these): method, density, sources, base model."""
    sources = [{k: s.get(k) for k in ("name", "sha256", "weight")} for s in manifest.get("sources", [])]
    return {"method": manifest.get("method"), "density": manifest.get("density"), "sources": sources,
            "base_model": base_model}  # fmt: skip


@dataclass(frozen=True)
class Member:
    """One model of a condition: the base model (``where is None``), one adapter or one steering.

    ``label`` names it in tables (the ``adapter`` column) and on the loaded model;
    a condition with several adapters (training seeds) labels them
    ``condition:0``, ``condition:1``, ...
    """

    label: str
    condition: str
    where: ModelLike | None
    train_seed: int | None


def train_seed(where: ModelLike) -> int | None:
    """The training seed recorded in a persona_space adapter folder's manifest, or ``None`` (a steering: its
    adapter's)."""
    if isinstance(where, Steer):
        return None if where.adapter is None else train_seed(where.adapter)
    folder = Path(where.path if isinstance(where, AdapterInfo) else os.fspath(where))
    try:
        manifest = adapter_manifest(folder)
        seed = manifest["parameters"]["seed"] if manifest is not None else None
    except (CorruptRunError, KeyError, TypeError):
        return None
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None


def adapter_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a finished persona_space adapter folder (either layout), or ``None`` where it has none.

    Manifests of earlier releases (``persona_space_adapter.json``) are read in today's
    terms: ``params`` becomes ``parameters`` and a combined adapter's kind ``adapter``
    with ``origin: combined``. Unreadable JSON raises :class:`CorruptRunError`.
    """
    from persona_space.results import read_manifest

    for name in (MANIFEST_FILE, LEGACY_MANIFEST_FILE):
        manifest = read_manifest(folder, name)
        if manifest is None:
            continue
        if name == MANIFEST_FILE:
            return manifest if manifest.get("kind") == "adapter" else None  # another kind of result
        legacy = {("parameters" if k == "params" else k): v for k, v in manifest.items()}
        if legacy.get("kind") in ("combined", "combined_adapter"):  # recorded no parameters and no hash
            parameters = combined_parameters(legacy, legacy.get("base_model"))
            legacy = {**legacy, "kind": "adapter", "origin": "combined", "parameters": parameters}
        return legacy
    return None


def expand_conditions(conditions: ConditionsLike) -> list[Member]:
    """Every model of every condition, with its label and training seed.

    A condition maps to ``None`` (the base model), one adapter or
    :class:`~persona_space.steering.Steer`, or a list of them (e.g. one per
    training seed). A member's seed comes from its adapter's
    manifest; where that is missing, members of a multi-seed condition take their
    position in the list, so that seeds stay distinct.

    >>> [m.label for m in expand_conditions({"base": None, "red": ["runs/red-s0", "runs/red-s1"]})]
    ['base', 'red:0', 'red:1']
    """
    if not isinstance(conditions, Mapping) or not conditions:
        raise ConfigError(
            f"adapters must be a non-empty mapping of condition -> folder, Steer, list of them or None, "
            f"got {conditions!r:.80}"
        )
    out: list[Member] = []
    for name, value in conditions.items():
        validate_name(name)
        if value is None:
            out.append(Member(name, name, None, None))
            continue
        many = isinstance(value, (list, tuple))
        members: list[Any] = list(value) if isinstance(value, (list, tuple)) else [value]
        if not members:
            raise ConfigError(f"condition {name!r} has no adapters; expected at least one folder")
        for k, where in enumerate(members):
            if not isinstance(where, (str, os.PathLike, AdapterInfo, Steer)):
                raise ConfigError(
                    f"adapter {name!r}: expected a folder, an AdapterInfo, a Steer or None, "
                    f"got {type(where).__name__} {where!r:.60}"
                )
            label = validate_name(f"{name}:{k}") if many and len(members) > 1 else name
            seed = train_seed(where)
            out.append(Member(label, name, where, seed if seed is not None or len(members) == 1 else k))
    labels = [m.label for m in out]
    clash = sorted({label for label in labels if labels.count(label) > 1})
    if clash:
        raise ConfigError(f"model labels {clash} occur twice; rename the conditions")
    return out
