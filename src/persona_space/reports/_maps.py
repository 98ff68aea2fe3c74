"""Mapping a run directory: fit (or reuse) a basin map, write its tables, charts and a Markdown summary."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space import _io
from persona_space.constants import BASE
from persona_space.errors import DataError
from persona_space.reports._markdown import markdown_table

if TYPE_CHECKING:
    import pandas as pd

    from persona_space.basins import BasinMap

__all__ = ["map_run", "summary_markdown"]


def map_run(
    samples: Any,
    out: str | os.PathLike[str],
    *,
    by: str | None = None,
    seed: int = 0,
    charts: bool = True,
    embedder: Any = None,
) -> tuple[BasinMap, str]:
    """Fit a map on ``samples`` (a SampleSet or table), save it in ``out``, write tables and charts.

    Returns the map and a Markdown summary: basins, occupancy with intervals, each
    condition's share differences from the base model (paired, Holm-adjusted),
    divergence between conditions and transitions from the base model. ``by`` names
    the conditions (default: ``condition``, or ``adapter`` in older tables).
    """
    from persona_space.basins import BasinMap, as_frame, condition_column

    frame = as_frame(samples)
    if frame.empty:
        raise DataError("the run holds no samples to map")
    by = by or condition_column(frame)
    folder = Path(out)
    balance = "adapter" if "adapter" in frame.columns else by if by in frame.columns else None
    fitted = BasinMap(embedder=embedder, seed=seed, balance_by=balance).fit(frame)
    fitted.save(folder)
    conditions = frame[by].nunique() if by in frame.columns else 0
    occupancy = fitted.occupancy(by=by) if conditions else None
    differences = None
    if conditions >= 2 and BASE in set(frame[by]):
        differences = fitted.occupancy_difference(BASE, by=by)
    divergence = fitted.divergence(by=by) if conditions >= 2 else None
    moves = _transitions_from_base(fitted, frame, by)
    tables = [("occupancy", occupancy), ("occupancy_difference", differences), ("divergence", divergence)]
    tables += [(f"transitions-{_slug(BASE)}-to-{_slug(c)}", t) for c, t in moves.items()]
    for name, table in tables:
        if table is not None:
            with _io.atomic_path(folder / f"{name}.csv") as tmp:
                table.to_csv(tmp, index=False)
    if charts:
        _write_charts(fitted, folder, by, occupancy, divergence, moves)
    return fitted, summary_markdown(fitted, occupancy, divergence, moves, differences)


def _transitions_from_base(fitted: BasinMap, frame: pd.DataFrame, by: str) -> dict[str, pd.DataFrame]:
    """Migration tables from the base model to every other condition whose samples pair with it."""
    if by not in frame.columns or BASE not in set(frame[by]):
        return {}
    out = {}
    for condition in sorted({c for c in frame[by] if c != BASE}, key=str):
        try:
            out[str(condition)] = fitted.transitions(BASE, condition, by=by)
        except DataError:
            continue  # these samples do not pair with the base model's (other probes or seeds)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "condition"


def _write_charts(
    fitted: BasinMap,
    folder: Path,
    by: str,
    occupancy: pd.DataFrame | None,
    divergence: pd.DataFrame | None,
    moves: dict[str, pd.DataFrame],
) -> None:
    from persona_space import plots

    table = fitted.to_frame()
    facet = by if by in table.columns else None
    plots.save_chart(plots.basin_map(table, facet=facet), folder / "basin_map")
    if occupancy is not None:
        plots.save_chart(plots.occupancy_bars(occupancy, by=by), folder / "occupancy")
    if divergence is not None and len(divergence):
        plots.save_chart(plots.divergence_heatmap(divergence), folder / "divergence")
    names = fitted.basin_names()
    for condition, moved in moves.items():
        chart = plots.transitions_chart(moved, a=BASE, b=condition, names=names)
        plots.save_chart(chart, folder / f"transitions-{_slug(BASE)}-to-{_slug(condition)}")


def summary_markdown(
    fitted: BasinMap,
    occupancy: pd.DataFrame | None,
    divergence: pd.DataFrame | None,
    moves: dict[str, pd.DataFrame] | None = None,
    differences: pd.DataFrame | None = None,
) -> str:
    """Basins with keywords, self-names and an exemplar; occupancy, differences, divergence and transitions."""
    import pandas as pd

    from persona_space.basins import stay_share

    lines = [f"{fitted!r}.", ""]
    rows = []
    shown_names = fitted.basin_names()
    for _, basin in fitted.basins_.iterrows():
        names = ", ".join(f"{n} ({c})" for n, c in basin["self_names"][:4]) or "-"
        example = (basin["exemplars"][0] if len(basin["exemplars"]) else "").replace("\n", " ")[:140]
        rows.append(
            {
                "basin": basin["basin"],
                "name": shown_names.get(basin["basin"], basin["name"]),
                "size": basin["size"],
                "self-names": names,
                "exemplar": example,
            }
        )
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    if occupancy is not None and len(occupancy):
        units = "; ".join(dict.fromkeys(occupancy["interval"]))
        keep = [c for c in occupancy.columns if c not in ("interval", "groups", "seeds", "seed_low", "seed_high")]
        if occupancy["seeds"].max() > 1:
            keep += ["seed_low", "seed_high"]
        lines += [f"Occupancy ({units}):", "", markdown_table(occupancy[keep]), ""]
    if differences is not None and len(differences):
        units = "; ".join(dict.fromkeys(differences["interval"]))
        shown = differences.sort_values("p_value", kind="stable")
        cols = ["condition" if "condition" in shown.columns else shown.columns[0], "basin_name", "reference_value"]
        cols += ["value", "difference", "low", "high", "p_value", "p_adjusted"]
        lines += [
            f"Share differences from {BASE} ({units}; p-values {differences['adjustment'].iloc[0]}):",
            "",
            markdown_table(shown[[c for c in cols if c in shown.columns]]),
            "",
        ]
    if divergence is not None:
        lines += [
            "Jensen-Shannon distance between conditions (permutation p-values within paired draws, "
            f"{divergence['adjustment'].iloc[0] if len(divergence) else 'no tests'}):",
            "",
            markdown_table(divergence),
            "",
        ]
    for condition, moved in (moves or {}).items():
        stayed, expected = stay_share(moved)
        top = moved[moved["from_basin"] != moved["to_basin"]].nlargest(5, "count")
        top = top.assign(
            **{
                "from": top["from_basin"].map(lambda b: shown_names.get(b, "noise")),
                "to": top["to_basin"].map(lambda b: shown_names.get(b, "noise")),
            }
        )[["from", "to", "count", "expected", "share"]]
        pairing = (
            "paired random streams"
            if bool(moved["paired_streams"].all())
            else "independent random streams: this is two draws side by side, not movement"
        )
        lines += [
            f"Transitions {BASE} -> {condition} ({pairing}): {stayed:.1%} of paired samples stay in their basin "
            f"({expected:.1%} would if the two answers were independent draws); largest moves:",
            "",
            markdown_table(top) if len(top) else "(none)",
            "",
        ]
    return "\n".join(lines)
