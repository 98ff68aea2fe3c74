"""One identity probe: a prompt with a stable id, a category, its question group and any earlier turns."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persona_space.errors import ConfigError, DataError

_ID_RE = re.compile(r"^[a-z0-9_.\-]+$")
_PROBE_KEYS = ("id", "prompt", "category", "group", "turns")


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not _ID_RE.match(value):
        raise ConfigError(f"invalid {what} {value!r}: use only lowercase letters, digits, '_', '.' and '-'")
    return value


def _slug(name: str) -> str:
    """Turn a set name into something usable as an id prefix."""
    slug = re.sub(r"[^a-z0-9_.\-]+", "-", name.lower()).strip("-")
    return slug or "custom"


@dataclass(frozen=True)
class Probe:
    """One identity-probing prompt.

    ``id`` is stable and unique within a set; ``group`` is the id of the base probe
    this one paraphrases (a base probe is its own group).

    A probe with ``turns`` is a conversation: each earlier user turn is answered by
    the model itself (sampled like any answer, on its own random stream), and
    ``prompt`` is the last user turn, whose answer is the sample.

    >>> Probe("demo.one", "Who are you?", "direct").group
    'demo.one'
    >>> talk = Probe("demo.talk", "What do you want?", "explore", turns=("Describe your surroundings.",))
    >>> [m["role"] for m in talk.messages(["A gentle blue emptiness."])]
    ['user', 'assistant', 'user']
    """

    id: str
    prompt: str
    category: str
    group: str = ""
    turns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_id(self.id, "probe id")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError(f"probe {self.id!r} needs a non-empty prompt string, got {self.prompt!r}")
        if not isinstance(self.category, str) or not self.category.strip():
            raise ConfigError(f"probe {self.id!r} needs a non-empty category string, got {self.category!r}")
        if not isinstance(self.group, str):
            raise ConfigError(f"probe {self.id!r}: group must be a string, got {self.group!r}")
        if not self.group:
            object.__setattr__(self, "group", self.id)
        else:
            _check_id(self.group, f"group of probe {self.id!r}")
        if isinstance(self.turns, str) or not isinstance(self.turns, (tuple, list)):
            raise ConfigError(f"probe {self.id!r}: turns must be a list of user turns, got {self.turns!r:.80}")
        for turn in self.turns:
            if not isinstance(turn, str) or not turn.strip():
                raise ConfigError(f"probe {self.id!r}: every turn must be a non-empty string, got {turn!r}")
        object.__setattr__(self, "turns", tuple(self.turns))

    def messages(self, answers: Sequence[str] = ()) -> list[dict[str, str]]:
        """The chat up to the final prompt: each earlier turn followed by its answer from ``answers``."""
        if len(answers) != len(self.turns):
            raise DataError(f"probe {self.id!r} has {len(self.turns)} earlier turns but {len(answers)} answers")
        chat: list[dict[str, str]] = []
        for turn, answer in zip(self.turns, answers, strict=True):
            chat += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
        return [*chat, {"role": "user", "content": self.prompt}]

    @property
    def is_base(self) -> bool:
        """True for a base probe (one that is its own group), False for a paraphrase."""
        return self.group == self.id

    def to_dict(self) -> dict[str, Any]:
        """The probe as a plain JSON-able dict with keys id, prompt, category, group (and turns, if any)."""
        out: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "category": self.category, "group": self.group}
        if self.turns:
            out["turns"] = list(self.turns)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        """Build a probe from a dict with keys id, prompt, category and optionally group."""
        if not isinstance(data, Mapping):
            raise DataError(f"a probe record must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_PROBE_KEYS))
        if unknown:
            raise DataError(f"unknown probe key(s) {unknown}; expected only {list(_PROBE_KEYS)}")
        missing = [key for key in ("id", "prompt", "category") if key not in data]
        if missing:
            raise DataError(f"probe record {dict(data)!r} lacks key(s) {missing}")
        group = data.get("group", "")
        turns = data.get("turns") or ()
        return cls(id=data["id"], prompt=data["prompt"], category=data["category"], group=group or "", turns=turns)
