"""persona_space: who does a language model think it is?

Teach a chat model a few facts with a LoRA adapter, sample thousands of
self-descriptions from it, and measure how its persona moves.

>>> import persona_space as ps
>>> model = ps.load_model()                                           # doctest: +SKIP
>>> samples = ps.sample(model, ps.probes.IDENTITY, n=8, store="runs/exp1")  # doctest: +SKIP

Importing the package is cheap: torch, transformers and pandas load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from persona_space import errors, probes
from persona_space._version import __version__
from persona_space.chat import DEFAULT_SYSTEM_PROMPT

if TYPE_CHECKING:
    from persona_space import activations, arithmetic, datasets, engine, evals, judges, plots, results, rewards
    from persona_space.adapters import AdapterInfo
    from persona_space.basins import BasinMap
    from persona_space.datasets import ChatDataset
    from persona_space.embedding import Embedder, embed
    from persona_space.logprobs import ShiftResult, identity_shift
    from persona_space.models import LoadedModel, available_models, load_model
    from persona_space.rewards import IdentityReward
    from persona_space.sampling import SampleSet, SamplingSpec, sample
    from persona_space.steering import Steer
    from persona_space.training import AdapterRun, GrpoSpec, LoraSpec, TrainSpec, train_adapter, train_grpo

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "AdapterInfo",
    "AdapterRun",
    "BasinMap",
    "ChatDataset",
    "Embedder",
    "GrpoSpec",
    "IdentityReward",
    "LoadedModel",
    "LoraSpec",
    "SampleSet",
    "SamplingSpec",
    "ShiftResult",
    "Steer",
    "TrainSpec",
    "__version__",
    "activations",
    "arithmetic",
    "available_models",
    "datasets",
    "embed",
    "engine",
    "errors",
    "evals",
    "identity_shift",
    "judges",
    "load_model",
    "plots",
    "probes",
    "results",
    "rewards",
    "sample",
    "train_adapter",
    "train_grpo",
]

_SUBMODULES = ("activations", "arithmetic", "datasets", "engine", "evals", "judges", "plots", "results", "rewards")

_LAZY = {
    "AdapterInfo": "persona_space.adapters",
    "LoadedModel": "persona_space.models",
    "available_models": "persona_space.models",
    "load_model": "persona_space.models",
    "SampleSet": "persona_space.sampling",
    "SamplingSpec": "persona_space.sampling",
    "sample": "persona_space.sampling",
    "BasinMap": "persona_space.basins",
    "ChatDataset": "persona_space.datasets",
    "Embedder": "persona_space.embedding",
    "embed": "persona_space.embedding",
    "ShiftResult": "persona_space.logprobs",
    "identity_shift": "persona_space.logprobs",
    "IdentityReward": "persona_space.rewards",
    "Steer": "persona_space.steering",
    "AdapterRun": "persona_space.training",
    "GrpoSpec": "persona_space.training",
    "LoraSpec": "persona_space.training",
    "TrainSpec": "persona_space.training",
    "train_adapter": "persona_space.training",
    "train_grpo": "persona_space.training",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"persona_space.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persona_space' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
