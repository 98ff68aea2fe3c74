"""Altair charts of basin maps and identity shifts, and a writer for HTML, Vega-Lite spec and PNG.

Each chart function takes one of the tables a :class:`~persona_space.basins.BasinMap`
produces (``to_frame()``, ``occupancy()``, ``divergence()``, ``transitions()``) or
``ShiftResult.shifts()`` and returns an Altair chart; :func:`save_chart` writes it as HTML, a Vega-Lite spec and a
PNG. Data is embedded as plain inline values, so maps with more than Altair's default
5,000 rows work without changing Altair's global data transformer.

Altair and pandas are imported inside the functions: importing persona_space stays fast.

>>> from persona_space import plots
>>> chart = plots.basin_map(basins.to_frame(), facet="adapter")  # doctest: +SKIP
>>> plots.save_chart(chart, "figures/basins")  # doctest: +SKIP
"""

from __future__ import annotations

# The constants the charts use, importable from plots too.
from persona_space.constants import BASE as BASE
from persona_space.constants import NOISE as NOISE
from persona_space.constants import NOISE_NAME as NOISE_NAME
from persona_space.plots._activations import drift_chart, layer_profile, persona_space_map
from persona_space.plots._basins import basin_map, divergence_heatmap, occupancy_bars, transitions_chart
from persona_space.plots._common import CONDITION_COLUMNS as CONDITION_COLUMNS
from persona_space.plots._common import NOISE_COLOR as NOISE_COLOR
from persona_space.plots._common import PALETTE as PALETTE
from persona_space.plots._doses import dose_response, entropy_chart, mixing_comparison, occupancy_area
from persona_space.plots._evals import date_gradient, leakage_chart, style_bars, training_loss
from persona_space.plots._save import save_chart
from persona_space.plots._shifts import rank_change_chart, shift_bars

__all__ = [
    "basin_map",
    "date_gradient",
    "divergence_heatmap",
    "dose_response",
    "drift_chart",
    "entropy_chart",
    "layer_profile",
    "leakage_chart",
    "mixing_comparison",
    "occupancy_area",
    "occupancy_bars",
    "persona_space_map",
    "rank_change_chart",
    "save_chart",
    "shift_bars",
    "style_bars",
    "training_loss",
    "transitions_chart",
]
