"""Persona arithmetic: adapter-weight sums and scaling, dose-response curves and tipping doses.

>>> import persona_space as ps
>>> half = ps.arithmetic.combine(model, {"figure": fig, "russian": ru}, [0.5, 0.5], out="runs/half")  # doctest: +SKIP
>>> double = ps.arithmetic.scale(model, fig, 2.0, out="runs/fig-x2")                               # doctest: +SKIP
>>> ps.arithmetic.tipping_dose(doses, shares, seeds)                                               # doctest: +SKIP
"""

from __future__ import annotations

from persona_space.arithmetic._combine import EXACT, METHODS, combine, scale
from persona_space.arithmetic._fit import Logistic, Tipping, crossing, fit_logistic, fit_monotone, tipping_dose

__all__ = [
    "EXACT",
    "METHODS",
    "Logistic",
    "Tipping",
    "combine",
    "crossing",
    "fit_logistic",
    "fit_monotone",
    "scale",
    "tipping_dose",
]
