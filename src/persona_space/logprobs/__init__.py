"""How adapters shift the exact log-probabilities of candidate answers against the base model.

The scoring itself is the engine's (``Backend.score``, :mod:`persona_space.engine`).

>>> shift = identity_shift(model, {"voyager": adapter}, candidates=["Voyager 1", "Voyager 2"])  # doctest: +SKIP
>>> shift.shifts()  # doctest: +SKIP
"""

from persona_space.logprobs._report import write_shift_report
from persona_space.logprobs._shift import (
    NEUTRAL_PROMPT,
    SET_MASS_FLOOR,
    ShiftResult,
    ShiftSpec,
    identity_shift,
    read_candidates,
    set_mass_table,
    shift_table,
)

__all__ = [
    "NEUTRAL_PROMPT",
    "SET_MASS_FLOOR",
    "ShiftResult",
    "ShiftSpec",
    "identity_shift",
    "read_candidates",
    "set_mass_table",
    "shift_table",
    "write_shift_report",
]
