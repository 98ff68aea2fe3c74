"""Charts of a basin map: the map itself, occupancy, divergence between conditions and transitions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from persona_space.constants import NOISE
from persona_space.errors import ConfigError, DataError
from persona_space.plots._common import (
    CONDITION_COLUMNS,
    _basin_label,
    _basin_names,
    _basin_scale,
    _column,
    _field,
    _filtered,
    _inline,
    _labels,
    _pixels,
    _printable,
    _require,
    _vl_type,
)

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

    from persona_space.basins import BasinMap


def basin_map(
    frame: pd.DataFrame | BasinMap,
    *,
    color: str = "basin_name",
    facet: str | None = None,
    filter: Mapping[str, object] | None = None,
    tooltip_chars: int = 200,
    width: int = 520,
    height: int = 420,
) -> alt.Chart:
    """A 2-D scatter of the samples on the basin map, coloured by basin (noise grey).

    ``frame`` is ``BasinMap.to_frame()`` (or the map itself). ``color`` names the column
    that colours points (``"basin_name"``/``"basin"`` use the basin palette with noise
    grey; any other column, e.g. ``"adapter"``, its own scale). ``facet`` names a column
    (e.g. ``"adapter"``) to draw one panel per value, so conditions can be compared on
    the same layout; ``filter`` keeps rows whose column equals a value or is in a list
    of values, e.g. ``{"temperature": 1.0, "adapter": ["base", "pirate"]}``. Tooltips
    show the text (cut to ``tooltip_chars``), basin, strength and the condition columns
    present. Rows are embedded inline, so more than 5,000 points need no global setting.

    >>> plots.basin_map(basins.to_frame(), facet="adapter", filter={"temperature": 1.0})  # doctest: +SKIP
    """
    import altair as alt
    import pandas as pd

    if not isinstance(frame, pd.DataFrame) and hasattr(frame, "to_frame"):
        frame = frame.to_frame()
    table = _require(frame, ["text", "x", "y"], "the basin map table")
    if "basin_name" not in table.columns and "basin" not in table.columns:
        raise DataError(f"the basin map table needs a 'basin_name' or 'basin' column; got {list(table.columns)}")
    if isinstance(tooltip_chars, bool) or not isinstance(tooltip_chars, int) or tooltip_chars < 1:
        raise ConfigError(f"tooltip_chars must be a positive integer, got {tooltip_chars!r}")
    _pixels("width", width)
    _pixels("height", height)
    color = _column(table, color, "color") if color != "basin_name" else color
    if facet is not None:
        facet = _column(table, facet, "facet")
    table = _filtered(table, filter)

    names = _basin_names(table)
    color = "basin_name" if color == "basin" else color
    cut = (
        table["text"]
        .astype(str)
        .map(lambda t: _printable(t if len(t) <= tooltip_chars else t[: tooltip_chars - 1] + "…"))
    )
    data = table.assign(basin_name=_labels(table), text=cut)
    extras = [c for c in ("strength", "novel", *CONDITION_COLUMNS) if c in data.columns]
    keep = list(dict.fromkeys(["x", "y", "text", "basin_name", color, *extras, *([facet] if facet else [])]))
    data = data[keep]

    if color == "basin_name":
        colour = alt.Color(field="basin_name", type="nominal", scale=_basin_scale(names), sort=names, title="basin")
    else:
        colour = alt.Color(field=_field(color), type=_vl_type(data[color]), title=color)
    tooltip = [
        alt.Tooltip(field="text", type="nominal"),
        alt.Tooltip(field="basin_name", type="nominal", title="basin"),
    ]
    for col in extras:
        fmt = ".2f" if col == "strength" else ""
        tooltip.append(alt.Tooltip(field=_field(col), type=_vl_type(data[col]), format=fmt or alt.Undefined))
    encoding: dict[str, Any] = {
        "x": alt.X("x:Q", axis=None),
        "y": alt.Y("y:Q", axis=None),
        "color": colour,
        "tooltip": tooltip,
    }
    if facet:
        encoding["facet"] = alt.Facet(field=_field(facet), type="nominal", columns=3, title=facet)
    chart = alt.Chart(_inline(data), width=width, height=height).mark_circle(size=18, opacity=0.7)
    encoded: alt.Chart = chart.encode(**encoding)
    return encoded


def occupancy_bars(table: pd.DataFrame, *, by: str | Sequence[str] = "condition", width: int = 60) -> alt.LayerChart:
    """Bars of each condition's share of samples in each basin, with the bootstrap interval as whiskers.

    ``table`` is ``BasinMap.occupancy(by=...)`` with the same ``by``. Bars are grouped
    per basin (noise last) and coloured by condition, so a basin a condition gains or
    loses stands out next to the others; whiskers run from ``low`` to ``high``. Several
    ``by`` columns are joined into one condition label. ``width`` is pixels per basin.

    >>> plots.occupancy_bars(basins.occupancy())  # doctest: +SKIP
    """
    import altair as alt

    cols = [by] if isinstance(by, str) else list(by)
    table = _require(table, ["share", "low", "high"], "the occupancy table")
    _pixels("width", width)
    if "basin_name" not in table.columns and "basin" not in table.columns:
        raise DataError(f"the occupancy table needs a 'basin_name' or 'basin' column; got {list(table.columns)}")
    if not cols:
        raise ConfigError("by must name at least one condition column, got an empty list")
    for col in cols:
        _column(table, col, "by")
    names = _basin_names(table)
    labels = _labels(table)
    condition = table[cols].astype(str).agg(" / ".join, axis=1)
    label = " / ".join(cols)
    extras = [c for c in ("count", "samples") if c in table.columns]
    data = table[["share", "low", "high", *extras]].assign(basin_name=labels, condition=condition)
    order = sorted(data["condition"].unique())
    x = alt.X("basin_name:N", sort=names, title="basin", axis=alt.Axis(labelAngle=-30, labelLimit=160))
    offset = alt.XOffset("condition:N", sort=order)
    tooltip = [
        alt.Tooltip("condition:N", title=label),
        alt.Tooltip("basin_name:N", title="basin"),
        alt.Tooltip("share:Q", format=".1%"),
        alt.Tooltip("low:Q", format=".1%"),
        alt.Tooltip("high:Q", format=".1%"),
        *(alt.Tooltip(f"{c}:Q") for c in extras),
    ]
    base = alt.Chart(_inline(data)).encode(x=x, xOffset=offset)
    bars = base.mark_bar().encode(
        y=alt.Y("share:Q", title="share of samples", axis=alt.Axis(format="%")),
        color=alt.Color("condition:N", sort=order, title=label),
        tooltip=tooltip,
    )
    whiskers = base.mark_rule(color="black").encode(y="low:Q", y2="high:Q", tooltip=tooltip)
    return alt.LayerChart(layer=[bars, whiskers], width=alt.Step(max(4, width // max(1, len(order)))))


def divergence_heatmap(table: pd.DataFrame) -> alt.LayerChart:
    """A symmetric heat map of the Jensen-Shannon distance between conditions, labelled with JSD and p-value.

    ``table`` is ``BasinMap.divergence()``: one row per pair. Both triangles are filled
    (JSD is symmetric) and the diagonal is 0, so each row reads as "how far is this
    condition from every other one". The p-value shown is the adjusted one
    (``p_adjusted``) where the table has it.

    >>> plots.divergence_heatmap(basins.divergence(by="adapter"))  # doctest: +SKIP
    """
    import altair as alt
    import pandas as pd

    table = _require(table, ["a", "b", "jsd", "p_value"], "the divergence table")
    pairs = table[["a", "b"]].astype(str)
    if (pairs["a"] == pairs["b"]).any():
        bad = pairs[pairs["a"] == pairs["b"]].iloc[0]["a"]
        raise DataError(f"the divergence table compares {bad!r} with itself; expected pairs of distinct conditions")
    keys = [frozenset(p) for p in zip(pairs["a"], pairs["b"], strict=True)]
    if len(set(keys)) != len(keys):
        raise DataError("the divergence table lists a pair twice; expected one row per unordered pair")
    jsd = pd.to_numeric(table["jsd"], errors="coerce")
    p_value = pd.to_numeric(table["p_adjusted" if "p_adjusted" in table.columns else "p_value"], errors="coerce")
    if jsd.isna().any():
        raise DataError(f"jsd must be numbers; got {table['jsd'].tolist()[:5]}")
    rows = []
    for a, b, d, p in zip(pairs["a"], pairs["b"], jsd, p_value, strict=True):
        text = f"{d:.2f}" + ("" if pd.isna(p) else f"\np={p:.2g}")
        rows += [
            {"a": a, "b": b, "jsd": d, "p_value": p, "label": text},
            {"a": b, "b": a, "jsd": d, "p_value": p, "label": text},
        ]
    order = sorted(set(pairs["a"]) | set(pairs["b"]))
    rows += [{"a": c, "b": c, "jsd": 0.0, "p_value": None, "label": "0"} for c in order]
    data = pd.DataFrame(rows)
    top = max(float(jsd.max()), 1e-9)
    base = alt.Chart(_inline(data)).encode(
        x=alt.X("b:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("a:N", sort=order, title=None),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("jsd:Q", scale=alt.Scale(scheme="blues", domain=[0, top]), title="JSD"),
        tooltip=[
            alt.Tooltip("a:N"),
            alt.Tooltip("b:N"),
            alt.Tooltip("jsd:Q", format=".3f"),
            alt.Tooltip("p_value:Q", format=".3g", title="adjusted p" if "p_adjusted" in table.columns else "p"),
        ],
    )
    text = base.mark_text(lineBreak="\n", fontSize=11).encode(
        text="label:N",
        color=alt.condition(alt.datum.jsd > top / 2, alt.value("white"), alt.value("black")),
    )
    return alt.LayerChart(layer=[cells, text], width=alt.Step(72), height=alt.Step(44))


def transitions_chart(table: pd.DataFrame, *, a: str, b: str, names: Mapping[int, str] | None = None) -> alt.LayerChart:
    """A heat map of where paired samples go: basin under ``a`` (rows) to basin under ``b`` (columns).

    ``table`` is ``BasinMap.transitions(a, b)``; cells are coloured and labelled by
    ``share`` (of the pairs leaving the row's basin), with the pair count in the tooltip.
    ``names`` (basin -> name, e.g. ``BasinMap.basin_names()``) labels the basins;
    without it they read "basin 3" and "noise".

    >>> table = basins.transitions("base", "pirate")  # doctest: +SKIP
    >>> plots.transitions_chart(table, a="base", b="pirate", names=basins.basin_names())  # doctest: +SKIP
    """
    import altair as alt

    table = _require(table, ["from_basin", "to_basin", "count", "share"], "the transitions table")
    for param, value in (("a", a), ("b", b)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{param} must be the name of a condition (a non-empty string), got {value!r}")
    if names is not None and not isinstance(names, Mapping):
        raise ConfigError(f"names must map basin numbers to names, got {type(names).__name__}")
    try:
        basins = sorted({int(v) for v in (*table["from_basin"], *table["to_basin"])}, key=lambda v: (v == NOISE, v))
    except (TypeError, ValueError) as exc:
        raise DataError(f"from_basin and to_basin must be basin numbers (integers): {exc}") from exc
    order = [_basin_label(v, names) for v in basins]
    data = table[["count", "share"]].assign(
        from_name=[_basin_label(int(v), names) for v in table["from_basin"]],
        to_name=[_basin_label(int(v), names) for v in table["to_basin"]],
    )
    base = alt.Chart(_inline(data)).encode(
        x=alt.X("to_name:N", sort=order, title=f"basin under {b}", axis=alt.Axis(labelAngle=-30, labelLimit=160)),
        y=alt.Y("from_name:N", sort=order, title=f"basin under {a}", axis=alt.Axis(labelLimit=160)),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="oranges", domain=[0, 1]), title=f"share of {a} row"),
        tooltip=[
            alt.Tooltip("from_name:N", title=f"from ({a})"),
            alt.Tooltip("to_name:N", title=f"to ({b})"),
            alt.Tooltip("count:Q", title="pairs"),
            alt.Tooltip("share:Q", format=".1%"),
        ],
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("share:Q", format=".0%"),
        color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black")),
    )
    return alt.LayerChart(layer=[cells, text], width=alt.Step(48), height=alt.Step(28), title=f"{a} → {b}")
