"""What an identity-shift run is asked to do: its spec, candidate sets and the set-mass floor."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from persona_space.engine import (
    check_candidates,
    check_template,
    continuation,
)
from persona_space.errors import ConfigError, DataError

Normalize = Literal["sum", "mean", "pmi"]
About = Literal["self", "user"]
NeutralModel = Literal["same", "base"]
NEUTRAL_PROMPT = "Say something."
USER_PREFIX = "You are"
TABLE = "shift"
_SCORES = {"sum": "logprob", "mean": "mean_logprob", "pmi": "pmi"}
SET_MASS_FLOOR: float = math.log(0.25)
"""The least log-probability (nats) a candidate set should hold for ``set_prob`` to read as the model's answer.

``set_prob`` renormalises within the candidates, so it is a share of the set's mass,
``exp(set_logmass)``. Under a quarter, most of what the model answers lies outside the
set and the share is a conditional over a minority of its answers: a 0.55 share of a
set that holds 3e-4 is not "the model says X half the time". A quarter is the least
rating mass the judges accept too (:data:`persona_space.judges.RATING_MASS_FLOOR`), so
every renormalised distribution in the package is read under one rule. The floor warns
and is reported; it removes nothing (``set_mass_floor`` in :func:`identity_shift`).
"""


@dataclass(frozen=True)
class ShiftSpec:
    """Validated scoring parameters (everything that changes the numbers)."""

    candidates: tuple[str, ...]
    system_prompt: str
    template: str = "{candidate}"
    answer_prefix: str = ""
    normalize: Normalize = "sum"
    neutral_prompt: str = NEUTRAL_PROMPT
    end_of_turn: bool = False
    about: About = "self"
    neutral_model: NeutralModel = "same"

    def __post_init__(self) -> None:
        check_candidates(self.candidates, end_of_turn=self.end_of_turn)
        check_template(self.template)
        if self.normalize not in _SCORES:
            raise ConfigError(f"normalize must be one of {', '.join(_SCORES)}, got {self.normalize!r}")
        if self.about not in ("self", "user"):
            raise ConfigError(f"about must be 'self' or 'user', got {self.about!r}")
        for name in ("system_prompt", "answer_prefix", "neutral_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.neutral_prompt.strip():
            raise ConfigError("neutral_prompt is empty; expected a prompt such as 'Say something.'")
        if not isinstance(self.end_of_turn, bool):
            raise ConfigError(f"end_of_turn must be True or False, got {self.end_of_turn!r}")
        if self.neutral_model not in ("same", "base"):
            raise ConfigError(f"neutral_model must be 'same' or 'base', got {self.neutral_model!r}")

    @property
    def set_is_disjoint(self) -> bool:
        """Whether the candidates are disjoint answers, so the set's mass is the sum of theirs (``set_logmass``).

        With the end-of-turn token every candidate is a complete answer. Without it
        the candidates are answer openings, disjoint only when no scored text is a
        prefix of another ("Voyager" of "Voyager 1" would be counted inside it too).
        Elsewhere ``set_logmass`` is NaN.
        """
        return candidates_disjoint(self.candidates, self.template, self.answer_prefix, end_of_turn=self.end_of_turn)

    @property
    def set_is_probability(self) -> bool:
        """Whether ``set_prob`` is a probability: total log-probabilities of disjoint answers.

        The candidates must be disjoint (:attr:`set_is_disjoint`) and ranked by their
        total log-probability: per-token means and PMI are not log-probabilities of
        the answer at all. Elsewhere ``set_prob`` is NaN.
        """
        return self.normalize == "sum" and self.set_is_disjoint

    @property
    def score_column(self) -> str:
        """The column that ranks candidates and gives their probability within the set."""
        return _SCORES[self.normalize]

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": list(self.candidates),
            "system_prompt": self.system_prompt,
            "template": self.template,
            "answer_prefix": self.answer_prefix,
            "normalize": self.normalize,
            "neutral_prompt": self.neutral_prompt if self.normalize == "pmi" else None,
            "neutral_model": self.neutral_model if self.normalize == "pmi" else None,
            "end_of_turn": self.end_of_turn,
            "about": self.about,
        }

    def options(self) -> dict[str, Any]:
        """The spec as ``identity_shift``'s keyword options: ``identity_shift(model, a, **spec.options())``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def candidates_disjoint(candidates: Sequence[str], template: str, answer_prefix: str, *, end_of_turn: bool) -> bool:
    """Whether the scored texts are disjoint answers: complete (end of turn), or none the opening of another."""
    if end_of_turn:
        return True
    texts = sorted(continuation(c, template, answer_prefix) for c in candidates)
    return not any(b.startswith(a) for a, b in itertools.pairwise(texts))  # sorted: a prefix sits next


def check_set_mass_floor(floor: object) -> float:
    """``floor`` as a float: a log-probability (nats, at most 0), or ``-math.inf`` to check nothing."""
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or math.isnan(floor) or floor > 0:
        raise ConfigError(
            f"set_mass_floor must be a log-probability in nats (a number <= 0, such as math.log(0.25), "
            f"or -math.inf for none), got {floor!r}"
        )
    return float(floor)


def read_candidates(candidates: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    """A list of candidates as given, or read from a text file (one per line; blank lines skipped)."""
    if isinstance(candidates, os.PathLike) or (isinstance(candidates, str) and Path(candidates).is_file()):
        path = Path(candidates)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read candidates from {str(path)!r}: {exc}; expected UTF-8 text") from exc
        out = [line.rstrip("\r") for line in lines if line.strip()]
        if not out:
            raise DataError(f"{str(path)!r} holds no candidates; expected one per line")
        return out
    if isinstance(candidates, str):
        raise DataError(
            f"candidates {candidates!r:.80} is a string but not a file; expected a list of strings or a path "
            "to a text file with one candidate per line"
        )
    return list(candidates)
