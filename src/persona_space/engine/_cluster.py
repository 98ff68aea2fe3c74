"""Ray cluster plumbing shared by the ``ray`` backend and plain task fan-out.

The pool of model actors every :class:`~persona_space.engine.RayBackend` of this
process holds (reused by backends of the same model and options, stopped by
:func:`shutdown_actors`), joining or starting Ray (:func:`ensure_ray`), running a
function over items as Ray tasks (:func:`ray_map`), and turning a failed task
into this package's errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from persona_space.errors import BackendError, BackendUnavailableError, PersonaSpaceError

_POOLS: dict[tuple[Any, ...], list[Any]] = {}  # actors by (Ray job, model recipe, options): loaded once


def shutdown_actors() -> int:
    """Stop every model actor this process started through a RayBackend; return how many."""
    ray = _import_ray()
    count = 0
    for actors in list(_POOLS.values()):
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
            count += 1
    _POOLS.clear()
    return count


def ensure_ray(address: str | None = None) -> Any:
    """The ray module, connected: to the running instance, to ``address``, or to a new local one."""
    ray = _import_ray()
    if not ray.is_initialized():
        import logging

        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    return ray


def ray_map(
    function: Callable[[Any], Any], items: Sequence[Any], *, address: str | None = None, cpus: float = 1.0
) -> list[Any]:
    """``[function(item) for item in items]`` as Ray tasks across the cluster, results in order.

    ``function`` must be importable by the workers (a module-level function). Ray
    runs a task again when its worker dies (up to three times).
    """
    ray = ensure_ray(address)
    free = float(ray.available_resources().get("CPU", 0.0))
    if free < cpus and _POOLS:
        held = sum(len(actors) for actors in _POOLS.values())
        raise BackendError(
            f"the Ray cluster has {free:g} free CPUs for tasks needing {cpus:g}: {held} model actors of RayBackend "
            "hold the rest; call backend.shutdown() (or persona_space.engine.shutdown_actors()) first, or add nodes"
        )
    remote = ray.remote(num_cpus=cpus, max_retries=3)(function)
    refs = [remote.remote(item) for item in items]
    try:
        return list(ray.get(refs))
    except ray.exceptions.RayTaskError as exc:
        raise _task_error(exc, "a Ray task") from exc


def _cpus_per_node(ray: Any) -> float:
    """The CPUs of the smallest live node: one model actor per node uses all of them.

    On CPUs one worker with every core beats several with a few each (measured in
    ``benchmarks/scale.py``: 2 one-core workers ran at 0.63x one two-core worker).
    """
    sizes = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    sizes = [c for c in sizes if c > 0]
    return min(sizes) if sizes else 1.0


def _assigned_cpus() -> float | None:
    try:
        import ray

        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0)) or None
    except Exception:
        return None


def _task_error(exc: Exception, what: str) -> Exception:
    """The error to raise for a task that failed in its own code: ours as it was, anything else wrapped."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, PersonaSpaceError):
        return cause
    return BackendError(f"{what} failed on a Ray worker: {exc}")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("backend 'ray' needs the ray package: pip install 'persona-space[ray]'") from exc
    return ray
