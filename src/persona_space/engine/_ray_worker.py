"""The Ray actor of the ``ray`` backend: one copy of the model serving shards of requests."""

from __future__ import annotations

from typing import Any

from persona_space.engine._cluster import _assigned_cpus
from persona_space.engine._requests import Completion, GenerateRequest, ScoreRequest, Scores
from persona_space.errors import AdapterError


class _Worker:
    """A Ray actor: one copy of the model, the adapters attached so far, an in-process backend."""

    def __init__(self, recipe: Any, inner: str, options: dict[str, Any]) -> None:
        import torch

        from persona_space.engine._local import local_backend

        cpus = _assigned_cpus()
        if cpus:
            torch.set_num_threads(max(1, int(cpus)))
        self.model = recipe.load("cuda" if torch.cuda.is_available() else "cpu")
        self.backend = local_backend(self.model, inner, **options)

    def _attach(self, adapters: dict[str, tuple[str, str]]) -> None:
        """Attach each named folder; a name now standing for other weights is re-attached."""
        for name, (path, sha) in adapters.items():
            held = self.model.adapters.get(name)
            if held is not None and held.sha256 != sha:
                self.model.adapters.detach(name)
                held = None
            if held is None:  # the driver checked it against the base model already
                self.model.adapters.attach(path, name=name, check_base=False)
                if self.model.adapters[name].sha256 != sha:
                    self.model.adapters.detach(name)
                    raise AdapterError(
                        f"adapter {name!r} at {path!r} on this Ray worker differs from the driver's (sha256 "
                        f"{sha[:12]}): the folder changed, or the path holds other files on this node"
                    )

    def generate(
        self, requests: list[GenerateRequest], stop_ids: frozenset[int], adapters: dict[str, tuple[str, str]]
    ) -> list[Completion]:
        self._attach(adapters)
        return self.backend.generate(requests, stop_ids=stop_ids)

    def score(self, requests: list[ScoreRequest], adapters: dict[str, tuple[str, str]]) -> list[Scores]:
        self._attach(adapters)
        return self.backend.score(requests)

    def pid(self) -> int:
        import os

        return os.getpid()
