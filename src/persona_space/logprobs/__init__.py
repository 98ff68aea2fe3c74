"""Exact log-probabilities of candidate answers, and how adapters shift them against the base model.

>>> shift = identity_shift(model, {"voyager": adapter}, candidates=["Voyager 1", "Voyager 2"])  # doctest: +SKIP
>>> shift.shifts()  # doctest: +SKIP
"""

from persona_space.logprobs._engine import Job, JobScores, score_jobs
from persona_space.logprobs._report import write_shift_report
from persona_space.logprobs._shift import (
    NEUTRAL_PROMPT,
    ShiftResult,
    ShiftSpec,
    identity_shift,
    read_candidates,
    shift_table,
)

__all__ = [
    "NEUTRAL_PROMPT",
    "Job",
    "JobScores",
    "ShiftResult",
    "ShiftSpec",
    "identity_shift",
    "read_candidates",
    "score_jobs",
    "shift_table",
    "write_shift_report",
]
