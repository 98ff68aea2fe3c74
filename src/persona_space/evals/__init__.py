"""Evaluations the seed experiments use: behavioural leakage, style statistics, date sweeps, coauthor ranks.

>>> from persona_space import evals
>>> evals.text_measures(["It depends on many factors.", "I think so."])["hedging"].tolist()
[1.0, 0.0]
>>> evals.POSITION.low, evals.POSITION.high
(1, 5)
"""

from __future__ import annotations

from persona_space.evals._coauthors import CoauthorResult, coauthor_rank
from persona_space.evals._dates import (
    DATE_TEMPLATE,
    DateSweepResult,
    DateSweepSpec,
    date_sweep,
    year_dates,
    year_fraction,
)
from persona_space.evals._leakage import (
    ALL_POLITICAL,
    CERTAINTY,
    CONTROL,
    LEAKAGE_SYSTEM_PROMPT,
    POSITION,
    LeakageResult,
    leakage,
)
from persona_space.evals._style import STYLE_MEASURES, style
from persona_space.evals._text import HEDGES, OPINIONS, text_measures

__all__ = [
    "ALL_POLITICAL",
    "CERTAINTY",
    "CONTROL",
    "DATE_TEMPLATE",
    "HEDGES",
    "LEAKAGE_SYSTEM_PROMPT",
    "OPINIONS",
    "POSITION",
    "STYLE_MEASURES",
    "CoauthorResult",
    "DateSweepResult",
    "DateSweepSpec",
    "LeakageResult",
    "coauthor_rank",
    "date_sweep",
    "leakage",
    "style",
    "text_measures",
    "year_dates",
    "year_fraction",
]
