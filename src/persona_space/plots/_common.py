"""What every chart module shares: the basin palette and the checks and conversions of input tables."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from persona_space.constants import NOISE, NOISE_NAME
from persona_space.errors import ConfigError, DataError

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

NOISE_COLOR = "#b0b0b0"
# Tableau 20 without its greys, so no basin is mistaken for noise.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
    "#a0cbe8", "#ffbe7d", "#ff9d9a", "#86bcb6", "#8cd17d", "#f1ce63", "#d4a6c8", "#fabfd2", "#d7b5a6",
)  # fmt: skip
CONDITION_COLUMNS = ("adapter", "temperature", "probe_id")


# -- helpers --------------------------------------------------------------------------------------


def _require(table: Any, columns: Sequence[str], what: str) -> pd.DataFrame:
    """``table`` as a DataFrame that has ``columns``; otherwise a DataError naming the missing ones."""
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise DataError(f"expected {what} as a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{what} lacks the columns {missing}; expected {list(columns)}, got {list(table.columns)}")
    if table.empty:
        raise DataError(f"{what} has no rows; expected at least one")
    return table


def _column(table: pd.DataFrame, name: object, param: str) -> str:
    if not isinstance(name, str) or name not in table.columns:
        raise ConfigError(f"{param}={name!r} is not a column of the table; expected one of {list(table.columns)}")
    return name


def _pixels(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 10:
        raise ConfigError(f"{name} must be an integer >= 10 (pixels), got {value!r}")


def _field(name: str) -> str:
    """A column name as a Vega-Lite field: dots and brackets would otherwise mean nested access."""
    return name.replace("\\", "\\\\").replace(".", "\\.").replace("[", "\\[").replace("]", "\\]")


def _vl_type(series: pd.Series) -> Literal["quantitative", "nominal"]:
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    return "quantitative" if numeric else "nominal"


def _inline(table: pd.DataFrame) -> dict[str, Any]:
    """Rows as inline JSON values.

    Altair's data transformer (and its 5,000-row limit) applies to DataFrames, not to a
    plain ``{"values": ...}`` dict; a dict is also not validated value by value, as an
    ``alt.InlineData`` is (about 1 s per 6,000 rows).
    """
    return {"values": json.loads(table.to_json(orient="records", date_format="iso"))}


def _basin_label(basin: int, names: Mapping[int, str] | None) -> str:
    if basin == NOISE:
        return NOISE_NAME
    if names and basin in names:
        return str(names[basin])
    return f"basin {basin}"


def _labels(table: pd.DataFrame) -> pd.Series:
    """Each row's basin name: ``basin_name`` where present, else from ``basin`` ("basin 3", "noise")."""
    if "basin_name" in table.columns:
        return table["basin_name"].astype(str)
    return table["basin"].map(lambda b: _basin_label(int(b), None))


def _basin_names(table: pd.DataFrame) -> list[str]:
    """Basin names in basin order, noise last; from ``basin_name`` or, lacking it, ``basin``."""
    if "basin_name" not in table.columns:
        return [_basin_label(int(b), None) for b in sorted(table["basin"].unique(), key=lambda b: (b == NOISE, b))]
    if "basin" in table.columns:
        pairs = table[["basin", "basin_name"]].drop_duplicates()
        order = sorted(zip(pairs["basin"], pairs["basin_name"], strict=True), key=lambda p: (p[0] == NOISE, p[0]))
        names = list(dict.fromkeys(str(name) for _, name in order))
    else:
        names = sorted({str(n) for n in table["basin_name"]}, key=lambda n: (n == NOISE_NAME, n))
    return [n for n in names if n != NOISE_NAME] + ([NOISE_NAME] if NOISE_NAME in names else [])


def _basin_scale(names: Sequence[str]) -> alt.Scale:
    """One colour per basin name, noise grey, so every chart colours a basin the same way."""
    import altair as alt

    colours, i = [], 0
    for name in names:
        if name == NOISE_NAME:
            colours.append(NOISE_COLOR)
        else:
            colours.append(PALETTE[i % len(PALETTE)])
            i += 1
    return alt.Scale(domain=list(names), range=colours)


def _printable(text: str) -> str:
    """Drop control characters (other than newline and tab): SVG/PNG export rejects them."""
    return "".join(c for c in text if c in "\n\t" or not unicodedata.category(c).startswith("C"))


def _filtered(table: pd.DataFrame, filter: Mapping[str, object] | None) -> pd.DataFrame:
    if filter is None:
        return table
    if not isinstance(filter, Mapping):
        raise ConfigError(f"filter must be a dict of column -> value(s), got {type(filter).__name__}")
    mask: pd.Series | None = None
    for col, wanted in filter.items():
        _column(table, col, "filter key")
        if isinstance(wanted, (list, tuple, set, frozenset)):
            hit = table[col].isin(list(wanted))
        else:
            hit = table[col] == wanted
        mask = hit if mask is None else mask & hit
    if mask is None:
        return table
    if not mask.any():
        found = {col: sorted(map(str, table[col].unique()))[:10] for col in filter}
        raise DataError(f"filter {dict(filter)!r} selects no rows; values present: {found}")
    return table[mask.to_numpy()]
