"""Projections on directions: how far adapters move the model along them, and where sampled texts sit.

* :func:`shift_along`: each condition's mean projection minus the base model's,
  per direction, read on the same questions, paired by question and with training
  seeds drawn per side (the library's :func:`~persona_space.estimates.difference_table`:
  a bootstrap interval over question groups and seeds, a t-test p-value, and Holm's
  adjustment over every direction and condition tested together).
* :func:`sample_projections`: every sampled text's projection (read by one model),
  keyed by the sample's own condition, adapter, probe, temperature and index, so it
  joins a :meth:`~persona_space.basins.BasinMap.to_frame` table row for row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_space.activations._collect import ActivationSet, ItemsLike, Where, collect
from persona_space.activations._directions import Direction, as_directions, project
from persona_space.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from persona_space.models import LoadedModel

SAMPLE_KEYS = ("sample_condition", "sample_adapter", "probe_id", "temperature", "sample_index")


def shift_along(
    model: LoadedModel,
    adapters: Mapping[str, Any],
    directions: Direction | Sequence[Direction],
    questions: ItemsLike,
    *,
    where: Where = "prompt_last",
    acts: ActivationSet | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """How far each condition of ``adapters`` moves the model along each direction, against the base model.

    Columns as :func:`~persona_space.estimates.difference_table`, with ``direction``
    naming the direction and ``condition`` the adapter: ``value`` and
    ``reference_value`` (mean projections), ``difference``, ``low``/``high``,
    ``p_value`` and ``p_adjusted``. ``acts`` reuses activations already read (with
    a ``base`` condition).
    """
    from persona_space.estimates import difference_table

    chosen = as_directions(directions)
    if "base" in adapters:
        raise ConfigError("adapters must not name 'base': it is the reference every condition is compared with")
    if acts is None:
        acts = collect(model, questions, adapters={"base": None, **adapters}, where=where, progress=progress)
    values = np.column_stack([project(acts, d) for d in chosen])
    table = difference_table(acts.df, values, [d.name for d in chosen], by="condition", reference="base",
                             name_column="direction")  # fmt: skip
    layers = {d.name: d.layer for d in chosen}
    return table.assign(layer=table["direction"].map(layers))


def sample_projections(acts: ActivationSet, directions: Direction | Sequence[Direction]) -> pd.DataFrame:
    """One row per sampled text read in ``acts`` (from a SampleSet): its keys and its projection on each
    direction (a column per direction), ready to join a basin map's frame.

    ``acts`` may hold several reading conditions; ``reader`` says which read each row.
    """
    chosen = as_directions(directions)
    missing = [k for k in SAMPLE_KEYS if k not in acts.df.columns]
    if missing:
        raise ConfigError(f"these activations were not read from a SampleSet (no {missing} columns)")
    frame = acts.df[list(SAMPLE_KEYS)].rename(columns={"sample_condition": "condition", "sample_adapter": "adapter"})
    frame = frame.assign(reader=acts.df["adapter"].to_numpy())
    for direction in chosen:
        frame[direction.name] = project(acts, direction)
    return frame.reset_index(drop=True)
