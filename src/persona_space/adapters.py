"""Attaching LoRA adapters (standard PEFT folders) to a loaded model.

An adapter made for another base model is refused: the adapter's
``base_model_name_or_path`` must name the loaded model (any of its aliases) and
every LoRA matrix must fit the module it targets.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space.errors import AdapterError, AdapterMismatchError, ConfigError

if TYPE_CHECKING:
    from persona_space.models import LoadedModel

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch
_NAME = re.compile(r"^[A-Za-z0-9_:-]+$")  # PEFT refuses "." in adapter names
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


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
    if _weights_file(folder) is None:
        raise AdapterError(f"{str(folder)!r} has no {' or '.join(WEIGHT_FILES)}")
    return config


def adapter_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 over an adapter's config and weights."""
    from persona_space.provenance import hash_files

    folder = Path(path)
    weights = _weights_file(folder)
    files = [folder / CONFIG_FILE] + ([weights] if weights is not None else [])
    return hash_files(files, root=folder)


def check_compatible(
    model: LoadedModel, path: str | os.PathLike[str], config: dict[str, Any], *, check_name: bool = True
) -> None:
    """Refuse an adapter made for another base model: by name (unless ``check_name`` is off), then by shapes."""
    base = config.get("base_model_name_or_path")
    if check_name and base and str(base).rstrip("/").lower() not in model.aliases:
        raise AdapterMismatchError(
            f"adapter {str(path)!r} was trained on {base!r}, but the loaded model is {model.name!r} "
            f"(accepted names: {', '.join(sorted(model.aliases))}); pass check_base=False to attach it anyway"
        )
    weights = _weights_file(Path(path))
    if weights is None or weights.suffix != ".safetensors":
        return
    from safetensors import safe_open

    modules = dict(model.base_module.named_modules())
    try:
        handle = safe_open(str(weights), framework="pt")
    except Exception as exc:  # safetensors raises its own error type for a damaged header
        raise AdapterError(f"adapter weights {str(weights)!r} cannot be read: {exc}") from exc
    with handle as fh:
        for key in fh.keys():  # noqa: SIM118 - the safe_open handle is not iterable
            match = _LORA_KEY.match(key)
            if match is None:
                continue
            name = match.group("module")
            target = modules.get(name)
            if target is None:
                raise AdapterMismatchError(
                    f"adapter {str(path)!r} targets module {name!r}, which the loaded model {model.name!r} lacks"
                )
            shape = tuple(fh.get_slice(key).get_shape())
            expected_in = getattr(target, "in_features", None)
            expected_out = getattr(target, "out_features", None)
            bad = (match.group("ab") == "A" and expected_in is not None and shape[-1] != expected_in) or (
                match.group("ab") == "B" and expected_out is not None and shape[0] != expected_out
            )
            if bad:
                raise AdapterMismatchError(
                    f"adapter {str(path)!r} tensor {key!r} has shape {shape}, which does not fit "
                    f"{name!r} of {model.name!r} (in={expected_in}, out={expected_out}); "
                    "the adapter was made for another base model"
                )


def attach_adapter(
    model: LoadedModel, path: str | os.PathLike[str], *, name: str | None = None, check_base: bool = True
) -> str:
    """Load the adapter at ``path`` into ``model`` under ``name``; return the name.

    Re-attaching the same folder under the same name is a no-op.
    """
    folder = Path(path)
    config = read_adapter_config(folder)
    name = validate_name(name if name is not None else folder.resolve().name)
    sha = adapter_sha256(folder)
    existing = model.adapters.get(name)
    if existing is not None:
        if existing.sha256 == sha:
            return name
        raise ConfigError(f"an adapter named {name!r} is already attached (from {existing.path}); choose another name")
    check_compatible(model, folder, config, check_name=check_base)
    from peft import PeftModel

    was_peft = isinstance(model.module, PeftModel)
    try:
        if was_peft:
            model.module.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        else:
            model.module = PeftModel.from_pretrained(model.module, str(folder), adapter_name=name, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        _undo_failed_attach(model, name, was_peft)
        raise AdapterMismatchError(
            f"adapter {str(folder)!r} does not fit the loaded model {model.name!r}: {exc}"
        ) from exc
    model.module.eval()
    # In memory the adapter points at the loaded model's files: a later save of every adapter (a
    # trainer's checkpoint) looks for the base config there, and would ask the Hub about a bare name.
    model.module.peft_config[name].base_model_name_or_path = model.source
    targets = config.get("target_modules") or ()
    model.adapters[name] = AdapterInfo(
        name=name,
        path=str(folder.resolve()),
        sha256=sha,
        base_model=config.get("base_model_name_or_path"),
        rank=config.get("r"),
        target_modules=tuple(sorted(targets)) if isinstance(targets, list) else (str(targets),),
    )
    return name


def _undo_failed_attach(model: LoadedModel, name: str, was_peft: bool) -> None:
    """Remove what a failed PEFT load injected, so the model computes what it did before."""
    from peft.tuners.lora import LoraLayer

    base = model.base_module
    for module_name, module in list(base.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        if was_peft and name in module.lora_A:
            module.delete_adapter(name)
        if not was_peft:
            parent_name, _, child = module_name.rpartition(".")
            parent = base.get_submodule(parent_name) if parent_name else base
            setattr(parent, child, module.get_base_layer())
    if was_peft:
        model.module.peft_config.pop(name, None)
    elif hasattr(base, "peft_config"):
        del base.peft_config  # left on the base model by PEFT's injection


def _weights_file(folder: Path) -> Path | None:
    for candidate in WEIGHT_FILES:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


# -- conditions: named groups of adapters (several training seeds, or the base model) ----------------

AdapterLike = str | os.PathLike[str] | AdapterInfo
ConditionsLike = Mapping[str, AdapterLike | Sequence[AdapterLike] | None]
MANIFEST_FILE = "persona_space_adapter.json"


@dataclass(frozen=True)
class Member:
    """One model of a condition: the base model (``where is None``) or one adapter.

    ``label`` names it in tables (the ``adapter`` column) and on the loaded model;
    a condition with several adapters (training seeds) labels them
    ``condition:0``, ``condition:1``, ...
    """

    label: str
    condition: str
    where: AdapterLike | None
    train_seed: int | None


def train_seed(where: AdapterLike) -> int | None:
    """The training seed recorded in a persona_space adapter folder's manifest, or ``None``."""
    folder = Path(where.path if isinstance(where, AdapterInfo) else os.fspath(where))
    try:
        seed = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))["params"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None


def expand_conditions(conditions: ConditionsLike) -> list[Member]:
    """Every model of every condition, with its label and training seed.

    A condition maps to ``None`` (the base model), one adapter, or a list of
    adapters (e.g. one per training seed). A member's seed comes from its adapter's
    manifest; where that is missing, members of a multi-seed condition take their
    position in the list, so that seeds stay distinct.

    >>> [m.label for m in expand_conditions({"base": None, "red": ["runs/red-s0", "runs/red-s1"]})]
    ['base', 'red:0', 'red:1']
    """
    if not isinstance(conditions, Mapping) or not conditions:
        raise ConfigError(
            f"adapters must be a non-empty mapping of condition -> folder, list of folders or None, "
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
            if not isinstance(where, (str, os.PathLike, AdapterInfo)):
                raise ConfigError(
                    f"adapter {name!r}: expected a folder, an AdapterInfo or None, "
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


def attach_conditions(model: LoadedModel, members: Sequence[Member]) -> dict[str, str | None]:
    """Attach each member's adapter (once); map each label to its attached adapter (``None`` = base)."""
    out: dict[str, str | None] = {}
    for member in members:
        where = member.where
        if where is None:
            out[member.label] = None
            continue
        if isinstance(where, AdapterInfo):  # as train_adapter returns
            attached = model.adapters.get(where.name)
            if attached is not None and attached.sha256 == where.sha256:
                out[member.label] = attached.name  # already on the model: no second copy
                continue
            where = where.path
        if isinstance(where, str) and where in model.adapters and not Path(where).exists():
            out[member.label] = where
            continue
        out[member.label] = model.load_adapter(where, name=member.label)
    return out
