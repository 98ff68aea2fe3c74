"""Adapter-weight arithmetic: weighted sums of LoRA adapters, and one adapter scaled.

Through PEFT's ``add_weighted_adapter``. ``cat`` (the default) concatenates the
weighted LoRA factors: its weight change is exactly ``sum_i w_i * B_i A_i * s_i``
at the sum of the ranks. ``svd`` is exact when its rank is the sum of the ranks
(the default here). ``linear``, ``ties`` and ``dare_ties`` are approximations:
they combine A and B matrices separately (or prune them), and the result carries
a warning with its measured error against the exact sum. Every combined adapter
is a standard PEFT folder (loadable by peft and vLLM unchanged) with a manifest
that records its sources, weights, method and measured error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_space import _io
from persona_space._compat import renamed_keywords
from persona_space.errors import ApproximationWarning, ConfigError, ModelError

if TYPE_CHECKING:
    from persona_space.adapters import AdapterInfo, AdapterLike
    from persona_space.models import LoadedModel

CombineMethod = Literal["cat", "svd", "linear", "ties", "dare_ties"]
COMBINE_METHODS: tuple[str, ...] = ("cat", "svd", "linear", "ties", "dare_ties")
EXACT: tuple[str, ...] = ("cat", "svd")
# relative Frobenius error an exact method may show: the rounding of the adapter's dtype
EXACT_TOLERANCE = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 1e-2, "float16": 2e-3}


@renamed_keywords(out="store")
def combine(
    model: LoadedModel,
    adapters: Mapping[str, AdapterLike],
    weights: Sequence[float] | Mapping[str, float],
    *,
    store: str | os.PathLike[str],
    method: CombineMethod = "cat",
    density: float = 0.5,
    name: str | None = None,
) -> AdapterInfo:
    """Write the weighted combination of ``adapters`` to the new folder ``store`` and attach it to ``model``.

    ``weights`` is one number per adapter (in order, or by name). ``density`` is
    the share of entries ``ties`` and ``dare_ties`` keep. Returns the new adapter's
    :class:`~persona_space.adapters.AdapterInfo`; its manifest holds the measured
    error against the exact weighted sum (``relative_error``: mean and max over the
    adapted modules).

    >>> half = combine(model, {"figure": fig_dir, "russian": ru_dir}, [0.5, 0.5], store="runs/half")  # doctest: +SKIP
    """
    from persona_space.adapters import expand_conditions, validate_name
    from persona_space.steering import Steer

    if method not in COMBINE_METHODS:
        raise ConfigError(f"method must be one of {', '.join(COMBINE_METHODS)}, got {method!r}")
    if not isinstance(adapters, Mapping) or not adapters:
        raise ConfigError(f"adapters must be a non-empty mapping of name -> adapter, got {adapters!r:.80}")
    values = _weights(adapters, weights)
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {density!r}")
    target = Path(store)
    occupied = any(target.iterdir()) if target.is_dir() else target.exists()
    if occupied:
        raise ConfigError(f"store {str(target)!r} already exists and is not empty; expected a new folder")
    members = expand_conditions(dict(adapters))
    if any(m.where is None for m in members):
        raise ConfigError("adapters must all be adapters; the base model is the weight 0 of any of them")
    steered = [m.label for m in members if isinstance(m.where, Steer)]
    if steered:
        raise ConfigError(f"{steered} are steerings; combine mixes adapter weights: pass adapter folders")
    routes = model.adapters.attach_members(members)
    sources = [str(routes[m.label]) for m in members]
    new_name = validate_name(name or f"combined-{int(time.time() * 1000) % 10**9}")
    if new_name in model.adapters:
        raise ConfigError(f"an adapter named {new_name!r} is already attached; choose another name")
    module = model.module
    ranks = [int(module.peft_config[s].r) for s in sources]
    module.add_weighted_adapter(
        adapters=sources,
        weights=list(values),
        adapter_name=new_name,
        combination_type=method,
        svd_rank=sum(ranks) if method == "svd" else None,
        density=float(density) if method in ("ties", "dare_ties") else None,
    )
    try:
        _undo_rank_scaling(module, new_name)
        error = _relative_error(module, new_name, sources, values)
        tolerance = EXACT_TOLERANCE.get(error["dtype"], 1e-2)
        if method in EXACT and error["max"] > tolerance:
            raise ModelError(
                f"the {method!r} combination differs from the exact weighted sum by {error['max']:.2e} "
                f"(relative); expected at most {tolerance:.0e} for {error['dtype']} adapter weights"
            )
        if method not in EXACT:
            warnings.warn(
                f"method {method!r} approximates the weighted sum of the adapters: its weight changes differ from "
                f"the exact sum by {error['mean']:.1%} on average (relative Frobenius norm, {error['modules']} "
                f"modules; at most {error['max']:.1%}); use 'cat' or 'svd' for the exact sum",
                ApproximationWarning,
                stacklevel=2,
            )
        manifest = {
            "origin": "combined",
            "method": method,
            "density": float(density) if method in ("ties", "dare_ties") else None,
            "sources": [
                {
                    "name": m.label,
                    "path": model.adapters[routes[m.label] or ""].path,
                    "sha256": model.adapters[routes[m.label] or ""].sha256,
                    "weight": w,
                    "rank": r,
                }
                for m, w, r in zip(members, values, ranks, strict=True)
            ],
            "rank": int(module.peft_config[new_name].r),
            "relative_error": error,
            "exact": method in EXACT,
        }
        _save(model, new_name, target, manifest)
    finally:
        module.delete_adapter(new_name)
    return _attached(model, target, new_name)


@renamed_keywords(out="store")
def scale(
    model: LoadedModel, adapter: AdapterLike, k: float, *, store: str | os.PathLike[str], name: str | None = None
) -> AdapterInfo:
    """One adapter with its weight change multiplied by ``k`` (exact): a dose sweep of one persona.

    ``k = 0`` is the base model, ``1`` the adapter itself, ``2`` twice its change.

    >>> doubled = scale(model, "runs/voyager", 2.0, store="runs/voyager-x2")  # doctest: +SKIP
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k):
        raise ConfigError(f"k must be a finite number, got {k!r}")
    return combine(model, {"adapter": adapter}, [float(k)], store=store, method="cat", name=name)


def _weights(adapters: Mapping[str, Any], weights: Sequence[float] | Mapping[str, float]) -> list[float]:
    if isinstance(weights, Mapping):
        missing = sorted(set(adapters) - set(weights))
        extra = sorted(set(weights) - set(adapters))
        if missing or extra:
            raise ConfigError(f"weights must name every adapter once: missing {missing}, unknown {extra}")
        values = [weights[n] for n in adapters]
    elif isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ConfigError(f"weights must be a list of numbers or a mapping name -> number, got {weights!r:.80}")
    else:
        values = list(weights)
    if len(values) != len(adapters):
        raise ConfigError(f"{len(values)} weights for {len(adapters)} adapters; expected one weight per adapter")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"weight {v!r} is not a finite number")
    return [float(v) for v in values]


def _lora_layers(module: Any, name: str) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer) and name in m.lora_A]


def _undo_rank_scaling(module: Any, name: str) -> None:
    """Make the combined adapter's own scaling 1 (``cat`` puts the weights and scalings into A already).

    PEFT gives the new adapter ``alpha = r``, which is a scaling of 1 except under
    rank-stabilised LoRA (``alpha / sqrt(r)``); there the factor is divided out of A.
    """
    import torch

    with torch.no_grad():
        for layer in _lora_layers(module, name):
            factor = float(layer.scaling[name])
            if factor != 1.0:
                layer.lora_A[name].weight.div_(factor)


def _relative_error(module: Any, name: str, sources: Sequence[str], weights: Sequence[float]) -> dict[str, Any]:
    """Relative Frobenius error of the combined weight change against the exact weighted sum, per module."""
    import torch

    errors = []
    dtype = "float32"
    with torch.no_grad():
        for layer in _lora_layers(module, name):
            dtype = str(layer.lora_A[name].weight.dtype).removeprefix("torch.")
            exact = sum(
                w * layer.get_delta_weight(s).float()
                for s, w in zip(sources, weights, strict=True)
                if s in layer.lora_A
            )
            got = layer.get_delta_weight(name).float()
            norm = float(torch.linalg.norm(exact)) if isinstance(exact, torch.Tensor) else 0.0
            diff = float(torch.linalg.norm(got - exact))
            errors.append(diff / norm if norm > 0 else diff)
    if not errors:
        raise ModelError(f"the combined adapter {name!r} adapts no module; expected LoRA layers")
    return {"mean": sum(errors) / len(errors), "max": max(errors), "modules": len(errors), "dtype": dtype}


def _save(model: LoadedModel, name: str, target: Path, manifest: dict[str, Any]) -> None:
    """Save the adapter ``name`` as a PEFT folder at ``target`` with its manifest, all at once (no partial folder)."""
    from persona_space.adapters import LOSS_TABLE, adapter_sha256, combined_parameters, empty_loss_log
    from persona_space.results import new_manifest, write_result

    with _io.atomic_folder(target) as scratch:
        peft = scratch / ".peft"  # save_pretrained may nest the adapter in a folder of its name
        model.module.save_pretrained(str(peft), selected_adapters=[name], save_embedding_layers=False)
        saved = peft / name if (peft / name).is_dir() else peft
        for file in saved.iterdir():
            os.replace(file, scratch / file.name)
        shutil.rmtree(peft)
        config_path = scratch / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = model.name  # an id load_model accepts, not this machine's path
        _io.write_json(config_path, config)
        base = model.describe()
        base_model = {k: base[k] for k in ("name", "weights_sha256", "model_type")}
        stamped = new_manifest(
            "adapter", combined_parameters(manifest, base_model), state="complete", **manifest,
            base_model=base_model, adapter_sha256=adapter_sha256(scratch),
        )  # fmt: skip
        write_result(scratch, stamped, {LOSS_TABLE: empty_loss_log()})


def _attached(model: LoadedModel, folder: Path, name: str) -> AdapterInfo:
    attached = model.load_adapter(folder, name=name)
    return model.adapters[attached]
