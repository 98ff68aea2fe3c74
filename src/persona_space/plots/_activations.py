"""Charts of activation space: persona space with roles and adapters, a direction by layer, drift over turns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persona_space.plots._common import _inline, _printable, _require

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd


def persona_space_map(roles: pd.DataFrame, placed: pd.DataFrame | None = None, *, label: str = "condition") -> Any:
    """The roles of a persona space on its first two components (``PersonaSpace.df``), coloured by category,
    with the assistant marked; ``placed`` (``PersonaSpace.place(...)``: adapters, steerings) added as crosses
    labelled by their ``label`` column.

    >>> plots.persona_space_map(space.df, space.place(acts))  # doctest: +SKIP
    """
    import altair as alt

    table = _require(roles, ["role", "category", "pc1", "pc2", "axis_projection"], "the persona space table")
    points = table[["role", "category", "pc1", "pc2", "axis_projection"]].assign(
        role=table["role"].map(_printable), kind="role"
    )
    base = alt.Chart(_inline(points)).encode(
        x=alt.X("pc1:Q", title="PC1 (oriented toward the assistant)"),
        y=alt.Y("pc2:Q", title="PC2"),
        tooltip=["role:N", "category:N", alt.Tooltip("axis_projection:Q", format=".2f", title="on the axis")],
    )
    dots = base.mark_circle(size=60, opacity=0.8).encode(color=alt.Color("category:N", title="category"))
    names = base.mark_text(dx=6, dy=-6, fontSize=9, align="left").encode(text="role:N")
    layers: list[Any] = [dots, names]
    if placed is not None and len(placed):
        extra = _require(placed, [label, "pc1", "pc2"], "the placed table")
        shown = extra[[label, "pc1", "pc2"]].assign(name=extra[label].astype(str).map(_printable))
        cross = alt.Chart(_inline(shown)).encode(x="pc1:Q", y="pc2:Q", tooltip=["name:N"])
        names_placed = cross.mark_text(dx=7, dy=8, fontSize=10, fontWeight="bold", align="left").encode(text="name:N")
        layers += [cross.mark_point(shape="cross", size=120, color="black", filled=True), names_placed]
    return alt.LayerChart(layer=layers, width=460, height=360, title="persona space: roles on the first two components")


def layer_profile(layers: pd.DataFrame, *, title: str = "separation by layer") -> alt.LayerChart:
    """A direction's separation (Cohen's d) and length at each layer (``Direction.df``), the chosen layer marked."""
    import altair as alt

    table = _require(layers, ["layer", "norm", "separation", "chosen"], "the layer table")
    long = table.melt(id_vars=["layer", "chosen"], value_vars=["separation", "norm"], var_name="what")
    line = (
        alt.Chart(_inline(long))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="decoder layer"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("what:N", title=None),
            tooltip=["layer:Q", "what:N", alt.Tooltip("value:Q", format=".3g")],
        )
    )
    chosen = table[table["chosen"].astype(bool)][["layer"]]
    rule = alt.Chart(_inline(chosen)).mark_rule(strokeDash=[4, 3], color="gray").encode(x="layer:Q")
    return alt.LayerChart(layer=[line, rule], width=360, height=200, title=title)


def drift_chart(table: pd.DataFrame, *, by: str = "condition") -> alt.LayerChart:
    """The mean projection at each turn of a conversation with its interval band, one line per ``by`` value
    (columns ``turn``, ``by``, ``estimate``, ``low``, ``high``: an :func:`~persona_space.estimates.estimate_table`
    of :func:`~persona_space.activations.drift`'s projections by turn)."""
    import altair as alt

    rows = _require(table, ["turn", by, "estimate", "low", "high"], "the drift table")
    data = rows[["turn", by, "estimate", "low", "high"]].assign(**{by: rows[by].astype(str).map(_printable)})
    base = alt.Chart(_inline(data)).encode(x=alt.X("turn:O", title="turn"), color=alt.Color(f"{by}:N", title=by))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title="projection on the axis"), y2="high:Q")
    line = base.mark_line(point=True).encode(
        y="estimate:Q", tooltip=[f"{by}:N", "turn:O", alt.Tooltip("estimate:Q", format=".3g")]
    )
    return alt.LayerChart(layer=[band, line], width=360, height=220, title="drift along the axis, turn by turn")
