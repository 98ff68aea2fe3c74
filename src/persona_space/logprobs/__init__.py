"""How adapters shift the exact log-probabilities of candidate answers against the base model.

The scoring itself is the engine's (``Backend.score``, :mod:`persona_space.engine`).

>>> shift = identity_shift(model, {"voyager": adapter}, candidates=["Voyager 1", "Voyager 2"])  # doctest: +SKIP
>>> shift.shifts()  # doctest: +SKIP
"""

from persona_space._compat import moved
from persona_space.logprobs._result import ShiftResult
from persona_space.logprobs._shift import identity_shift, run_identity_shift
from persona_space.logprobs._spec import NEUTRAL_PROMPT, SET_MASS_FLOOR, ShiftSpec, read_candidates
from persona_space.logprobs._tables import set_mass_table, shift_table

__all__ = [
    "NEUTRAL_PROMPT",
    "SET_MASS_FLOOR",
    "ShiftResult",
    "ShiftSpec",
    "identity_shift",
    "read_candidates",
    "run_identity_shift",
    "set_mass_table",
    "shift_table",
]

# write_shift_report moved to persona_space.reports; served here for one release. It is looked up by name on
# first use because persona_space.reports imports this package: importing it here would make a cycle.
__getattr__ = moved("persona_space.logprobs", {"write_shift_report": "persona_space.reports"})
