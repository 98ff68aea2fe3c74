"""Charts of dose sweeps: dose response, occupancy and oscillation over the dose, data against weight mixing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from persona_space.errors import ConfigError, DataError
from persona_space.plots._common import _inline, _printable, _require

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd


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
