"""Charts of training and evaluations: training loss, leakage, answer style and the date gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from persona_space.errors import DataError
from persona_space.plots._common import _inline, _require

if TYPE_CHECKING:
    import pandas as pd


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
