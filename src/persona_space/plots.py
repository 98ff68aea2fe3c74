"""Altair charts of basin maps and identity shifts, and a writer for HTML, Vega-Lite spec and PNG.

Each chart function takes one of the tables a :class:`~persona_space.basins.BasinMap`
produces (``to_frame()``, ``occupancy()``, ``divergence()``, ``transitions()``) or
``ShiftResult.shifts()`` and returns an Altair chart; :func:`save_chart` writes it as HTML, a Vega-Lite spec and a
PNG. Data is embedded as plain inline values, so maps with more than Altair's default
5,000 rows work without changing Altair's global data transformer.

Altair and pandas are imported inside the functions: importing persona_space stays fast.

>>> from persona_space import plots
>>> chart = plots.basin_map(basins.to_frame(), facet="adapter")  # doctest: +SKIP
>>> plots.save_chart(chart, "figures/basins")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_space import _io, _vega
from persona_space.constants import BASE, NOISE, NOISE_NAME
from persona_space.errors import ConfigError, DataError

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

    from persona_space.basins import BasinMap

__all__ = [
    "basin_map",
    "date_gradient",
    "divergence_heatmap",
    "dose_response",
    "entropy_chart",
    "leakage_chart",
    "mixing_comparison",
    "occupancy_area",
    "occupancy_bars",
    "rank_change_chart",
    "save_chart",
    "shift_bars",
    "style_bars",
    "training_loss",
    "transitions_chart",
]

NOISE_COLOR = "#b0b0b0"
# Tableau 20 without its greys, so no basin is mistaken for noise.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
    "#a0cbe8", "#ffbe7d", "#ff9d9a", "#86bcb6", "#8cd17d", "#f1ce63", "#d4a6c8", "#fabfd2", "#d7b5a6",
)  # fmt: skip
CONDITION_COLUMNS = ("adapter", "temperature", "probe_id")
_SUFFIXES = (".html", ".json", ".png", ".svg")


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


# -- charts ---------------------------------------------------------------------------------------


def _printable(text: str) -> str:
    """Drop control characters (other than newline and tab): SVG/PNG export rejects them."""
    return "".join(c for c in text if c in "\n\t" or not unicodedata.category(c).startswith("C"))


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


_SHIFT_METRICS = ("delta_logprob", "delta_mean_logprob", "delta_set_prob", "delta_pmi", "rank_change")


def shift_bars(table: pd.DataFrame, *, metric: str = "delta_logprob", width: int = 40) -> alt.LayerChart:
    """Per candidate, each adapter condition's shift against the base model, with its bootstrap interval.

    ``table`` is ``ShiftResult.shifts()``; ``metric`` one of its shift columns
    (``delta_logprob``, ``delta_mean_logprob``, ``delta_set_prob``, ``delta_pmi``,
    ``rank_change``), whose ``_low``/``_high`` columns give the whiskers. Candidates
    are ordered by their largest shift; a rule marks zero. ``width`` is pixels per candidate.

    >>> plots.shift_bars(shift.shifts(), metric="delta_logprob")  # doctest: +SKIP
    """
    import altair as alt

    if metric not in _SHIFT_METRICS:
        raise ConfigError(f"metric must be one of {', '.join(_SHIFT_METRICS)}, got {metric!r}")
    table = _require(table, ["condition", "candidate", metric], "the shifts table")
    _pixels("width", width)
    low, high = f"{metric}_low", f"{metric}_high"
    data = table[["condition", "candidate", metric]].assign(
        candidate=table["candidate"].astype(str).map(_printable),
        low=table[low] if low in table.columns else table[metric],
        high=table[high] if high in table.columns else table[metric],
        prompts=table["n_prompts"] if "n_prompts" in table.columns else None,
    )
    order = data.groupby("candidate")[metric].max().sort_values(ascending=False).index.tolist()
    conditions = sorted(data["condition"].astype(str).unique())
    title = metric.replace("_", " ")
    x = alt.X("candidate:N", sort=order, title="candidate", axis=alt.Axis(labelAngle=-40, labelLimit=180))
    offset = alt.XOffset("condition:N", sort=conditions)
    tooltip = [
        alt.Tooltip("condition:N"),
        alt.Tooltip("candidate:N"),
        alt.Tooltip(f"{_field(metric)}:Q", title=title, format=".3f"),
        alt.Tooltip("low:Q", format=".3f"),
        alt.Tooltip("high:Q", format=".3f"),
        alt.Tooltip("prompts:Q"),
    ]
    base = alt.Chart(_inline(data)).encode(x=x, xOffset=offset)
    bars = base.mark_bar().encode(
        y=alt.Y(f"{_field(metric)}:Q", title=f"{title} (adapter - base)"),
        color=alt.Color("condition:N", sort=conditions, title="adapter"),
        tooltip=tooltip,
    )
    whiskers = base.mark_rule(color="black").encode(y="low:Q", y2="high:Q", tooltip=tooltip)
    zero = alt.Chart(_inline(data.head(1))).mark_rule(color="#555", strokeDash=[4, 3]).encode(y=alt.datum(0))
    step = max(4, width // max(1, len(conditions)))
    return alt.LayerChart(layer=[bars, whiskers, zero], width=alt.Step(step))


def rank_change_chart(table: pd.DataFrame, *, top: int = 30) -> alt.FacetChart:
    """Where each candidate ranks under the base model and under each adapter (mean rank over prompts).

    ``table`` is ``ShiftResult.shifts()`` (``base_rank``, ``adapter_rank``); one line per
    candidate and condition runs from its base rank to its adapter rank, rank 1 on
    top, so the candidates an adapter promotes climb. ``top`` keeps the candidates
    with the best rank under either model.

    >>> plots.rank_change_chart(shift.shifts())  # doctest: +SKIP
    """
    import altair as alt
    import pandas as pd

    table = _require(table, ["condition", "candidate", "base_rank", "adapter_rank"], "the shifts table")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"top must be a positive integer, got {top!r}")
    best = table.assign(best=table[["base_rank", "adapter_rank"]].min(axis=1)).groupby("candidate")["best"].min()
    keep = set(best.nsmallest(top).index)
    rows = table[table["candidate"].isin(keep)]
    long = pd.concat(
        [
            rows.assign(model=BASE, rank=rows["base_rank"], step=0),
            rows.assign(model=rows["condition"].astype(str), rank=rows["adapter_rank"], step=1),
        ],
        ignore_index=True,
    )
    data = long[["condition", "candidate", "model", "rank", "step"]].assign(
        candidate=long["candidate"].astype(str).map(_printable),
        series=long["condition"].astype(str) + " · " + long["candidate"].astype(str).map(_printable),
    )
    tooltip = [alt.Tooltip("candidate:N"), alt.Tooltip("model:N"), alt.Tooltip("rank:Q", format=".2f")]
    base = alt.Chart().encode(
        x=alt.X("step:O", title=None, axis=alt.Axis(labelExpr=f"datum.value == 0 ? '{BASE}' : 'adapter'")),
        y=alt.Y("rank:Q", scale=alt.Scale(reverse=True, zero=False), title="mean rank in the candidate set"),
        color=alt.Color("candidate:N", legend=None),
        detail="series:N",
        tooltip=tooltip,
    )
    lines = base.mark_line(point=True)
    ends = base.transform_filter("datum.step == 1").mark_text(align="left", dx=6).encode(text="candidate:N")
    layered = alt.LayerChart(data=_inline(data), layer=[lines, ends]).properties(
        width=160, height=max(200, 14 * len(keep))
    )
    return layered.facet(column=alt.Column("condition:N", title="adapter"))


# -- saving ---------------------------------------------------------------------------------------


# -- dose sweeps ----------------------------------------------------------------------------


def _dose_rows(table: pd.DataFrame, measure: str | None) -> pd.DataFrame:
    """Rows of a sweep table that belong to a dose (not the base model), optionally of one measure."""
    table = _require(table, ["dose"], "the sweep table")
    rows = table[table["dose"].notna()]
    if measure is not None:
        rows = _require(rows, ["measure"], "the sweep table")
        rows = rows[rows["measure"] == measure]
        if rows.empty:
            found = sorted(map(str, table["measure"].unique())) if "measure" in table.columns else []
            raise DataError(f"the sweep table has no rows of measure {measure!r}; found {found}")
    return rows


def dose_response(
    table: pd.DataFrame, *, measure: str = "set_prob", curves: pd.DataFrame | None = None
) -> alt.LayerChart:
    """Per candidate, the estimate at each dose with its interval band; with ``curves``, the tipping doses.

    ``table`` is ``SweepResult.df``; ``measure`` one of its measures (``set_prob``,
    ``mention_share``, ``user_set_prob``, ``user_mention_share``). ``curves``
    (``SweepResult.curves``) adds a dashed rule at each candidate's crossing with the
    leading identity.

    >>> plots.dose_response(result.df, measure="set_prob", curves=result.curves)  # doctest: +SKIP
    """
    import altair as alt

    rows = _dose_rows(table, measure)
    mass = "set_logmass" in rows.columns and bool(rows["set_logmass"].notna().any())
    rows = rows[["dose", "candidate", "estimate", "low", "high", *(["set_logmass"] if mass else [])]]
    color = alt.Color("candidate:N", title="candidate")
    base = alt.Chart(_inline(rows)).encode(x=alt.X("dose:Q", title="dose"), color=color)
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=measure), y2="high:Q")
    tooltip: list[Any] = ["candidate:N", "dose:Q", alt.Tooltip("estimate:Q", format=".3f")]
    if mass:
        tooltip.append(alt.Tooltip("set_logmass:Q", format=".2f", title="set log-mass (nats)"))
    line = base.mark_line(point=True).encode(y="estimate:Q", tooltip=tooltip)
    layers: list[Any] = [band, line]
    if curves is not None and "crosses" in curves.columns:
        tips = curves[(curves["measure"] == measure) & curves["crosses"].notna()][["candidate", "crosses"]]
        if len(tips):
            layers.append(alt.Chart(_inline(tips)).mark_rule(strokeDash=[4, 3]).encode(x="crosses:Q", color=color))
    title: Any = f"{measure} by dose"
    if mass:  # a share within the set: say how much of the model's probability the set holds
        low, high = float(rows["set_logmass"].min()), float(rows["set_logmass"].max())
        title = alt.TitleParams(
            title, subtitle=f"a share of the set's mass: {math.exp(low):.2g} to {math.exp(high):.2g} of the probability"
        )
    return alt.LayerChart(layer=layers, width=360, height=220, title=title)


def occupancy_area(table: pd.DataFrame) -> Any:
    """The shared basin map's occupancy over the dose, as stacked areas (``SweepResult.tables["occupancy"]``)."""
    import altair as alt

    rows = _dose_rows(table, None)
    rows = _require(rows, ["share"], "the occupancy table")
    names = rows["basin_name"] if "basin_name" in rows.columns else rows["basin"].astype(str)
    data = rows[["dose", "share"]].assign(basin=names.map(_printable))
    return (
        alt.Chart(_inline(data))
        .mark_area()
        .encode(
            x=alt.X("dose:Q", title="dose"),
            y=alt.Y("share:Q", stack="normalize", title="share of samples"),
            color=alt.Color("basin:N", title="basin"),
            tooltip=["basin:N", "dose:Q", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(width=360, height=220, title="basins by dose")
    )


def entropy_chart(table: pd.DataFrame) -> Any:
    """Entropy of the named identities and the share of paired draws that switch, over the dose."""
    import altair as alt

    rows = _require(_dose_rows(table, None), ["entropy_bits", "switch_share"], "the oscillation table")
    measures = [c for c in ("entropy_bits", "set_entropy_bits", "switch_share") if c in rows.columns]
    long = rows.melt(id_vars=["dose"], value_vars=measures, var_name="what")
    return (
        alt.Chart(_inline(long))
        .mark_line(point=True)
        .encode(
            x=alt.X("dose:Q", title="dose"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("what:N", title=None),
            tooltip=["what:N", "dose:Q", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=360, height=200, title="oscillation by dose")
    )


def training_loss(table: pd.DataFrame) -> Any:
    """Training loss over the steps of one adapter (``AdapterRun.df``: ``step``, ``loss``)."""
    import altair as alt

    rows = _require(table, ["step", "loss"], "the training log").dropna(subset=["loss"])
    return (
        alt.Chart(_inline(rows[["step", "loss"]]))
        .mark_line(point=len(rows) <= 60)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("loss:Q", title="training loss", scale=alt.Scale(zero=False)),
            tooltip=["step:Q", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(width=420, height=200, title="training loss")
    )


def leakage_chart(table: pd.DataFrame, *, measures: Sequence[str] = ("position", "certainty")) -> Any:
    """Each adapter minus the base model per question category, with intervals: one panel per measure.

    ``table`` is ``LeakageResult.differences()``; points are differences, whiskers their
    intervals over questions, and a rule marks no change.

    >>> plots.leakage_chart(result.differences())  # doctest: +SKIP
    """
    import altair as alt

    rows = _require(table, ["condition", "category", "measure", "difference", "low", "high"], "the differences table")
    rows = rows[rows["measure"].isin(list(measures))]
    if rows.empty:
        raise DataError(f"the differences table has no rows of measures {list(measures)}")
    data = rows[["condition", "category", "measure", "difference", "low", "high"]]
    if "p_adjusted" in rows.columns:
        data = data.assign(p_adjusted=rows["p_adjusted"])
    tooltip = ["condition:N", "category:N", "measure:N", alt.Tooltip("difference:Q", format="+.3f")]
    tooltip += [alt.Tooltip("low:Q", format="+.3f"), alt.Tooltip("high:Q", format="+.3f")]
    y = alt.Y("category:N", title=None, sort=list(dict.fromkeys(data["category"])))
    base = alt.Chart().encode(y=y, yOffset=alt.YOffset("condition:N"), color=alt.Color("condition:N", title="adapter"))
    points = base.mark_point(filled=True, size=60).encode(
        x=alt.X("difference:Q", title="adapter - base"), tooltip=tooltip
    )
    whiskers = base.mark_rule().encode(x="low:Q", x2="high:Q")
    zero = alt.Chart().mark_rule(color="#555", strokeDash=[4, 3]).encode(x=alt.datum(0))
    return (
        alt.layer(whiskers, points, zero, data=_inline(data))
        .properties(width=260, height=alt.Step(14))
        .facet(column=alt.Column("measure:N", title=None, sort=list(measures)))
        .resolve_scale(x="independent")
    )


def style_bars(table: pd.DataFrame, *, measure: str = "n_chars") -> Any:
    """Mean answer length (or another style measure) per condition with its interval, as in the colour table.

    ``table`` is ``evals.style(samples)``; one bar per condition (and temperature).

    >>> plots.style_bars(evals.style(samples), measure="n_chars")  # doctest: +SKIP
    """
    import altair as alt

    rows = _require(table, ["condition", "measure", "estimate", "low", "high"], "the style table")
    rows = rows[rows["measure"] == measure]
    if rows.empty:
        raise DataError(f"the style table has no rows of measure {measure!r}")
    data = rows[["condition", "estimate", "low", "high"]].assign(
        temperature=rows["temperature"].astype(str) if "temperature" in rows.columns else "",
    )
    order = data.groupby("condition")["estimate"].mean().sort_values().index.tolist()
    titles = {"n_chars": "mean characters", "n_tokens": "mean tokens", "empty": "empty share"}
    title = titles.get(measure, measure.replace("_", " "))
    tooltip = ["condition:N", "temperature:N", alt.Tooltip("estimate:Q", format=".3g")]
    tooltip += [alt.Tooltip("low:Q", format=".3g"), alt.Tooltip("high:Q", format=".3g")]
    base = alt.Chart(_inline(data)).encode(
        x=alt.X("condition:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30)),
        xOffset=alt.XOffset("temperature:N"),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("estimate:Q", title=title), color=alt.Color("temperature:N", title="temperature"), tooltip=tooltip
    )
    whiskers = base.mark_rule(color="black").encode(y="low:Q", y2="high:Q")
    return alt.layer(bars, whiskers).properties(width=alt.Step(24), height=220, title=f"{title} per condition")


def date_gradient(
    table: pd.DataFrame,
    *,
    onsets: pd.DataFrame | None = None,
    trained: Sequence[tuple[float, float]] = (),
    measure: str | None = None,
) -> Any:
    """The trigger class's share over the date, with bands, the trained years shaded and the onsets marked.

    ``table`` is ``DateSweepResult.df``; ``trained`` lists the (first, last) years that had
    training data (the years between them are the gap); ``onsets`` is ``result.onsets``.
    One panel per measure (sampling, log-probability) unless ``measure`` picks one.

    >>> plots.date_gradient(result.df, onsets=result.onsets, trained=[(2016, 2020), (2031, 2035)])  # doctest: +SKIP
    """
    import altair as alt
    import numpy as np
    import pandas as pd

    rows = _require(table, ["condition", "year", "measure", "estimate", "low", "high"], "the date sweep table")
    if measure is not None:
        rows = rows[rows["measure"] == measure]
        if rows.empty:
            raise DataError(f"the date sweep table has no rows of measure {measure!r}")
    data = rows[["condition", "year", "measure", "estimate", "low", "high"]].assign(
        date=rows["date"] if "date" in rows.columns else rows["year"].round(2).astype(str)
    )
    tooltip = ["condition:N", "date:N", "measure:N", alt.Tooltip("estimate:Q", format=".3f")]
    tooltip += [alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")]
    x = alt.X("year:Q", title="date (year)", axis=alt.Axis(format="d"), scale=alt.Scale(zero=False))
    color = alt.Color("condition:N", title="condition")
    layers: list[Any] = []
    measures = list(dict.fromkeys(data["measure"]))  # every layer carries the facet field
    spans = pd.DataFrame(
        [
            {"start": float(first), "end": float(last) + 1.0, "label": "trained", "measure": m}
            for first, last in trained
            for m in measures
        ]
    )
    if len(spans):
        layers.append(
            alt.Chart(_inline(spans))
            .mark_rect(color="#d9d9d9", opacity=0.5)
            .encode(x="start:Q", x2="end:Q", tooltip=["label:N", "start:Q", "end:Q"])
        )
    layers.append(alt.Chart().mark_area(opacity=0.2).encode(x=x, y="low:Q", y2="high:Q", color=color))
    line = alt.Chart().mark_line(point=True).encode(x=x, color=color, tooltip=tooltip)
    share = alt.Y("estimate:Q", title="share of the trigger class", scale=alt.Scale(domain=[0, 1]))
    layers.append(line.encode(y=share))
    layers.append(alt.Chart().mark_rule(color="#555", strokeDash=[4, 3]).encode(y=alt.datum(0.5)))
    if onsets is not None and len(onsets) and "onset" in onsets.columns:
        marks = onsets[np.isfinite(onsets["onset"].to_numpy(dtype=np.float64))][["condition", "measure", "onset"]]
        marks = marks[marks["measure"].isin(measures)]
        if len(marks):
            layers.append(
                alt.Chart(_inline(marks))
                .mark_rule(strokeDash=[2, 2])
                .encode(x="onset:Q", color=color, tooltip=["condition:N", alt.Tooltip("onset:Q", format=".2f")])
            )
    chart = alt.layer(*layers, data=_inline(data)).properties(width=420, height=220)
    if data["measure"].nunique() > 1:
        return chart.facet(row=alt.Row("measure:N", title=None))
    return chart.properties(title=f"{data['measure'].iloc[0].replace('_', ' ')} over the date")


def mixing_comparison(tables: Mapping[str, pd.DataFrame], *, measure: str = "set_prob") -> alt.FacetChart:
    """Data mixing against weight mixing at matched doses: one line per route, one panel per candidate.

    ``tables`` maps a route's name (``"data"``, ``"weights"``) to its ``SweepResult.df``.

    >>> plots.mixing_comparison({"data": mixed.df, "weights": weighted.df})  # doctest: +SKIP
    """
    import altair as alt
    import pandas as pd

    if not tables:
        raise ConfigError("tables is empty; expected route name -> SweepResult.df")
    parts = [
        _dose_rows(t, measure)[["dose", "candidate", "estimate", "low", "high"]].assign(route=k)
        for k, t in tables.items()
    ]
    data = pd.concat(parts, ignore_index=True)
    base = alt.Chart().encode(x=alt.X("dose:Q", title="mixing ratio"), color=alt.Color("route:N", title="route"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=measure), y2="high:Q")
    line = base.mark_line(point=True).encode(y="estimate:Q", tooltip=["route:N", "dose:Q", "estimate:Q"])
    return (
        alt.layer(band, line, data=_inline(data))
        .properties(width=220, height=160)
        .facet(facet=alt.Facet("candidate:N", title=None), columns=3)
        .properties(title=f"{measure}: data mixing vs weight mixing")
    )


def save_chart(
    chart: alt.TopLevelMixin, path_without_suffix: str | os.PathLike[str], *, png: bool = True, scale: float = 2
) -> dict[str, Path]:
    """Write ``<path>.html``, ``<path>.vl.json`` (the Vega-Lite spec) and ``<path>.png``; return the paths.

    Every file is written atomically, so a reader never sees half a figure. The HTML
    page carries Vega, Vega-Lite and vega-embed inlined (about 0.9 MB, from vl-convert),
    so it draws offline and fetches nothing. The PNG is rendered from the spec by
    vl-convert; remote data URLs are refused, so it never touches the network either.

    >>> paths = plots.save_chart(chart, "figures/basins")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['html', 'png', 'vl.json']
    """
    import altair as alt

    if not isinstance(chart, alt.TopLevelMixin):
        raise ConfigError(f"expected an Altair chart, got {type(chart).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 10:
        raise ConfigError(f"scale must be a number in (0, 10], got {scale!r}")
    base = Path(path_without_suffix)
    if base.suffix.lower() in _SUFFIXES or not base.name:
        raise ConfigError(f"path {str(base)!r} should be given without a suffix, e.g. 'figures/basins'")
    spec = chart.to_dict()
    out = {"html": base.with_name(base.name + ".html"), "vl.json": base.with_name(base.name + ".vl.json")}
    _io.write_text(out["vl.json"], json.dumps(spec, indent=2) + "\n")
    _io.write_text(out["html"], _vega.chart_page(spec, title=base.name))
    if png:
        import vl_convert

        data = vl_convert.vegalite_to_png(
            spec, vl_version=_vega.vegalite_version(), scale=float(scale), allowed_base_urls=[]
        )
        out["png"] = base.with_name(base.name + ".png")
        with _io.atomic_path(out["png"]) as tmp:
            tmp.write_bytes(data)
    return out
