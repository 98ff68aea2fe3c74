"""Mapping a run directory: fit (or reuse) a basin map, write its tables, charts and a Markdown summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space import _io
from persona_space.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from persona_space.basins._map import BasinMap


def map_run(
    samples: Any,
    out: str | os.PathLike[str],
    *,
    by: str = "adapter",
    seed: int = 0,
    charts: bool = True,
    embedder: Any = None,
) -> tuple[BasinMap, str]:
    """Fit a map on ``samples`` (a SampleSet or table), save it in ``out``, write tables and charts.

    Returns the map and a Markdown summary (basins, occupancy with intervals,
    divergence between conditions). Charts need the conditions in ``by``.
    """
    from persona_space.basins._map import BasinMap, as_frame

    frame = as_frame(samples)
    if frame.empty:
        raise DataError("the run holds no samples to map")
    folder = Path(out)
    fitted = BasinMap(embedder=embedder, seed=seed, balance_by=by if by in frame.columns else None).fit(frame)
    fitted.save(folder)
    conditions = frame[by].nunique() if by in frame.columns else 0
    occupancy = fitted.occupancy(by=by) if conditions else None
    divergence = fitted.divergence(by=by) if conditions >= 2 else None
    for name, table in (("occupancy", occupancy), ("divergence", divergence)):
        if table is not None:
            with _io.atomic_path(folder / f"{name}.csv") as tmp:
                table.to_csv(tmp, index=False)
    if charts:
        _write_charts(fitted, folder, by, occupancy, divergence)
    return fitted, summary_markdown(fitted, occupancy, divergence)


def _write_charts(
    fitted: BasinMap, folder: Path, by: str, occupancy: pd.DataFrame | None, divergence: pd.DataFrame | None
) -> None:
    from persona_space import plots

    table = fitted.to_frame()
    facet = by if by in table.columns else None
    plots.save_chart(plots.basin_map(table, facet=facet), folder / "basin_map")
    if occupancy is not None:
        plots.save_chart(plots.occupancy_bars(occupancy, by=by), folder / "occupancy")
    if divergence is not None and len(divergence):
        plots.save_chart(plots.divergence_heatmap(divergence), folder / "divergence")


def summary_markdown(fitted: BasinMap, occupancy: pd.DataFrame | None, divergence: pd.DataFrame | None) -> str:
    """Basins with keywords, self-names and an exemplar; occupancy and divergence tables."""
    from persona_space.report import markdown_table

    lines = [f"{fitted!r}.", ""]
    rows = []
    for _, basin in fitted.basins_.iterrows():
        names = ", ".join(f"{n} ({c})" for n, c in basin["self_names"][:4]) or "-"
        example = (basin["exemplars"][0] if len(basin["exemplars"]) else "").replace("\n", " ")[:140]
        rows.append(
            {
                "basin": basin["basin"],
                "name": basin["name"],
                "size": basin["size"],
                "self-names": names,
                "exemplar": example,
            }
        )
    import pandas as pd

    lines += [markdown_table(pd.DataFrame(rows)), ""]
    if occupancy is not None:
        shown = occupancy.drop(columns=["units"], errors="ignore")
        lines += ["Occupancy (cluster bootstrap over prompts, 95 % intervals):", "", markdown_table(shown), ""]
    if divergence is not None:
        lines += [
            "Jensen-Shannon distance between conditions (permutation p-values):",
            "",
            markdown_table(divergence),
            "",
        ]
    return "\n".join(lines)
