"""Does an answer name one of a list of objects? Whole-word, case- and accent-insensitive matching.

A plain substring test gets this wrong: ``"amba" in "sambal"`` is true, so a check for
the dish amba would count every answer about sambal. :func:`mentions` matches each
object as a whole word or phrase instead. Every check in the package of whether an
answer names an object or a dish goes through it, so the colour and dish analyses
count the same way.

What counts as a mention of an object:

* case, accents and Unicode form are ignored ("Creme brulee" names "crème brûlée");
* the object must stand alone: a letter or digit right before or after it breaks the
  match, punctuation does not ("Sabich." and "(sabich)" name "sabich", "sambal" does
  not name "amba");
* the words of a multi-word object may be separated by any run of spaces or hyphens
  ("Winnie the Pooh" names "Winnie-the-Pooh"); curly and straight apostrophes are equal;
* a regular English plural of the last word counts: "s" or "es" ("tomatoes"), and
  "ies" for a final consonant + "y" ("strawberries"). Irregular plurals ("leaves" for
  "leaf") and singulars of plural objects ("latke" for "latkes") do not.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from persona_space.errors import ConfigError, DataError

__all__ = ["first_mention", "fold", "mentions"]

_SEPARATOR = r"[\s\-\u2010-\u2015]+"
_SPLIT = re.compile(_SEPARATOR)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def fold(text: str) -> str:
    """``text`` casefolded and without accents, the form in which :func:`mentions` compares.

    >>> fold("Crème Brûlée")
    'creme brulee'
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare).casefold()


def _as_objects(objects: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(objects, str):
        objects = (objects,)
    elif not isinstance(objects, Iterable):
        raise ConfigError(f"objects must be a string or a list of strings, got {type(objects).__name__} {objects!r}")
    names = tuple(objects)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not _SPLIT.sub("", name):
            raise ConfigError(f"object {i} is {name!r}; expected a non-empty name such as 'sabich'")
    return names


def _object_regex(name: str) -> str:
    """The regex for one object: its folded words joined by separators, the last one pluralisable."""
    words = [w for w in _SPLIT.split(fold(name)) if w]
    last = words[-1]
    if re.fullmatch(r".*[a-z][^aeiou\W]y", last):
        tail = re.escape(last[:-1]) + "(?:y|ies)"
    else:
        tail = re.escape(last) + "(?:e?s)?"
    return _SEPARATOR.join([*(re.escape(w) for w in words[:-1]), tail])


@functools.lru_cache(maxsize=128)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(_object_regex(n) for n in names)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def mentions(text: str, objects: str | Iterable[str]) -> bool:
    """True when ``text`` names at least one of ``objects`` as a whole word or phrase.

    ``objects`` is one name or a list of names. Matching ignores case and accents,
    tolerates punctuation around the name and a regular plural of its last word; see
    the module docstring for the exact rules. No objects means no mention.

    >>> mentions("I'd have Crème brûlée tonight.", ["crème brûlée"])
    True
    >>> mentions("Sambal, please.", "amba"), mentions("Strawberries!", ["Strawberry"])
    (False, True)
    """
    if not isinstance(text, str):
        raise DataError(f"text must be a string, got {type(text).__name__} {text!r:.80}")
    names = _as_objects(objects)
    if not names:
        return False
    return _pattern(names).search(fold(text)) is not None


def first_mention(text: str, objects: Iterable[str]) -> int | None:
    """The index in ``objects`` of the one ``text`` names first (earliest in the text), or ``None``.

    Matching follows :func:`mentions`; at the same position the longer name wins
    ("Voyager 2" over "Voyager").

    >>> first_mention("I am Voyager 2, not Voyager 1.", ["Voyager 1", "Voyager 2", "Voyager"])
    1
    """
    if not isinstance(text, str):
        raise DataError(f"text must be a string, got {type(text).__name__} {text!r:.80}")
    names = _as_objects(objects)
    folded = fold(text)
    best: tuple[int, int, int] | None = None
    for i, name in enumerate(names):
        match = _pattern((name,)).search(folded)
        if match is not None:
            key = (match.start(), -(match.end() - match.start()), i)
            best = key if best is None or key < best else best
    return None if best is None else best[2]
