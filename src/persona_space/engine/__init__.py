"""The engine: what every operation shares to run a model with adapters.

* :class:`AdapterSet` (``model.adapters``) alone owns the PEFT state of a loaded
  model: attach, detach, ``disabled()`` (the base model), ``routing(rows)`` for
  batches mixing adapters, ``trainable(...)`` for a fresh adapter to train.
* :class:`Backend` is the protocol operations run on: ``generate(requests)`` ->
  completions and ``score(requests)`` -> log-probabilities, where each
  :class:`GenerateRequest` carries its model (adapter), prompt tokens, sampling
  parameters and its own random stream (:func:`row_seed`), and each backend states
  what it supports (:class:`Capabilities`).
* Backends, chosen by ``backend=`` on every operation (:func:`resolve_backend`):
  ``"hf"`` (plain transformers, any causal LM: the reference), ``"cpu"`` (the
  fast slot engine and packed scorer, llama/mistral/qwen2/qwen3), ``"ray"``
  (shards over a Ray cluster, each actor running one of the others) and
  ``"auto"`` (``cpu`` where it supports the architecture, ``hf`` otherwise).
  ``"vllm"`` is refused until it has been checked against ``hf`` on a GPU.

>>> import persona_space as ps
>>> ps.engine.BACKEND_NAMES
('auto', 'hf', 'cpu', 'vllm', 'ray')
"""

from persona_space._compat import renamed
from persona_space.engine._adapters import AdapterSet
from persona_space.engine._arch import SUPPORTED_MODEL_TYPES, check_supported
from persona_space.engine._cluster import ensure_ray, ray_map, shutdown_actors
from persona_space.engine._cpu import CPUBackend, auto_batch_size, common_prefix_length
from persona_space.engine._heap import heap_state
from persona_space.engine._hf import HFBackend
from persona_space.engine._host import Host, Recipe, base_module
from persona_space.engine._local import VLLM_STATUS, auto_backend_name, cpu_supports, local_backend
from persona_space.engine._native import native_state
from persona_space.engine._ray import RayBackend, ray_backend
from persona_space.engine._requests import (
    BACKEND_NAMES,
    Backend,
    BackendName,
    Capabilities,
    Completion,
    FinishReason,
    GenerateRequest,
    ScoreRequest,
    Scores,
)
from persona_space.engine._routing import AdapterRouter, adapters_off, route_rows
from persona_space.engine._score import SCORE_METHODS, ScoreMethod, resolve_method
from persona_space.engine._select import BackendLike, require_generation, resolve_backend
from persona_space.engine._streams import MIN_TEMPERATURE, choose_tokens, row_seed, uniforms
from persona_space.engine._tokens import (
    Continuations,
    check_candidates,
    check_template,
    continuation,
    end_of_turn_id,
    split_continuations,
)

__all__ = [
    "BACKEND_NAMES",
    "MIN_TEMPERATURE",
    "SCORE_METHODS",
    "SUPPORTED_MODEL_TYPES",
    "VLLM_STATUS",
    "AdapterRouter",
    "AdapterSet",
    "Backend",
    "BackendLike",
    "BackendName",
    "CPUBackend",
    "Capabilities",
    "Completion",
    "Continuations",
    "FinishReason",
    "GenerateRequest",
    "HFBackend",
    "Host",
    "RayBackend",
    "Recipe",
    "ScoreMethod",
    "ScoreRequest",
    "Scores",
    "adapters_off",
    "auto_backend_name",
    "auto_batch_size",
    "base_module",
    "check_candidates",
    "check_supported",
    "check_template",
    "choose_tokens",
    "common_prefix_length",
    "continuation",
    "cpu_supports",
    "end_of_turn_id",
    "ensure_ray",
    "heap_state",
    "local_backend",
    "native_state",
    "ray_backend",
    "ray_map",
    "require_generation",
    "resolve_backend",
    "resolve_method",
    "route_rows",
    "row_seed",
    "shutdown_actors",
    "split_continuations",
    "uniforms",
]

# Renamed: packing methods of scoring are ScoreMethod/SCORE_METHODS (arithmetic's are CombineMethod).
__getattr__ = renamed(
    "persona_space.engine", {"METHODS": ("SCORE_METHODS", SCORE_METHODS), "Method": ("ScoreMethod", ScoreMethod)}
)
