"""Steering as a condition: a direction added to, removed from, or capped in the residual stream.

A :class:`Steer` goes wherever an adapter folder goes in ``adapters=`` (``sample``,
``identity_shift``, the evaluations, maps built from samples), alone or on top of
an adapter, and is paired with the base model by the same random streams:

>>> import numpy as np
>>> away = Steer(np.ones(4), alpha=-4.0, layer=2)
>>> away.describe()["mode"], away.layer
('add', 2)

The three modes, on the output of decoder layer ``layer`` (0-based, the index of
:class:`~persona_space.activations.Direction` layers and activation sets), at every
position of the prompt and the answer:

* ``"add"``: ``h + alpha * v``, with ``v`` the vector as given (a direction's
  mean difference: ``alpha=1`` moves one whole difference);
* ``"ablate"``: ``h - (h . u) u`` with ``u = v / |v|``: nothing is left along
  the direction;
* ``"cap"``: the projection ``h . u`` held at or below ``cap`` (rows above it
  are moved back onto it, rows below are left alone); to hold it at or above a
  floor, cap the opposite vector at minus the floor.

The arithmetic runs in float32 and the result is cast back to the model's dtype,
so ``alpha=0`` leaves every activation, and so every text, as it was.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from persona_space.errors import ConfigError

SteerMode = Literal["add", "ablate", "cap"]
STEER_MODES: tuple[str, ...] = ("add", "ablate", "cap")


@dataclass(frozen=True, eq=False)
class Steer:
    """A steering of decoder layer ``layer``'s output along ``vector`` (see the module docs for the modes).

    ``vector`` is a :class:`~persona_space.activations.Direction` (its chosen layer
    unless ``layer`` is given; the vector is the direction at that layer), one
    vector ``(hidden,)``, or vectors per layer ``(layers, hidden)`` with ``layer``.
    ``adapter`` (a folder or an :class:`~persona_space.adapters.AdapterInfo`) puts
    the steering on top of that adapter; ``None`` steers the base model.
    """

    vector: Any
    alpha: float = 0.0
    layer: int | None = None
    mode: SteerMode = "add"
    cap: float | None = None
    adapter: Any = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        vector, layer, name = _vector_and_layer(self.vector, self.layer)
        set_ = object.__setattr__
        set_(self, "vector", vector)
        set_(self, "layer", layer)
        set_(self, "name", self.name or name)
        if self.mode not in STEER_MODES:
            raise ConfigError(f"mode must be one of {', '.join(STEER_MODES)}, got {self.mode!r}")
        set_(self, "alpha", _finite(self.alpha, "alpha"))
        if self.mode == "cap":
            if self.cap is None:
                raise ConfigError("mode='cap' needs cap=, the largest projection on the unit direction to allow")
            set_(self, "cap", _finite(self.cap, "cap"))
        elif self.cap is not None:
            raise ConfigError(f"cap={self.cap!r} is only used with mode='cap', not mode={self.mode!r}")
        if self.mode != "add" and self.alpha != 0.0:
            raise ConfigError(f"alpha={self.alpha!r} is only used with mode='add'; mode={self.mode!r} takes none")
        if self.mode != "add" and not float(np.linalg.norm(vector.astype(np.float64))) > 0.0:
            raise ConfigError(f"mode={self.mode!r} needs a non-zero vector (it uses the unit direction)")
        adapter = self.adapter
        if adapter is not None and not isinstance(adapter, (str, os.PathLike)) and not hasattr(adapter, "sha256"):
            raise ConfigError(f"adapter must be a folder, an AdapterInfo or None, got {type(adapter).__name__}")

    @property
    def idle(self) -> bool:
        """Whether the steering changes nothing (an addition with ``alpha=0``): the engine skips it."""
        return self.mode == "add" and (self.alpha == 0.0 or not np.any(self.vector))

    @property
    def sha256(self) -> str:
        """SHA-256 of the float32 vector's bytes."""
        return hashlib.sha256(np.ascontiguousarray(self.vector, dtype="<f4").tobytes()).hexdigest()

    def with_alpha(self, alpha: float) -> Steer:
        """The same steering at another strength (a dose sweep's steps)."""
        return Steer(self.vector, alpha=alpha, layer=self.layer, mode=self.mode, cap=self.cap,
                     adapter=self.adapter, name=self.name)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """What a manifest records: the mode and strengths, the layer, the vector's hash and norm."""
        adapter = self.adapter
        return {
            "mode": self.mode,
            "alpha": self.alpha,
            "cap": self.cap,
            "layer": self.layer,
            "direction": self.name,
            "vector_sha256": self.sha256,
            "vector_norm": float(np.linalg.norm(self.vector.astype(np.float64))),
            "hidden": int(self.vector.shape[0]),
            "adapter": None if adapter is None else str(getattr(adapter, "path", adapter)),
        }

    def __repr__(self) -> str:
        parts = [repr(self.name or "vector"), self.mode]
        if self.mode == "add":
            parts.append(f"alpha={self.alpha:g}")
        if self.cap is not None:
            parts.append(f"cap={self.cap:g}")
        parts.append(f"layer={self.layer}")
        if self.adapter is not None:
            parts.append(f"adapter={str(getattr(self.adapter, 'path', self.adapter))!r}")
        return f"Steer({', '.join(parts)})"


def check_hidden(steer: Steer, hidden: int, layers: int) -> None:
    """Refuse a steering that does not fit a model of ``layers`` decoder layers of width ``hidden``."""
    assert steer.layer is not None  # set in __post_init__
    what = repr(steer)
    if steer.vector.shape[0] != hidden:
        raise ConfigError(
            f"steering {steer.name!r} has a vector of size {steer.vector.shape[0]}, but the model's hidden size is "
            f"{hidden}; the direction was made on another model"
        )
    if not 0 <= steer.layer < layers:
        raise ConfigError(f"{what} is at layer {steer.layer}; the model has layers 0..{layers - 1}")


def _vector_and_layer(vector: Any, layer: Any) -> tuple[np.ndarray, int, str]:
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0):
        raise ConfigError(f"layer must be a non-negative integer (a decoder layer's index), got {layer!r}")
    name = ""
    if hasattr(vector, "vectors") and hasattr(vector, "layer"):  # a Direction, without importing activations
        name = str(getattr(vector, "name", "") or "")
        layer = int(vector.layer) if layer is None else int(layer)
        vectors = np.asarray(vector.vectors)
        if layer >= len(vectors):
            raise ConfigError(f"layer {layer} is past the direction's {len(vectors)} layers")
        vector = vectors[layer]
    elif hasattr(vector, "detach") and hasattr(vector, "cpu"):  # a torch tensor
        vector = vector.detach().float().cpu().numpy()
    try:
        array = np.array(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"vector must be a Direction or an array of numbers, got {type(vector).__name__}") from exc
    if array.ndim == 2:
        if layer is None:
            raise ConfigError(f"vectors of shape {array.shape} (layers, hidden) need layer= to say which to use")
        if layer >= len(array):
            raise ConfigError(f"layer {layer} is past the {len(array)} layers of the vectors given")
        array = array[int(layer)]
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"vector must be one (hidden,) vector or (layers, hidden) vectors, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError("vector holds NaN or infinite values; expected finite numbers")
    if layer is None:
        raise ConfigError("layer= is needed with a plain vector: the decoder layer whose output is steered")
    array.setflags(write=False)
    return array, int(layer), name


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return number
