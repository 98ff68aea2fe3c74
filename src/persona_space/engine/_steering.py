"""Steering rows of a batch: what a row's model name means, and the steerings of one forward pass.

A row's model is a name (``GenerateRequest.adapter``, ``ScoreRequest.adapter``):
an attached adapter, ``None`` for the base model, or a *route* registered by the
adapter set for a :class:`~persona_space.steering.Steer` condition, which names the
adapter underneath (or none) and the steering. Every path of the engine turns
the names into the LoRA adapters it routes (:func:`lora_of`) and the steerings
it applies after a decoder layer (:class:`RowSteering`): the model's own forward
passes by a hook on the decoder layers (:func:`steering_hooks`), the slot engine
in its own layer loops. A steering touches its own rows only, so it keeps a
batch-invariant path batch-invariant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persona_space.errors import ModelError
from persona_space.steering import Steer

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Route:
    """What a steered condition's row name stands for: the adapter under it (``None``: base) and its steering."""

    lora: str | None
    steer: Steer


Routes = Mapping[str, Route]


def routes_of(model: Any) -> Routes:
    """The steering routes registered on a loaded model's adapter set (none for a plain host)."""
    routes = getattr(getattr(model, "adapters", None), "routes", None)
    return routes if isinstance(routes, Mapping) else {}


def lora_of(routes: Routes, name: str | None) -> str | None:
    """The LoRA adapter a row named ``name`` runs through (``None``: the base model)."""
    if name is None:
        return None
    route = routes.get(name)
    return name if route is None else route.lora


def steer_of(routes: Routes, name: str | None) -> Steer | None:
    """The steering of a row named ``name``; ``None`` where it has none or it changes nothing."""
    route = routes.get(name) if name is not None else None
    return None if route is None or route.steer.idle else route.steer


def decoder_layers(module: Any) -> list[Any]:
    """The decoder layers of a causal LM (llama-like ``model.layers``, GPT-2's ``transformer.h``, NeoX's
    ``gpt_neox.layers``), under any PEFT wrapper."""
    import torch

    from persona_space.engine._host import base_module

    root = base_module(module)
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        found: Any = root
        for part in path.split("."):
            found = getattr(found, part, None)
            if found is None:
                break
        if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
            return list(found)
    raise ModelError(f"cannot find the decoder layers of {type(root).__name__}; expected model.layers or similar")


class RowSteering:
    """The steerings of one forward pass: for each steered layer, which rows (first dimension) get which steering.

    Rows are given one name each (``names``, optionally each repeated ``repeats[i]``
    times: tokens packed row after row) or as contiguous ``segments`` (name, first,
    end) of rows sorted by name. :meth:`apply` changes the hidden states after a
    layer; :attr:`layers` says which layers have anything to do.
    """

    def __init__(self, groups: dict[int, list[tuple[Steer, Any]]], rows: int | None) -> None:
        self._groups = groups
        self.rows = rows
        self.layers = frozenset(groups)
        self._vectors: dict[tuple[int, str], torch.Tensor] = {}

    @classmethod
    def of(
        cls, routes: Routes, names: Sequence[str | None], repeats: Sequence[int] | None = None
    ) -> RowSteering | None:
        """The steering of rows named ``names`` (``None`` where no row is steered)."""
        if not routes:
            return None
        steers = [steer_of(routes, n) for n in names]
        if all(s is None for s in steers):
            return None
        sizes = [1] * len(names) if repeats is None else [int(r) for r in repeats]
        members: dict[int, dict[int, tuple[Steer, list[tuple[int, int]]]]] = {}
        first = 0
        for steer, size in zip(steers, sizes, strict=True):
            if steer is not None and size:
                assert steer.layer is not None
                _, spans = members.setdefault(steer.layer, {}).setdefault(id(steer), (steer, []))
                if spans and spans[-1][1] == first:
                    spans[-1] = (spans[-1][0], first + size)
                else:
                    spans.append((first, first + size))
            first += size
        groups = {layer: [(s, _index(spans, first)) for s, spans in by.values()] for layer, by in members.items()}
        return cls(groups, first)

    @classmethod
    def every(cls, steer: Steer) -> RowSteering | None:
        """``steer`` on every row of any pass (``None`` where it changes nothing)."""
        if steer.idle:
            return None
        assert steer.layer is not None
        return cls({steer.layer: [(steer, None)]}, None)

    @classmethod
    def from_segments(cls, routes: Routes, segments: Sequence[tuple[str | None, int, int]]) -> RowSteering | None:
        """The steering of rows laid out in ``segments`` (name, first row, end row)."""
        if not routes or not segments:
            return None
        names = [name for name, _, _ in segments]
        return cls.of(routes, names, repeats=[end - first for _, first, end in segments])

    def apply(self, layer: int, hidden: torch.Tensor, *, inplace: bool = True) -> torch.Tensor:
        """The hidden states ``[rows, ...]`` of ``layer``'s output with this layer's steerings applied."""
        groups = self._groups.get(layer)
        if not groups:
            return hidden
        if self.rows is not None and int(hidden.shape[0]) != self.rows:
            raise ModelError(f"steering expected {self.rows} rows at layer {layer}, the pass has {hidden.shape[0]}")
        out = hidden if inplace else hidden.clone()
        for steer, index in groups:
            if index is None:  # every row
                return steered(steer, hidden, self._vector(steer, hidden))
            if not isinstance(index, slice) and index.device != hidden.device:
                index = index.to(hidden.device)
            out[index] = steered(steer, hidden[index], self._vector(steer, hidden))
        return out

    def _vector(self, steer: Steer, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        key = (id(steer), str(hidden.device))
        vector = self._vectors.get(key)
        if vector is None:
            vector = torch.tensor(steer.vector, dtype=torch.float32, device=hidden.device)
            if steer.mode != "add":
                vector = vector / vector.norm()
            self._vectors[key] = vector
        return vector


def steered(steer: Steer, hidden: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``hidden [..., width]`` steered by ``steer`` (``vector``: its vector, unit for ablate and cap), in float32,
    cast back to ``hidden``'s dtype."""
    x = hidden.float()
    if steer.mode == "add":
        x = x + steer.alpha * vector
    else:
        projection = (x * vector).sum(dim=-1)  # row by row: the same bits whatever the rows beside it
        if steer.mode == "cap":
            assert steer.cap is not None
            projection = (projection - steer.cap).clamp(min=0.0)
        x = x - projection.unsqueeze(-1) * vector
    return x.to(hidden.dtype)


@contextlib.contextmanager
def steering_hooks(module: Any, current: Any, *, training_only: bool = False) -> Iterator[None]:
    """Inside the block the model's own forward passes steer each decoder layer's output by ``current()``
    (a :class:`RowSteering` or ``None``), read at every pass; the hooks run before any other on the layer.
    ``training_only``: passes of layers in eval mode (answers logged during training) are left alone."""
    layers = decoder_layers(module)

    def hook(index: int) -> Any:
        def run(layer: Any, _args: Any, output: Any) -> Any:
            steering = current()
            if steering is None or index not in steering.layers or (training_only and not layer.training):
                return None
            if isinstance(output, tuple):
                return (steering.apply(index, output[0], inplace=False), *output[1:])
            return steering.apply(index, output, inplace=False)

        return run

    handles = [layer.register_forward_hook(hook(i), prepend=True) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def steering_in_training(module: Any, steer: Steer) -> Iterator[None]:
    """Inside the block every forward pass of the model in training mode is steered by ``steer`` (preventative
    steering: the direction is there while the adapter learns, not after); passes in eval mode are not."""
    every = RowSteering.every(steer)
    if every is None:
        yield
        return
    with steering_hooks(module, lambda: every, training_only=True):
        yield


def _index(spans: list[tuple[int, int]], rows: int) -> Any:
    """Rows in ``spans`` as an index: ``None`` for every row, a slice for one span, else a tensor."""
    import torch

    if len(spans) == 1:
        first, end = spans[0]
        return None if (first, end) == (0, rows) else slice(first, end)
    return torch.tensor([i for first, end in spans for i in range(first, end)], dtype=torch.long)
