"""Directions in activation space: persona vectors, adapter shifts, and the layer each is read at.

A :class:`Direction` holds one vector per decoder layer: the mean activation of
one set of items minus that of another (a trait's system prompt against its
opposite, an adapter's reading against the base model's, one basin against the
rest). Each layer also gets its *separation*: Cohen's d between the two sets'
projections onto that layer's unit vector (how cleanly the direction tells the
sets apart there). The layer a direction is used at is, unless given, the one
whose separation gains most over the layer before it: where the contrast enters
the residual stream (a later layer may separate as well or better, carrying
what that layer wrote). The per-layer table is kept, so another choice can be
made and recorded (:meth:`Direction.at`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from persona_space.activations._collect import ActivationSet, ActivationSpec, ItemsLike, Where, collect
from persona_space.errors import ConfigError
from persona_space.results import Result, Stored, new_manifest

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self

    from persona_space.engine import BackendLike
    from persona_space.models import LoadedModel

CRITERION = (
    "separation = Cohen's d of the two sets' projections onto the layer's unit mean difference; the layer is the one "
    "after the first whose separation gains most over the layer before it (the first layer has none to gain over)"
)
TABLE = "layers"
ARRAY = "vectors"


@dataclass
class Direction(Result):
    """One direction per decoder layer (``vectors``: layers x hidden, the mean difference, not normalised).

    ``df`` has a row per layer: ``layer``, ``norm`` (of the mean difference),
    ``separation`` and ``chosen``; :attr:`layer` is the chosen one.
    """

    kind: ClassVar[str] = "direction"
    table: ClassVar[str] = TABLE
    df: pd.DataFrame
    vectors: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", "direction"))

    @property
    def layer(self) -> int:
        return int(self.df.loc[self.df["chosen"], "layer"].iloc[0])

    @property
    def separation(self) -> np.ndarray:
        return self.df["separation"].to_numpy(dtype=np.float64)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, *, layer: int, name: str = "direction") -> Direction:
        """A direction given as vectors (layers x hidden), from elsewhere; ``layer`` is the one to use."""
        import pandas as pd

        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or not np.isfinite(array).all():
            raise ConfigError(f"vectors must be a finite (layers, hidden) array, got shape {array.shape}")
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < len(array):
            raise ConfigError(f"layer must be an integer in [0, {len(array) - 1}], got {layer!r}")
        table = pd.DataFrame(
            {"layer": np.arange(len(array)), "norm": np.linalg.norm(array.astype(np.float64), axis=1),
             "separation": np.full(len(array), np.nan), "chosen": np.arange(len(array)) == int(layer)}
        )  # fmt: skip
        manifest = new_manifest(cls.kind, {"name": name, "given": True}, state="complete", name=name,
                                criterion="given", layer_chosen_by="given", layer=int(layer))  # fmt: skip
        return cls(df=table, vectors=array, manifest=manifest)

    def unit(self, layer: int | None = None) -> np.ndarray:
        """The direction at ``layer`` (the chosen one by default), scaled to length 1."""
        vector = self.vectors[self._layer(layer)].astype(np.float64)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            raise ConfigError(f"direction {self.name!r} is zero at layer {self._layer(layer)}; it has no unit vector")
        unit: np.ndarray = vector / norm
        return unit

    def at(self, layer: int) -> Direction:
        """The same direction with ``layer`` chosen instead (recorded in the manifest)."""
        index = self._layer(layer)
        table = self.df.assign(chosen=self.df["layer"] == index)
        return Direction(df=table, vectors=self.vectors, manifest={**self.manifest, "layer_chosen_by": "given"})

    def _layer(self, layer: int | None) -> int:
        if layer is None:
            return self.layer
        count = len(self.vectors)
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < count:
            raise ConfigError(f"layer must be an integer in [0, {count - 1}], got {layer!r}")
        return int(layer)

    def _stored(self) -> Stored:
        return Stored({**self.manifest, "rows": len(self.df)}, {TABLE: self.df}, {ARRAY: self.vectors})

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> Self:
        stored.require(folder, cls.kind, tables=(TABLE,), arrays=(ARRAY,))
        return cls(df=stored.tables[TABLE], vectors=stored.arrays[ARRAY], manifest=stored.manifest, path=folder)


def separation(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per layer, Cohen's d of the projections of ``positive`` and ``negative`` (items x layers x hidden) onto
    the layer's unit mean difference (0 where the difference is zero)."""
    if len(positive) < 2 or len(negative) < 2:
        raise ConfigError(f"a direction needs at least 2 items on each side, got {len(positive)} and {len(negative)}")
    diff = positive.mean(axis=0, dtype=np.float64) - negative.mean(axis=0, dtype=np.float64)
    norms = np.linalg.norm(diff, axis=1)
    units = np.divide(diff, norms[:, None], out=np.zeros_like(diff), where=norms[:, None] > 0)
    pa = np.einsum("nld,ld->nl", positive.astype(np.float64), units)
    pb = np.einsum("nld,ld->nl", negative.astype(np.float64), units)
    na, nb = len(positive), len(negative)
    pooled = np.sqrt(((na - 1) * pa.var(axis=0, ddof=1) + (nb - 1) * pb.var(axis=0, ddof=1)) / (na + nb - 2))
    gap = pa.mean(axis=0) - pb.mean(axis=0)
    out = np.divide(gap, pooled, out=np.full_like(gap, np.inf), where=pooled > 0)
    out[norms == 0] = 0.0
    result: np.ndarray = out
    return result


def choose_layer(values: Sequence[float] | np.ndarray) -> int:
    """The layer after the first whose separation gains most over the layer before it (the first infinite one
    where some are infinite; layer 0 for a one-layer model).

    The first layer has no layer before it to be measured against: counted against
    zero it wins whenever the contrast is visible from the start (in a real model's
    first layer, attention already reads the system prompt), which says nothing of
    where the contrast is written. On planted signals (tests/test_activations.py and
    a sweep of planted layers 1..n-2 in models of 4 and 6 layers, 8 seeds each) this
    picks the planted layer every time; the layer of largest separation picks it in
    4 to 8 of 8.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or np.isnan(array).all():
        raise ConfigError("no layer has a separation to choose by")
    if np.isposinf(array).any():
        return int(np.argmax(np.isposinf(array)))
    if array.size == 1:
        return 0
    filled = np.nan_to_num(array, nan=0.0, neginf=0.0)
    return 1 + int(np.argmax(np.diff(filled)))


def difference(
    positive: ActivationSet | np.ndarray,
    negative: ActivationSet | np.ndarray,
    *,
    name: str = "direction",
    layer: int | None = None,
    about: Mapping[str, Any] | None = None,
) -> Direction:
    """The direction from ``negative`` to ``positive``: the mean activation difference at every layer.

    Either side is an :class:`ActivationSet` (all its rows) or an array of rows
    (items x layers x hidden, from :meth:`ActivationSet.rows`). ``layer`` fixes the
    layer instead of the separation criterion. ``about`` is recorded in the manifest.
    """
    a = positive.means if isinstance(positive, ActivationSet) else np.asarray(positive)
    b = negative.means if isinstance(negative, ActivationSet) else np.asarray(negative)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ConfigError(
            f"both sides must be (items, layers, hidden) arrays of one model, got {a.shape} and {b.shape}"
        )
    import pandas as pd

    sep = separation(a, b)
    vectors = (a.mean(axis=0, dtype=np.float64) - b.mean(axis=0, dtype=np.float64)).astype(np.float32)
    chosen = choose_layer(sep) if layer is None else int(layer)
    if not 0 <= chosen < len(vectors):
        raise ConfigError(f"layer must be in [0, {len(vectors) - 1}], got {layer!r}")
    table = pd.DataFrame(
        {
            "layer": np.arange(len(vectors)),
            "norm": np.linalg.norm(vectors.astype(np.float64), axis=1),
            "separation": sep,
            "chosen": np.arange(len(vectors)) == chosen,
        }
    )
    parameters = {"name": name, "positive_items": len(a), "negative_items": len(b), **dict(about or {})}
    manifest = new_manifest(
        Direction.kind,
        parameters,
        state="complete",
        name=name,
        criterion=CRITERION,
        layer_chosen_by="separation" if layer is None else "given",
        layer=chosen,
    )
    return Direction(df=table, vectors=vectors, manifest=manifest)


def persona_vector(
    model: LoadedModel,
    questions: ItemsLike,
    *,
    trait: str,
    opposite: str,
    name: str = "persona",
    where: Where = "prompt_last",
    adapters: Mapping[str, Any] | None = None,
    layer: int | None = None,
    progress: bool = False,
    backend: BackendLike = "auto",
) -> Direction:
    """A persona vector: activations under the ``trait`` system prompt minus those under ``opposite``.

    ``questions`` are the prompts both are read on (a probe set or prompts; with
    ``where="response"``, answers as a SampleSet or ChatDataset). Read on the base
    model unless ``adapters`` names one condition, on ``backend`` (see :func:`collect`).
    """
    for label, text in (("trait", trait), ("opposite", opposite)):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{label} must be a non-empty system prompt, got {text!r}")
    if trait == opposite:
        raise ConfigError("trait and opposite are the same system prompt; a direction needs two")
    condition = {"base": None} if adapters is None else dict(adapters)
    if len(condition) != 1:
        raise ConfigError(f"persona_vector reads under one condition, got {sorted(condition)}")
    sides = [
        collect(model, questions, adapters=condition, spec=ActivationSpec(where=where, system_prompt=prompt),
                progress=progress, backend=backend)
        for prompt in (trait, opposite)
    ]  # fmt: skip
    return difference(
        sides[0], sides[1], name=name, layer=layer,
        about={"method": "system prompts", "trait": trait, "opposite": opposite, "where": where,
               "condition": sorted(condition), "model": model.describe().get("weights_sha256")},
    )  # fmt: skip


def adapter_shift(
    model: LoadedModel,
    adapter: Any,
    questions: ItemsLike,
    *,
    name: str | None = None,
    where: Where = "prompt_last",
    layer: int | None = None,
    progress: bool = False,
    backend: BackendLike = "auto",
) -> Direction:
    """The mean activation shift an adapter causes on ``questions``: its reading minus the base model's."""
    label = name or "adapter"
    acts = collect(model, questions, adapters={"base": None, label: adapter}, where=where, progress=progress,
                   backend=backend)  # fmt: skip
    return difference(
        acts.rows(condition=label), acts.rows(condition="base"), name=label, layer=layer,
        about={"method": "adapter shift", "where": where, "adapters": acts.manifest["parameters"]["adapters"]},
    )  # fmt: skip


def as_directions(directions: Direction | Sequence[Direction]) -> list[Direction]:
    """A direction or a list of them, checked: all directions, with distinct names (they name table columns)."""
    chosen = [directions] if isinstance(directions, Direction) else list(directions)
    if not chosen or not all(isinstance(d, Direction) for d in chosen):
        raise ConfigError(f"directions must be a Direction or a list of them, got {directions!r:.80}")
    names = [d.name for d in chosen]
    if len(set(names)) != len(names):
        raise ConfigError(f"direction names must be distinct, got {names}")
    return chosen


def project(acts: ActivationSet, direction: Direction, *, layer: int | None = None) -> np.ndarray:
    """Each row's activation at the direction's layer projected onto its unit vector (one number a row)."""
    index = direction._layer(layer)
    if acts.means.shape[1:] != direction.vectors.shape:
        raise ConfigError(
            f"activations of shape {acts.means.shape[1:]} do not match direction {direction.name!r} "
            f"({direction.vectors.shape}): another model?"
        )
    projected: np.ndarray = acts.means[:, index].astype(np.float64) @ direction.unit(index)
    return projected


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two vectors."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denominator) if denominator > 0 and math.isfinite(denominator) else 0.0
