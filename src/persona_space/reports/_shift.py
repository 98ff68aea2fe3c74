"""Writing an identity-shift result: the shifts table, charts and a Markdown summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from persona_space import _io
from persona_space.constants import BASE
from persona_space.reports._markdown import markdown_table

if TYPE_CHECKING:
    from persona_space.logprobs import ShiftResult

__all__ = ["write_shift_report"]


def write_shift_report(result: ShiftResult, out: str | os.PathLike[str], *, charts: bool = True, top: int = 15) -> str:
    """``shifts.csv`` (aggregated, with intervals), ``shifts_by_prompt.csv``, charts; returns the summary.

    The summary lists, per adapter condition, the ``top`` candidates by shift in
    total log-probability with 95 % bootstrap intervals over prompts (and seeds),
    the mean rank under base and adapter, and how often each was the greedy answer.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shifts = result.shifts()
    with _io.atomic_path(folder / "shifts.csv") as tmp:
        shifts.to_csv(tmp, index=False)
    with _io.atomic_path(folder / "shifts_by_prompt.csv") as tmp:
        result.shifts(by_prompt=True).to_csv(tmp, index=False)
    if charts:
        from persona_space import plots

        plots.save_chart(plots.shift_bars(shifts), folder / "shift_bars")
        plots.save_chart(plots.rank_change_chart(shifts), folder / "rank_change")
    params = result.manifest.get("parameters", {})
    prefix = params.get("answer_prefix") or ""
    lines = [
        f"{result!r}; scored as the assistant's answer"
        + (f" after {prefix!r}" if prefix else "")
        + (", with the end-of-turn token" if params.get("end_of_turn") else "")
        + f", ranked by {params.get('normalize', 'sum')} log-probability ({result.manifest.get('method', '?')}).",
        "",
    ]
    adapter_rows = result.df[result.df["adapter"] != BASE]
    greedy = adapter_rows.groupby(["condition", "candidate"])["greedy"].mean()
    for condition, rows in shifts.groupby("condition", sort=False):
        table = rows.head(top).assign(
            shift=lambda t: t.apply(
                lambda r: f"{r['delta_logprob']:+.2f} [{r['delta_logprob_low']:+.2f}, {r['delta_logprob_high']:+.2f}]",
                axis=1,
            ),
            greedy=[float(greedy.get((condition, c), 0.0)) for c in rows.head(top)["candidate"]],
        )[
            [
                "candidate",
                "base_logprob",
                "adapter_logprob",
                "shift",
                "p_adjusted",
                "base_rank",
                "adapter_rank",
                "greedy",
                *(["adapter_set_logmass"] if rows["adapter_set_logmass"].notna().any() else []),
            ]
        ]
        seeds = int(rows["n_seeds"].iloc[0])
        lines += [
            f"Adapter `{condition}` against the base model ({int(rows['n_prompts'].iloc[0])} prompts in "
            f"{int(rows['n_groups'].iloc[0])} question groups"
            + (f", {seeds} training seeds" if seeds > 1 else "")
            + f"; shift = adapter minus base total log-probability in nats, {rows['interval'].iloc[0]}; "
            f"p-values of the {rows['tested'].iloc[0]} shift, {rows['adjustment'].iloc[0]}; "
            "ranks are means over prompts and seeds; greedy = share of prompts (x seeds) where it is the "
            "adapter's greedy answer, every token the most likely one"
            + (
                f"; adapter_set_logmass = mean log-probability (nats) the whole candidate set holds under the adapter "
                f"(base {rows['base_set_logmass'].mean():.2f}), what set probabilities are shares of"
                if rows["adapter_set_logmass"].notna().any()
                else ""
            )
            + "):",
            "",
            markdown_table(table, digits=2),
            "",
        ]
    return "\n".join(lines)
