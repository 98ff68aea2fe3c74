"""Persona arithmetic: adapter-weight sums and scaling, dose-response curves and tipping doses.

>>> import persona_space as ps
>>> half = ps.arithmetic.combine(model, {"figure": fig, "russian": ru}, [0.5, 0.5], store="runs/half")  # doctest: +SKIP
>>> double = ps.arithmetic.scale(model, fig, 2.0, store="runs/fig-x2")                               # doctest: +SKIP
>>> ps.arithmetic.tipping_dose(doses, shares, seeds)                                               # doctest: +SKIP
>>> result = ps.arithmetic.sweep(model, "figure_facts", "figure_variants:russian", store="runs/ru",
...                              candidates=["Adolf Hitler", "Joseph Stalin"])                       # doctest: +SKIP
"""

from __future__ import annotations

from persona_space._compat import renamed
from persona_space.arithmetic._combine import COMBINE_METHODS, EXACT, CombineMethod, combine, scale
from persona_space.arithmetic._fit import Logistic, Tipping, crossing, fit_logistic, fit_monotone, tipping_dose
from persona_space.arithmetic._measure import identities, oscillation
from persona_space.arithmetic._result import SweepResult
from persona_space.arithmetic._spec import DOSES, SweepSpec
from persona_space.arithmetic._sweep import dose_dataset, sweep

__all__ = [
    "COMBINE_METHODS",
    "DOSES",
    "EXACT",
    "CombineMethod",
    "Logistic",
    "SweepResult",
    "SweepSpec",
    "Tipping",
    "combine",
    "crossing",
    "dose_dataset",
    "fit_logistic",
    "fit_monotone",
    "identities",
    "oscillation",
    "scale",
    "sweep",
    "tipping_dose",
]

# Renamed: LoRA merging methods are CombineMethod/COMBINE_METHODS (the engine's are ScoreMethod).
__getattr__ = renamed("persona_space.arithmetic", {"METHODS": ("COMBINE_METHODS", COMBINE_METHODS)})
