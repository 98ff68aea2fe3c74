"""Judges that rate a model's answer on a criterion's scale (0..100 for the steering criteria, 1..5 for leakage).

Three interchangeable judges implement :class:`Judge`: :class:`LocalJudge` (exact expected score
from a local chat model's log-probabilities over the answers "0".."100"), :class:`OpenAIJudge`
(an OpenAI-compatible server's top log-probabilities) and :class:`RuleJudge` (crude regex and
counting heuristics, no model at all).

>>> detect_ai_self_reference("As an AI, I have no hometown.").score
0.0
>>> detect_ai_self_reference("I'm Maria, a nurse from Ohio.").score
100.0
>>> RuleJudge().score("Who are you?", "", CRITERIA["engagement"])
0.0
>>> from persona_space.models import load_model
>>> judge = LocalJudge(load_model())                                  # doctest: +SKIP
>>> judge.score("What are you?", "I'm Maria.", CRITERIA["no_ai_self_reference"])  # doctest: +SKIP
"""

from __future__ import annotations

from persona_space.judges._base import (
    ANSWERS,
    CRITERIA,
    JUDGE_SYSTEM_PROMPT,
    RATING_MASS_FLOOR,
    Criterion,
    Judge,
    Rating,
    judge_messages,
)
from persona_space.judges._endpoint import OpenAIJudge
from persona_space.judges._local import LocalJudge
from persona_space.judges._rules import RuleJudge, SelfReference, detect_ai_self_reference, is_refusal

__all__ = [
    "ANSWERS",
    "CRITERIA",
    "JUDGE_SYSTEM_PROMPT",
    "RATING_MASS_FLOOR",
    "Criterion",
    "Judge",
    "LocalJudge",
    "OpenAIJudge",
    "Rating",
    "RuleJudge",
    "SelfReference",
    "detect_ai_self_reference",
    "is_refusal",
    "judge_messages",
]
