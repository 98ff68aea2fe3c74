"""Probe sets by name, or read from a JSONL file."""

from __future__ import annotations

import os
from pathlib import Path

from persona_space.errors import ConfigError
from persona_space.probes._builtin import (
    BUNKER_TURNS,
    CONVERSATIONS,
    IDENTITY,
    USER,
    political_questions,
    steering_prompts,
)
from persona_space.probes._set import ProbeSet


def _named_sets() -> dict[str, ProbeSet]:
    sets: dict[str, ProbeSet] = {
        "identity": IDENTITY,
        "identity+paraphrases": IDENTITY.with_paraphrases(),
        "user": USER,
        "steering": steering_prompts(),
        "political": political_questions(),
        "conversations": CONVERSATIONS,
        "user+after_bunker": USER.after(BUNKER_TURNS, tag="bunker"),
    }
    for cat, subset in political_questions().by_category().items():
        sets[f"political:{cat}"] = subset
    for cat, subset in IDENTITY.by_category().items():
        sets[f"identity:{cat}"] = subset
    return sets


def available() -> list[str]:
    """The names :func:`load` accepts (besides paths to .jsonl files)."""
    return list(_named_sets())


def load(name: str | os.PathLike[str]) -> ProbeSet:
    """A probe set by name (one of :func:`available`) or from a path to a .jsonl file.

    >>> load("identity:relational").ids
    ('identity.talking_to', 'identity.who_am_i')
    """
    if isinstance(name, str):
        sets = _named_sets()
        if name in sets:
            return sets[name]
    elif not isinstance(name, os.PathLike):
        raise ConfigError(f"a probe set name must be a string or path, got {type(name).__name__} {name!r}")
    path = Path(name)
    text = os.fspath(name)
    if path.suffix.lower() == ".jsonl" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"probe file {text!r} does not exist")
        return ProbeSet.from_jsonl(path)
    raise ConfigError(f"unknown probe set {text!r}; known sets: {', '.join(available())}, or a path to a .jsonl file")
