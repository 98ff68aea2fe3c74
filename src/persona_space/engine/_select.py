"""``backend=``: turning a name (or a ready backend) into the backend an operation runs on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from persona_space.engine._host import Host
from persona_space.engine._local import local_backend
from persona_space.engine._ray import RayBackend
from persona_space.engine._requests import BACKEND_NAMES, Backend
from persona_space.engine._score import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ROW_TOKENS, ScoreMethod
from persona_space.engine._steering import lora_of, routes_of
from persona_space.errors import BackendError, ConfigError, UnsupportedModelError

BackendLike = str | Backend


def resolve_backend(
    model: Host,
    backend: BackendLike = "auto",
    *,
    batch_size: int | Literal["auto"] = "auto",
    score_method: ScoreMethod = "auto",
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
) -> Backend:
    """The backend for ``model``: a name from :data:`BACKEND_NAMES` or a backend made by the caller.

    ``"auto"`` is the ``cpu`` engine where it supports the architecture and ``hf``
    otherwise; ``"ray"`` shards over the running (or a new local) Ray instance with
    default options (its actors are kept for the next call on the same model and
    options). For a cluster or other options pass ``RayBackend(model, address=...,
    workers=...)`` itself.
    """
    if not isinstance(backend, str):
        if not isinstance(backend, Backend):
            raise ConfigError(
                f"backend must be one of {', '.join(BACKEND_NAMES)} or a Backend object, got {backend!r:.80}"
            )
        owner = getattr(backend, "model", model)
        if owner is not model:
            raise ConfigError(f"backend {backend.name!r} was made for another model than {model.name!r}")
        return backend
    if backend not in BACKEND_NAMES:
        raise ConfigError(f"backend must be one of {', '.join(BACKEND_NAMES)}, got {backend!r}")
    if backend == "ray":  # a new backend object; the actors are pooled per model and options
        return RayBackend(
            model,
            batch_size=batch_size,
            score_method=score_method,
            batch_tokens=batch_tokens,
            max_row_tokens=max_row_tokens,
        )
    return local_backend(
        model,
        backend,
        batch_size=batch_size,
        score_method=score_method,
        batch_tokens=batch_tokens,
        max_row_tokens=max_row_tokens,
    )


def require_steering(backend: Backend, adapters: Iterable[str | None]) -> None:
    """Refuse, before anything is written, steering conditions on a backend that cannot steer."""
    routes = routes_of(getattr(backend, "model", None))
    steered = sorted(str(a) for a in adapters if a is not None and a in routes)
    if steered and not backend.capabilities.steering:
        raise BackendError(
            f"backend {backend.name!r} cannot steer (conditions {steered} are Steer conditions); "
            "use backend='cpu' or 'hf'"
        )


def require_adapters(backend: Backend, adapters: Iterable[str | None]) -> None:
    """Refuse, before anything is written, attached adapters the backend cannot generate with (its own
    ``check_adapters``, where it has one: the ``vllm`` backend refuses LoRA on the vocabulary head), and
    steering conditions on a backend that cannot steer."""
    names = list(adapters)
    require_steering(backend, names)
    check = getattr(backend, "check_adapters", None)
    if callable(check):
        routes = routes_of(getattr(backend, "model", None))
        check(sorted({lora for lora in (lora_of(routes, a) for a in names) if lora is not None}))


def require_generation(backend: Backend, model: Host) -> None:
    """Refuse, before anything is written, a backend that cannot generate with this architecture."""
    supported = backend.capabilities.architectures
    model_type = getattr(model.config, "model_type", None)
    if supported is not None and model_type not in supported:
        raise UnsupportedModelError(
            f"backend {backend.name!r} cannot generate with model type {model_type!r} (it drives "
            f"{', '.join(sorted(supported))}); use backend='hf', which runs any causal LM, or 'auto'"
        )
