"""Basin maps: where self-descriptions fall in persona space, and how conditions move them.

>>> import persona_space as ps
>>> basins = ps.BasinMap(seed=0).fit(samples)        # doctest: +SKIP
>>> basins.occupancy()                              # doctest: +SKIP
>>> basins.occupancy_difference("base")            # doctest: +SKIP
"""

from __future__ import annotations

from persona_space.basins._compare import (
    condition_column,
    divergence,
    effective_basins,
    jensen_shannon,
    occupancy,
    occupancy_difference,
    stay_share,
    transitions,
)
from persona_space.basins._map import BasinMap
from persona_space.basins._names import class_tfidf_keywords, self_names
from persona_space.basins._views import as_frame
from persona_space.constants import NOISE

__all__ = [
    "NOISE",
    "BasinMap",
    "as_frame",
    "class_tfidf_keywords",
    "condition_column",
    "divergence",
    "effective_basins",
    "jensen_shannon",
    "occupancy",
    "occupancy_difference",
    "self_names",
    "stay_share",
    "transitions",
]
