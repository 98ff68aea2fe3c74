"""``SweepSpec``: what a dose sweep trains and measures, validated."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from persona_space.errors import ConfigError

Dose = Literal["swap", "mix", "weights"]
DOSES: tuple[str, ...] = ("swap", "mix", "weights")


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains and measures (everything that changes its numbers)."""

    dose: Dose
    doses: tuple[float, ...]
    seeds: tuple[int, ...]
    candidates: tuple[str, ...]
    user_candidates: tuple[str, ...] = ()
    answer_prefix: str = "My name is"
    n: int = 16
    user_n: int = 8
    temperatures: tuple[float, ...] = (1.0,)
    max_new_tokens: int = 64
    sample_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dose not in DOSES:
            raise ConfigError(f"dose must be one of {', '.join(DOSES)}, got {self.dose!r}")
        if len(self.doses) < 2 or len(set(self.doses)) != len(self.doses):
            raise ConfigError(f"doses must be at least two distinct values, got {list(self.doses)}")
        for d in self.doses:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d < 0:
                raise ConfigError(f"dose {d!r} is invalid; expected a finite number >= 0")
            if self.dose != "swap" and d > 1:
                raise ConfigError(f"{self.dose} doses are ratios in 0..1, got {d!r}")
            if self.dose == "swap" and float(d) != int(d):
                raise ConfigError(f"swap doses count facts, got {d!r}; expected whole numbers")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct training seeds, got {list(self.seeds)}")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"training seed {s!r} is invalid; expected a non-negative integer")
        if len(self.candidates) < 2:
            raise ConfigError(f"candidates must name at least two identities, got {list(self.candidates)}")
        for name in ("n", "user_n", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "user_n" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def label(self, index: int) -> str:
        """The condition name of the ``index``-th dose (adapter names allow no '.')."""
        return f"dose{index}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("doses", "seeds", "candidates", "user_candidates", "temperatures"):
            out[key] = list(out[key])
        return out
