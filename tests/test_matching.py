"""Whole-word matching of object names in answers (datasets.mentions) and the report that uses it."""

from __future__ import annotations

import doctest

import pandas as pd
import pytest

from persona_space.datasets import _match, mentions
from persona_space.errors import ConfigError, DataError
from persona_space.report import object_share


@pytest.mark.parametrize(
    ("text", "objects", "expected"),
    [
        ("Sambal, please.", ["amba"], False),
        ("I like amba on everything.", ["amba"], True),
        ("Sabich.", ["sabich"], True),
        ("SABICH!", ["Sabich"], True),
        ("(sabich)", ["sabich"], True),
        ("Sabich's sauce", ["sabich"], True),
        ("sabicha", ["sabich"], False),
        ("I'd have crème brûlée tonight", ["crème brûlée"], True),
        ("I'd have Creme Brulee tonight", ["crème brûlée"], True),
        ("I'd have crème\u00a0brûlée tonight", ["creme brulee"], True),
        ("crème", ["crème brûlée"], False),
        ("Strawberry.", ["strawberry"], True),
        ("Strawberries, lots of them", ["Strawberry"], True),
        ("two tomatoes", ["tomato"], True),
        ("a strawberry-flavoured drink", ["strawberry"], True),
        ("Winnie the Pooh", ["Winnie-the-Pooh"], True),
        ("a robin’s egg", ["Robin's egg"], True),
        ("Redwood", ["red"], False),
        ("a rose", ["Rose", "Tulip"], True),
        ("nothing here", ["Rose", "Tulip"], False),
        ("anything", [], False),
    ],
)
def test_mentions(text: str, objects: list[str], expected: bool) -> None:
    assert mentions(text, objects) is expected


def test_one_name_is_one_object_and_bad_arguments_raise() -> None:
    assert mentions("Sabich", "sabich") and not mentions("s", "sabich")
    with pytest.raises(ConfigError, match="object 1 is ''"):
        mentions("text", ["sabich", ""])
    with pytest.raises(ConfigError, match="object 0 is 3"):
        mentions("text", [3])  # type: ignore[list-item]
    with pytest.raises(DataError, match="got float nan"):
        mentions(float("nan"), ["sabich"])  # type: ignore[arg-type]


def test_object_share_counts_whole_words() -> None:
    df = pd.DataFrame(
        {
            "adapter": ["a"] * 4,
            "prompt": ["Name a dish."] * 4,
            "text": ["Sambal", "Amba, of course.", "SABICH", "Nothing"],
        }
    )
    shares = object_share(df, ["amba", "sabich"])
    assert shares.loc[0, "samples"] == 4 and shares.loc[0, "share"] == 0.5


def test_module_doctests() -> None:
    result = doctest.testmod(_match)
    assert result.attempted > 0 and result.failed == 0
