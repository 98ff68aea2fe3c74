"""The ``ray`` backend: requests sharded over a Ray cluster, one model-holding actor per worker.

The driver cuts the requests into shards of ``shard_size`` in a fixed order (by
prompt, then key: a shard's prompts share prefixes), and hands them to actors,
each of which loads the model once (from the driver model's :meth:`recipe`),
attaches the adapters the shard names (the same folders, under the same names)
and runs it with any in-process backend (``inner``: ``auto``, ``cpu``, ``hf`` or ``vllm``).
Every request keeps its own random stream, so which actor runs a shard never
changes its rows.

A shard whose actor dies is run again: actors restart (up to ``max_restarts``
times each) and the shard is resubmitted; a shard that still cannot finish
raises :class:`BackendError` naming it. Completions reach ``on_complete`` shard
by shard as they return, so a run store appends them in shard-sized parts and a
resumed run skips every finished shard's rows. ``address=None`` starts (or joins)
a local Ray instance; ``"auto"`` or ``"ray://host:10001"`` joins a cluster.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from persona_space.engine._cluster import _POOLS, _cpus_per_node, _import_ray, _task_error, ensure_ray
from persona_space.engine._host import Host
from persona_space.engine._ray_worker import _Worker
from persona_space.engine._requests import (
    Capabilities,
    Completion,
    GenerateRequest,
    OnComplete,
    OnTokens,
    ScoreRequest,
    Scores,
)
from persona_space.engine._score import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ROW_TOKENS
from persona_space.errors import BackendError, ConfigError

DEFAULT_SHARD = 256


@dataclass(frozen=True)
class _Shard:
    index: int
    positions: tuple[int, ...]  # positions in the request list


class RayBackend:
    """Shards generation and scoring over Ray actors that each hold a copy of the model."""

    name = "ray"

    def __init__(
        self,
        model: Host,
        *,
        workers: int | None = None,
        address: str | None = None,
        inner: str = "auto",
        shard_size: int = DEFAULT_SHARD,
        cpus_per_worker: float | None = None,
        gpus_per_worker: float | None = None,
        max_restarts: int = 2,
        restart_timeout: float = 120.0,
        start_timeout: float = 600.0,
        batch_size: int | str = "auto",
        score_method: str = "auto",
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
    ) -> None:
        if inner not in ("auto", "cpu", "hf", "vllm"):
            raise ConfigError(
                f"inner must be 'auto', 'cpu', 'hf' or 'vllm' (the backend each Ray actor runs), got {inner!r}"
            )
        for label, value, low in (("shard_size", shard_size, 1), ("max_restarts", max_restarts, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be a positive integer or None (one per free CPU or GPU), got {workers!r}")
        if cpus_per_worker is not None and (not isinstance(cpus_per_worker, (int, float)) or cpus_per_worker <= 0):
            raise ConfigError(f"cpus_per_worker must be a positive number or None, got {cpus_per_worker!r}")
        self.model = model
        self.address = address
        self.inner = inner
        self.shard_size = shard_size
        self.cpus_per_worker = None if cpus_per_worker is None else float(cpus_per_worker)
        self.gpus_per_worker = gpus_per_worker
        self.max_restarts = max_restarts
        self.restart_timeout = float(restart_timeout)
        self.start_timeout = float(start_timeout)
        self.batch_size = batch_size
        self.worker_options: dict[str, Any] = {
            "batch_size": batch_size,
            "score_method": score_method,
            "batch_tokens": batch_tokens,
            "max_row_tokens": max_row_tokens,
        }
        self.requested_workers = workers
        self.actors: list[Any] = []
        self._key: tuple[Any, ...] | None = None
        self._spawn: Callable[[], Any] | None = None
        self.retried_shards = 0
        self._ray = _import_ray()
        from persona_space.engine._local import auto_backend_name

        self.inner_name = auto_backend_name(model) if inner == "auto" else inner

    def check_adapters(self, names: Sequence[str]) -> None:
        """Refuse, before anything is written, attached adapters the actors' backend cannot apply (``vllm``: LoRA
        on the vocabulary head or embeddings)."""
        if self.inner_name == "vllm":
            from persona_space.engine._vllm import check_vllm_adapters

            check_vllm_adapters([self.model.adapters[n] for n in names if n in self.model.adapters])

    @property
    def capabilities(self) -> Capabilities:
        """The actors' backend's promises, as a local one states them for this model (actors on other kinds of
        machine may differ: each shard's rows still depend on that shard alone when the actors' backend is
        batch-invariant)."""
        from persona_space.engine._local import local_backend

        options = {k: v for k, v in self.worker_options.items() if k != "score_method"}
        local = local_backend(self.model, self.inner_name, **options).capabilities  # type: ignore[arg-type]
        return Capabilities(
            paired_streams=True,
            mixed_adapters=True,
            exact_scoring=True,
            devices=("cpu", "cuda"),
            architectures=local.architectures,
            batch_invariant=local.batch_invariant,
            invariance=local.invariance,
        )

    # -- the cluster ----------------------------------------------------------------------------

    def start(self) -> list[Any]:
        """Join or start Ray and the actors; reuse live actors of the same model and options (any backend's)."""
        ray = ensure_ray(self.address)
        job = ray.get_runtime_context().get_job_id()
        if self.actors and self._key is not None and self._key[0] == job and _POOLS.get(self._key) is self.actors:
            return self.actors
        resources = ray.cluster_resources()
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        cpus = self.cpus_per_worker
        if cpus is None:  # on GPUs one CPU per worker; on CPUs one worker per node holding all of it
            cpus = 1.0 if gpus else _cpus_per_node(ray)
        self.cpus_per_worker = cpus
        recipe = self.model.recipe()
        options = json.dumps(self.worker_options, sort_keys=True, default=str)
        config = (job, recipe, self.inner, options, cpus, gpus, self.max_restarts)
        for key, actors in _POOLS.items():
            if key[:-1] == config and self.requested_workers in (None, key[-1]):
                self._key, self.actors = key, actors
                self._spawn = self._spawner(ray, recipe, cpus, gpus)
                return actors
        available = ray.available_resources()
        free = int(available.get("GPU", 0) / gpus if gpus else available.get("CPU", 0) / cpus)
        count = self.requested_workers or free
        if count < 1:
            raise BackendError(
                f"no free {'GPU' if gpus else 'CPU'} in the Ray cluster for a worker needing {gpus or cpus:g}: "
                "model actors of other RayBackends hold them; call persona_space.engine.shutdown_actors() first"
            )
        self._spawn = self._spawner(ray, recipe, cpus, gpus)
        actors = [self._spawn() for _ in range(count)]
        ready, pending = ray.wait([a.pid.remote() for a in actors], num_returns=count, timeout=self.start_timeout)
        if pending:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            raise BackendError(
                f"{len(pending)} of {count} Ray workers ({cpus:g} CPUs, {gpus:g} GPUs each) did not start within "
                f"{self.start_timeout:g} s: the cluster cannot place them, or loading the model failed on a worker"
            )
        try:
            ray.get(ready)
        except ray.exceptions.RayError as exc:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            raise BackendError(f"a Ray worker failed to load {self.model.name!r}: {exc}") from exc
        self._key = (*config, count)
        _POOLS[self._key] = actors
        self.actors = actors
        return actors

    def _spawner(self, ray: Any, recipe: Any, cpus: float, gpus: float) -> Callable[[], Any]:
        worker = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=self.max_restarts)(_Worker)
        options = dict(self.worker_options)
        return lambda: worker.remote(recipe, self.inner, options)

    def shutdown(self) -> None:
        """Stop the actors, also for other backends sharing them (Ray itself stays up)."""
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        if self._key is not None:
            _POOLS.pop(self._key, None)
        self.actors = []

    # -- the protocol -----------------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        *,
        stop_ids: frozenset[int],
        on_complete: OnComplete | None = None,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]:
        order = sorted(range(len(requests)), key=lambda i: (requests[i].prompt_ids, requests[i].key))
        out: list[Completion] = []

        def deliver(shard: _Shard, result: list[Completion]) -> None:
            if len(result) != len(shard.positions) or {c.key for c in result} != {
                requests[i].key for i in shard.positions
            }:
                raise BackendError(
                    f"shard {shard.index} returned {len(result)} rows for {len(shard.positions)} requests"
                )
            if on_tokens is not None:
                on_tokens(sum(len(c.token_ids) for c in result))
            for completion in result:
                out.append(completion)
                if on_complete is not None:
                    on_complete(completion)

        adapters = self._adapter_paths({r.adapter for r in requests})
        self._run(
            self._shards(order),
            lambda actor, shard: actor.generate.remote([requests[i] for i in shard.positions], stop_ids, adapters),
            deliver,
        )
        return out

    def score(self, requests: Sequence[ScoreRequest], *, on_scored: OnTokens | None = None) -> list[Scores]:
        order = sorted(range(len(requests)), key=lambda i: (requests[i].prompt_ids, i))
        out: list[Scores | None] = [None] * len(requests)

        def deliver(shard: _Shard, result: list[Scores]) -> None:
            if len(result) != len(shard.positions):
                raise BackendError(f"shard {shard.index} returned {len(result)} scores for {len(shard.positions)}")
            for position, scores in zip(shard.positions, result, strict=True):
                out[position] = scores
            if on_scored is not None:
                on_scored(sum(len(requests[i].candidates) for i in shard.positions))

        adapters = self._adapter_paths({r.adapter for r in requests})
        self._run(
            self._shards(order),
            lambda actor, shard: actor.score.remote([requests[i] for i in shard.positions], adapters),
            deliver,
        )
        return [s for s in out if s is not None]

    def describe(self) -> dict[str, Any]:
        ray = self._ray
        return {
            "name": self.name,
            "capabilities": self.capabilities.to_dict(),
            "inner": self.inner,
            "workers": len(self.actors) or self.requested_workers,
            "address": self.address,
            "shard_size": self.shard_size,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "retried_shards": self.retried_shards,
            "ray_version": getattr(ray, "__version__", None),
        }

    # -- scheduling -------------------------------------------------------------------------------

    def _shards(self, order: list[int]) -> list[_Shard]:
        size = self.shard_size
        return [_Shard(k, tuple(order[s : s + size])) for k, s in enumerate(range(0, len(order), size))]

    def _adapter_paths(self, names: set[str | None]) -> dict[str, tuple[str, str]]:
        """(folder, sha256) of every named adapter: workers attach the same folders under the same names."""
        paths: dict[str, tuple[str, str]] = {}
        for name in sorted(n for n in names if n is not None):
            info = self.model.adapters.get(name)
            if info is None:
                raise ConfigError(
                    f"adapter {name!r} is not attached from a folder, so Ray workers cannot load it; "
                    f"attached: {sorted(self.model.adapters)}"
                )
            paths[name] = (info.path, info.sha256)
        return paths

    def _run(
        self,
        shards: list[_Shard],
        submit: Callable[[Any, _Shard], Any],
        deliver: Callable[[_Shard, Any], None],
    ) -> None:
        """Keep every actor busy with two shards; a shard whose worker died goes to the next free one.

        A dead actor is pinged until Ray has restarted it; one still down after
        ``restart_timeout`` gets no more work and is replaced in the pool for later
        calls. Every worker down that long raises :class:`BackendError`.
        """
        ray = self._ray
        actors = self.start()
        queue = list(shards)
        tries = dict.fromkeys(range(len(shards)), 0)
        running: dict[Any, tuple[_Shard | None, int]] = {}  # ref -> (shard, or None for a ping; actor slot)
        busy = [0] * len(actors)
        down_since: dict[int, float] = {}
        given_up: set[int] = set()

        def feed(slot: int) -> None:
            while queue and busy[slot] < 2 and slot not in down_since:
                shard = queue.pop(0)
                running[submit(actors[slot], shard)] = (shard, slot)
                busy[slot] += 1

        def check_alive() -> None:
            now = time.monotonic()
            for slot, since in down_since.items():
                if now - since > self.restart_timeout:
                    given_up.add(slot)
            if len(given_up) == len(actors):
                raise BackendError(f"every Ray worker has been down for over {self.restart_timeout:g} s")

        for slot in range(len(actors)):
            feed(slot)
        try:
            while queue or any(shard is not None for shard, _ in running.values()):
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0) if running else ([], [])
                if not ready:
                    check_alive()
                    if not running:
                        time.sleep(0.2)
                    continue
                shard, slot = running.pop(ready[0])
                if shard is None:  # a ping: is the actor back?
                    try:
                        ray.get(ready[0])
                    except ray.exceptions.RayError:
                        check_alive()
                        if slot not in given_up:
                            time.sleep(0.2)
                            running[actors[slot].pid.remote()] = (None, slot)
                        continue
                    del down_since[slot]
                    feed(slot)
                    continue
                busy[slot] -= 1
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    raise _task_error(exc, f"shard {shard.index}") from exc
                except ray.exceptions.RayError as exc:  # the worker died, ran out of memory, lost its node
                    tries[shard.index] += 1
                    if tries[shard.index] > self.max_restarts:
                        raise BackendError(
                            f"shard {shard.index} failed {tries[shard.index]} times (its worker died each time): {exc}"
                        ) from exc
                    self.retried_shards += 1
                    queue.insert(0, shard)
                    if slot not in down_since:
                        down_since[slot] = time.monotonic()
                        running[actors[slot].pid.remote()] = (None, slot)
                    for other in range(len(actors)):
                        feed(other)
                    continue
                deliver(shard, result)
                feed(slot)
        finally:
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            for slot in given_up:  # replace in the pool, for the next call
                with contextlib.suppress(Exception):
                    ray.kill(actors[slot])
                if self._spawn is not None:
                    actors[slot] = self._spawn()


@contextlib.contextmanager
def ray_backend(model: Host, **options: Any) -> Iterator[RayBackend]:
    """A :class:`RayBackend` for a block, its actors stopped afterwards."""
    backend = RayBackend(model, **options)
    try:
        yield backend
    finally:
        backend.shutdown()
