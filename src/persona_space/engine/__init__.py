"""The engine: what every operation shares to run a model with adapters.

* :class:`AdapterSet` (``model.adapters``) alone owns the PEFT state of a loaded
  model: attach, detach, ``disabled()`` (the base model), ``routing(rows)`` for
  batches mixing adapters, ``trainable(...)`` for a fresh adapter to train.
* :class:`Backend` is the protocol operations run on: ``generate(requests)`` ->
  completions and ``score(requests)`` -> log-probabilities, where each
  :class:`GenerateRequest` carries its model (adapter), prompt tokens, sampling
  parameters and its own random stream (:func:`row_seed`), and each backend states
  what it supports (:class:`Capabilities`); ``hf`` and ``cpu`` also ``read(requests)``
  mean residual-stream activations per layer (:class:`ReadRequest`).
* Backends, chosen by ``backend=`` on every operation (:func:`resolve_backend`):
  ``"hf"`` (plain transformers, any causal LM: the reference), ``"cpu"`` (the
  fast slot engine and packed scorer, llama/mistral/qwen2/qwen3), ``"ray"``
  (shards over a Ray cluster, each actor running one of the others) and
  ``"vllm"`` (vLLM's offline engine in-process, on a GPU or with vLLM's CPU build)
  and ``"auto"`` (``vllm`` on a GPU where installed, else ``cpu`` where it
  supports the architecture, else ``hf``).

>>> from persona_space.engine._requests import BACKEND_NAMES
>>> BACKEND_NAMES
('auto', 'hf', 'cpu', 'vllm', 'ray')
"""

from persona_space._compat import deprecated
from persona_space.engine._adapters import AdapterSet
from persona_space.engine._cluster import ray_map, shutdown_actors
from persona_space.engine._cpu import CPUBackend, common_prefix_length
from persona_space.engine._heap import heap_state
from persona_space.engine._hf import HFBackend
from persona_space.engine._host import base_module
from persona_space.engine._native import native_state
from persona_space.engine._ray import RayBackend
from persona_space.engine._reading import ReadRequest, read_activations, reading_layers, require_reading
from persona_space.engine._requests import Backend, Completion, GenerateRequest, ScoreRequest, Scores
from persona_space.engine._routing import AdapterRouter
from persona_space.engine._score import DEFAULT_BATCH_TOKENS, SCORE_METHODS, ScoreMethod, resolve_method
from persona_space.engine._select import (
    BackendLike,
    require_adapters,
    require_generation,
    require_steering,
    resolve_backend,
)
from persona_space.engine._steering import decoder_layers, steering_in_training
from persona_space.engine._streams import choose_tokens, row_seed, uniforms
from persona_space.engine._tokens import (
    check_candidates,
    check_template,
    continuation,
    end_of_turn_id,
    split_continuations,
)
from persona_space.engine._vllm import VLLMBackend

__all__ = [
    "DEFAULT_BATCH_TOKENS",
    "SCORE_METHODS",
    "AdapterRouter",
    "AdapterSet",
    "Backend",
    "BackendLike",
    "CPUBackend",
    "Completion",
    "GenerateRequest",
    "HFBackend",
    "RayBackend",
    "ReadRequest",
    "ScoreMethod",
    "ScoreRequest",
    "Scores",
    "VLLMBackend",
    "base_module",
    "check_candidates",
    "check_template",
    "choose_tokens",
    "common_prefix_length",
    "continuation",
    "decoder_layers",
    "end_of_turn_id",
    "heap_state",
    "native_state",
    "ray_map",
    "read_activations",
    "reading_layers",
    "require_adapters",
    "require_generation",
    "require_reading",
    "require_steering",
    "resolve_backend",
    "resolve_method",
    "row_seed",
    "shutdown_actors",
    "split_continuations",
    "steering_in_training",
    "uniforms",
]

# Renamed: packing methods of scoring are ScoreMethod/SCORE_METHODS (arithmetic's are CombineMethod).
# Internal: names used only inside the engine leave its public names; served here for one release.
__getattr__ = deprecated(
    "persona_space.engine",
    renames={"METHODS": ("SCORE_METHODS", SCORE_METHODS), "Method": ("ScoreMethod", ScoreMethod)},
    internal={
        "BACKEND_NAMES": "persona_space.engine._requests",
        "BackendName": "persona_space.engine._requests",
        "Capabilities": "persona_space.engine._requests",
        "FinishReason": "persona_space.engine._requests",
        "MIN_TEMPERATURE": "persona_space.engine._streams",
        "SUPPORTED_MODEL_TYPES": "persona_space.engine._arch",
        "check_supported": "persona_space.engine._arch",
        "auto_backend_name": "persona_space.engine._local",
        "cpu_supports": "persona_space.engine._local",
        "local_backend": "persona_space.engine._local",
        "Continuations": "persona_space.engine._tokens",
        "Host": "persona_space.engine._host",
        "Recipe": "persona_space.engine._host",
        "adapters_off": "persona_space.engine._routing",
        "route_rows": "persona_space.engine._routing",
        "auto_batch_size": "persona_space.engine._cpu",
        "ensure_ray": "persona_space.engine._cluster",
        "ray_backend": "persona_space.engine._ray",
    },
)
