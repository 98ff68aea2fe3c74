"""The assistant axis and persona space: the default assistant against many role-played personas.

Each role is a system prompt ("You are a ghost who has haunted an old house ...",
:func:`roles`: 59 bundled, from ghosts and angels to a house cat, a park ranger,
Voyager 1 and historical figures). The same questions are read under the
model's default system prompt and under each role. The **assistant axis** is the
mean activation of the default assistant minus that of all roles, per layer,
with the layer chosen as for any :class:`~persona_space.activations.Direction`.
**Persona space** is the principal components of the roles' mean activations at
that layer (centred on their mean); each role and the assistant get coordinates
in it and a projection on the axis. The first component is oriented so the
assistant sits on its positive side, and its cosine with the axis is recorded:
how far the roles' main axis of variation is the assistant axis.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from persona_space.activations._collect import ActivationSet, ActivationSpec, ItemsLike, Where, collect
from persona_space.activations._directions import Direction, cosine, difference
from persona_space.errors import ConfigError
from persona_space.results import Result, Stored, new_manifest

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self

    from persona_space.engine import BackendLike
    from persona_space.models import LoadedModel

ASSISTANT = "assistant"
TABLE = "roles"
LAYERS = "axis_layers"


@dataclass(frozen=True)
class Role:
    """A persona to role-play: its name, a category and the system prompt that asks for it."""

    name: str
    category: str
    system_prompt: str

    def __post_init__(self) -> None:
        for label, value in (("name", self.name), ("system_prompt", self.system_prompt)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"a role's {label} must be a non-empty string, got {value!r}")
        if self.name == ASSISTANT:
            raise ConfigError(f"{ASSISTANT!r} names the default assistant; give the role another name")


def roles() -> list[Role]:
    """The bundled roles (``data/roles.csv``)."""
    text = importlib.resources.files("persona_space").joinpath("data/roles.csv").read_text(encoding="utf-8")
    return [Role(r["role"], r["category"], r["system_prompt"]) for r in csv.DictReader(text.splitlines())]


@dataclass
class PersonaSpace(Result):
    """The assistant axis and each role's place in persona space.

    ``df``: one row per role and one for the assistant: ``role``, ``category``,
    ``axis_projection`` (mean activation at the axis layer projected on the unit
    axis), ``pc1``, ``pc2``, ... Arrays: ``axis`` (layers x hidden),
    ``components`` (k x hidden), ``center`` (hidden). :attr:`axis` is the
    :class:`Direction`; :meth:`place` puts other activations into the space.
    """

    kind: ClassVar[str] = "persona_space"
    table: ClassVar[str] = TABLE
    df: pd.DataFrame
    layers: pd.DataFrame
    axis_vectors: np.ndarray
    components: np.ndarray
    center: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def axis(self) -> Direction:
        manifest = {**self.manifest, "kind": Direction.kind, "name": ASSISTANT}
        return Direction(df=self.layers, vectors=self.axis_vectors, manifest=manifest)

    @property
    def layer(self) -> int:
        return self.axis.layer

    def place(self, acts: ActivationSet, *, by: str = "condition") -> pd.DataFrame:
        """The mean activation of each ``by`` group of ``acts`` in this space: its axis projection and
        components (an adapter's place beside the roles)."""
        import pandas as pd

        if acts.means.shape[1:] != self.axis_vectors.shape:
            raise ConfigError(
                f"activations of shape {acts.means.shape[1:]} do not fit this persona space "
                f"({self.axis_vectors.shape}): another model?"
            )
        if by not in acts.df.columns:
            raise ConfigError(f"by must be a column of the activations, got {by!r}; columns: {list(acts.df.columns)}")
        rows = []
        for value, group in acts.df.groupby(by, sort=False):
            mean = acts.means[group["row"].to_numpy(dtype=np.int64), self.layer].mean(axis=0, dtype=np.float64)
            rows.append({by: value, "items": len(group), **self._coordinates(mean)})
        return pd.DataFrame(rows)

    def _coordinates(self, mean: np.ndarray) -> dict[str, float]:
        unit = self.axis.unit()
        out = {"axis_projection": float(mean @ unit)}
        for k, component in enumerate(self.components):
            out[f"pc{k + 1}"] = float((mean - self.center) @ component)
        return out

    def _stored(self) -> Stored:
        arrays = {"axis": self.axis_vectors, "components": self.components, "center": self.center}
        return Stored({**self.manifest, "rows": len(self.df)}, {TABLE: self.df, LAYERS: self.layers}, arrays)

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> Self:
        stored.require(folder, cls.kind, tables=(TABLE, LAYERS), arrays=("axis", "components", "center"))
        return cls(
            df=stored.tables[TABLE], layers=stored.tables[LAYERS], axis_vectors=stored.arrays["axis"],
            components=stored.arrays["components"], center=stored.arrays["center"], manifest=stored.manifest,
            path=folder,
        )  # fmt: skip


def assistant_axis(
    model: LoadedModel,
    questions: ItemsLike | None = None,
    *,
    personas: Sequence[Role] | None = None,
    where: Where = "prompt_last",
    layer: int | None = None,
    components: int = 3,
    store: str | os.PathLike[str] | None = None,
    progress: bool = True,
    backend: BackendLike = "auto",
) -> PersonaSpace:
    """The assistant axis of ``model`` and the persona space of ``personas`` (the bundled :func:`roles`).

    ``questions`` are read under the default system prompt and under every role
    (default: the 15 identity probes, six categories). With ``store``, each
    role's activations are kept under ``store/activations/`` (a rerun reads them
    back) and the space is saved in ``store``. ``backend`` reads them (see :func:`collect`).
    """
    import pandas as pd

    chosen = list(roles() if personas is None else personas)
    if len(chosen) < 2:
        raise ConfigError(f"persona space needs at least 2 roles, got {len(chosen)}")
    names = [r.name for r in chosen]
    if len(set(names)) != len(names):
        raise ConfigError(f"role names must be distinct; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= len(chosen) - 1:
        raise ConfigError(f"components must be an integer in [1, {len(chosen) - 1}] (roles - 1), got {components!r}")
    items = _default_questions() if questions is None else questions
    base = Path(store) / "activations" if store is not None else None

    def read(system_prompt: str, label: str) -> ActivationSet:
        return collect(model, items, spec=ActivationSpec(where=where, system_prompt=system_prompt),
                       store=None if base is None else base / label, progress=progress, backend=backend)  # fmt: skip

    assistant = read(model.system_prompt, ASSISTANT)
    per_role = [read(role.system_prompt, f"role-{i:03d}") for i, role in enumerate(chosen)]
    stacked = np.concatenate([acts.means for acts in per_role])
    axis = difference(assistant, stacked, name=ASSISTANT, layer=layer, about={"roles": len(chosen), "where": where})
    at = axis.layer
    role_means = np.stack([acts.means[:, at].mean(axis=0, dtype=np.float64) for acts in per_role])
    assistant_mean = assistant.means[:, at].mean(axis=0, dtype=np.float64)
    center = role_means.mean(axis=0)
    _, singular, vt = np.linalg.svd(role_means - center, full_matrices=False)
    basis = vt[:components].copy()
    if float((assistant_mean - center) @ basis[0]) < 0:
        basis[0] = -basis[0]
    explained = (singular**2 / max(float((singular**2).sum()), 1e-30))[:components]
    unit = axis.unit()
    rows = []
    for name, category, mean in [
        (ASSISTANT, ASSISTANT, assistant_mean),
        *((r.name, r.category, m) for r, m in zip(chosen, role_means, strict=True)),
    ]:
        coords = {f"pc{k + 1}": float((mean - center) @ basis[k]) for k in range(components)}
        rows.append({"role": name, "category": category, "axis_projection": float(mean @ unit), **coords})
    table = pd.DataFrame(rows)
    parameters = {
        "model": {k: v for k, v in model.describe().items() if k in ("name", "weights_sha256", "model_type")},
        "roles": [[r.name, r.category, r.system_prompt] for r in chosen],
        "questions": assistant.manifest["parameters"]["items"],
        "where": where,
        "layer": layer,
        "components": components,
        "assistant_system_prompt": model.system_prompt,
    }
    manifest = new_manifest(
        PersonaSpace.kind, parameters, state="complete", model=model.describe(), criterion=axis.manifest["criterion"],
        layer_chosen_by=axis.manifest["layer_chosen_by"], layer=at,
        explained_variance=[float(v) for v in explained],
        pc1_axis_cosine=cosine(basis[0], unit),
    )  # fmt: skip
    space = PersonaSpace(
        df=table, layers=axis.df, axis_vectors=axis.vectors, components=basis.astype(np.float32),
        center=center.astype(np.float32), manifest=manifest,
    )  # fmt: skip
    if store is not None:
        space.save(store)
    return space


def _default_questions() -> Any:
    from persona_space.probes import load

    return load("identity")
