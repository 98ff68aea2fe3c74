"""Charts of identity shifts: per-candidate shift bars and rank changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from persona_space.constants import BASE
from persona_space.errors import ConfigError
from persona_space.plots._common import _field, _inline, _pixels, _printable, _require

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd


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
