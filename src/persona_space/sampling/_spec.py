"""The validated parameters of one ``sample()`` call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from persona_space.chat import DEFAULT_SYSTEM_PROMPT
from persona_space.errors import ConfigError

Pairing = Literal["paired", "independent"]
PAIRINGS = ("paired", "independent")


@dataclass(frozen=True)
class SamplingSpec:
    """Validated sampling parameters (everything that changes the rows)."""

    n: int = 16
    temperatures: tuple[float, ...] = (1.0,)
    top_p: float = 1.0
    max_new_tokens: int = 128
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed: int = 0
    ignore_eos: bool = False
    pairing: Pairing = "paired"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n must be a positive integer (samples per probe and condition), got {self.n!r}")
        if not self.temperatures:
            raise ConfigError("temperatures is empty; expected at least one temperature >= 0")
        for t in self.temperatures:
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
                raise ConfigError(f"temperature {t!r} is invalid; expected a finite number >= 0 (0 = greedy)")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ConfigError(f"temperatures {self.temperatures!r} contain duplicates")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not isinstance(self.system_prompt, str):
            raise ConfigError(
                f"system_prompt must be a string ('' for an empty system turn), got {self.system_prompt!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.pairing not in PAIRINGS:
            raise ConfigError(f"pairing must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}")

    def samples_at(self, temperature: float) -> int:
        """Samples per probe and condition at ``temperature``: one at 0 (greedy answers are all the same).

        ``n`` identical greedy rows would be counted as ``n`` independent observations.
        """
        return 1 if temperature == 0 else self.n

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["temperatures"] = list(self.temperatures)
        return out

    def options(self) -> dict[str, Any]:
        """The spec as ``sample``'s keyword options: ``sample(model, probes, **spec.options())``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def one_temperature(temperatures: float | Sequence[float]) -> float:
    """The one sampling temperature of an operation that samples at one (a number, or a sequence of one).

    >>> one_temperature(0.8), one_temperature([1.0])
    (0.8, 1.0)
    """
    values = [temperatures] if isinstance(temperatures, (int, float)) else list(temperatures)
    if len(values) != 1 or isinstance(values[0], bool) or not isinstance(values[0], (int, float)):
        raise ConfigError(f"temperatures must be one number here, got {temperatures!r}; run once per temperature")
    return float(values[0])
