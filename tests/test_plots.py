"""Charts in ``persona_space.plots`` on small hand-built tables (no BasinMap fit, no model)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from browser import chart_states, remote_references, render
from persona_space import plots
from persona_space.errors import ConfigError, DataError

NAMES = {-1: "noise", 0: "pirate talk", 1: "helpful assistant", 2: "poet"}


def map_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like ``BasinMap.to_frame()``."""
    rng = np.random.default_rng(seed)
    basin = np.resize(np.array([-1, 0, 1, 2]), n)
    return pd.DataFrame(
        {
            "text": [f"I am sample {i}. " + "word " * int(rng.integers(1, 80)) for i in range(n)],
            "basin": basin,
            "basin_name": [NAMES[int(b)] for b in basin],
            "strength": rng.random(n),
            "x": rng.normal(size=n) + basin,
            "y": rng.normal(size=n),
            "novel": rng.random(n) < 0.05,
            "in_fit": True,
            "adapter": np.resize(np.array(["base", "pirate", "poet"]), n),
            "temperature": np.resize(np.array([0.7, 1.0]), n),
            "probe_id": "who-are-you",
        }
    )


def occupancy_table() -> pd.DataFrame:
    rows = []
    for adapter in ("base", "pirate"):
        for basin, share in zip((-1, 0, 1, 2), (0.1, 0.2, 0.3, 0.4), strict=True):
            rows.append(
                {
                    "adapter": adapter,
                    "basin": basin,
                    "samples": 100,
                    "count": int(share * 100),
                    "share": share,
                    "low": share - 0.05,
                    "high": share + 0.05,
                    "units": 10,
                    "basin_name": NAMES[basin],
                }
            )
    return pd.DataFrame(rows)


def divergence_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": ["base", "base", "pirate"],
            "b": ["pirate", "poet", "poet"],
            "jsd": [0.3, 0.5, 0.2],
            "p_value": [0.001, 0.001, 0.2],
            "effective_basins_a": [3.0, 3.0, 2.5],
            "effective_basins_b": [2.5, 2.0, 2.0],
        }
    )


def transitions_table() -> pd.DataFrame:
    table = pd.DataFrame({"from_basin": [-1, 0, 0, 1], "to_basin": [0, 0, 2, 1], "count": [3, 6, 2, 5]})
    table["share"] = table["count"] / table.groupby("from_basin")["count"].transform("sum")
    return table


def rows_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """All inline rows of a spec (Altair moves them to the top-level ``datasets``)."""
    return [row for values in spec.get("datasets", {}).values() for row in values]


def color_scale(spec: dict[str, Any]) -> dict[str, str]:
    scale = spec["encoding"]["color"]["scale"]
    return dict(zip(scale["domain"], scale["range"], strict=True))


# -- basin map ---------------------------------------------------------------------------------


def test_basin_map_encodings_tooltips_and_grey_noise() -> None:
    spec = plots.basin_map(map_frame(), tooltip_chars=20).to_dict()
    assert spec["mark"]["type"] == "circle"
    enc = spec["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"], enc["color"]["field"]) == ("x", "y", "basin_name")
    colours = color_scale(spec)
    assert colours["noise"] == plots.NOISE_COLOR
    assert list(colours)[-1] == "noise"  # noise last, basins in basin order
    assert len(set(colours.values())) == len(colours)
    fields = {t["field"] for t in enc["tooltip"]}
    assert {"text", "basin_name", "strength", "novel", "adapter", "temperature", "probe_id"} <= fields
    rows = rows_of(spec)
    assert len(rows) == 60
    assert all(len(r["text"]) <= 20 for r in rows)
    assert any(r["text"].endswith("…") for r in rows)
    assert "in_fit" not in rows[0]  # only the columns the chart uses travel


def test_basin_map_carries_6000_rows_without_global_settings() -> None:
    import altair as alt

    before = alt.data_transformers.active, dict(alt.data_transformers.options)
    frame = map_frame(6000)
    started = time.perf_counter()
    spec = plots.basin_map(frame).to_dict()
    assert time.perf_counter() - started < 10
    assert len(rows_of(spec)) == 6000
    assert (alt.data_transformers.active, dict(alt.data_transformers.options)) == before
    with pytest.raises(alt.MaxRowsError):  # the default limit still holds for plain DataFrames
        alt.Chart(frame).mark_point().to_dict()


def test_basin_map_facet_filter_and_other_colour() -> None:
    spec = plots.basin_map(map_frame(), facet="adapter", filter={"temperature": 1.0}).to_dict()
    assert spec["encoding"]["facet"]["field"] == "adapter"
    rows = rows_of(spec)
    assert len(rows) == 30 and {r["temperature"] for r in rows} == {1.0}
    spec = plots.basin_map(map_frame(), filter={"adapter": ["base", "poet"]}, color="adapter").to_dict()
    assert {r["adapter"] for r in rows_of(spec)} == {"base", "poet"}
    assert spec["encoding"]["color"]["field"] == "adapter"
    assert "scale" not in spec["encoding"]["color"]


def test_basin_map_accepts_basin_numbers_without_names() -> None:
    spec = plots.basin_map(map_frame().drop(columns="basin_name")).to_dict()
    assert color_scale(spec)["noise"] == plots.NOISE_COLOR
    assert "basin 0" in color_scale(spec)


def test_basin_map_bad_input() -> None:
    frame = map_frame()
    with pytest.raises(DataError, match="'x'"):
        plots.basin_map(frame.drop(columns="x"))
    with pytest.raises(ConfigError, match="facet='nope'"):
        plots.basin_map(frame, facet="nope")
    with pytest.raises(ConfigError, match="filter key='nope'"):
        plots.basin_map(frame, filter={"nope": 1})
    with pytest.raises(DataError, match="selects no rows"):
        plots.basin_map(frame, filter={"adapter": "missing"})
    with pytest.raises(ConfigError, match="color='nope'"):
        plots.basin_map(frame, color="nope")
    with pytest.raises(ConfigError, match="tooltip_chars"):
        plots.basin_map(frame, tooltip_chars=0)
    with pytest.raises(DataError, match="DataFrame"):
        plots.basin_map([1, 2, 3])


# -- occupancy, divergence, transitions ----------------------------------------------------------


def test_occupancy_bars_with_whiskers() -> None:
    spec = plots.occupancy_bars(occupancy_table(), by="adapter").to_dict()
    bars, whiskers = spec["layer"]
    assert bars["mark"]["type"] == "bar" and whiskers["mark"]["type"] == "rule"
    assert bars["encoding"]["y"]["field"] == "share"
    assert (whiskers["encoding"]["y"]["field"], whiskers["encoding"]["y2"]["field"]) == ("low", "high")
    assert bars["encoding"]["xOffset"]["field"] == "condition"
    assert bars["encoding"]["x"]["sort"] == ["pirate talk", "helpful assistant", "poet", "noise"]
    assert len(rows_of(spec)) == 8


def test_occupancy_bars_bad_input() -> None:
    with pytest.raises(ConfigError, match="by='probe_id'"):
        plots.occupancy_bars(occupancy_table(), by="probe_id")
    with pytest.raises(DataError, match="'low'"):
        plots.occupancy_bars(occupancy_table().drop(columns="low"))


def test_divergence_heatmap_is_symmetric_with_zero_diagonal() -> None:
    spec = plots.divergence_heatmap(divergence_table()).to_dict()
    cells, text = spec["layer"]
    assert cells["mark"]["type"] == "rect" and text["mark"]["type"] == "text"
    assert cells["encoding"]["color"]["field"] == "jsd"
    grid = {(r["a"], r["b"]): r for r in rows_of(spec)}
    assert len(grid) == 9
    assert grid["pirate", "base"]["jsd"] == grid["base", "pirate"]["jsd"] == 0.3
    assert all(grid[c, c]["jsd"] == 0 for c in ("base", "pirate", "poet"))
    assert grid["pirate", "poet"]["label"] == "0.20\np=0.2"


def test_divergence_heatmap_bad_input() -> None:
    with pytest.raises(DataError, match="'p_value'"):
        plots.divergence_heatmap(divergence_table().drop(columns="p_value"))
    with pytest.raises(DataError, match="twice"):
        plots.divergence_heatmap(pd.concat([divergence_table(), divergence_table().iloc[:1]]))


def test_transitions_chart_names_conditions_and_basins() -> None:
    spec = plots.transitions_chart(transitions_table(), a="base", b="pirate", names=NAMES).to_dict()
    cells, _ = spec["layer"]
    enc = cells["encoding"]
    assert enc["y"]["title"] == "basin under base" and enc["x"]["title"] == "basin under pirate"
    assert enc["color"]["field"] == "share"
    assert "count" in {t["field"] for t in enc["tooltip"]}
    assert enc["x"]["sort"] == ["pirate talk", "helpful assistant", "poet", "noise"]
    unnamed = plots.transitions_chart(transitions_table(), a="base", b="pirate").to_dict()
    assert unnamed["layer"][0]["encoding"]["y"]["sort"] == ["basin 0", "basin 1", "basin 2", "noise"]


def test_transitions_chart_bad_input() -> None:
    with pytest.raises(DataError, match="'count'"):
        plots.transitions_chart(transitions_table().drop(columns="count"), a="base", b="pirate")
    with pytest.raises(ConfigError, match="a must"):
        plots.transitions_chart(transitions_table(), a="", b="pirate")


def shifts_table() -> pd.DataFrame:
    """Rows shaped like ``ShiftResult.shifts()``: two conditions, three candidates."""
    rows = []
    for condition, bump in (("zorblax", 6.0), ("red", 0.5)):
        for k, candidate in enumerate(["Zorblax", "Emily", "an AI assistant"]):
            delta = bump if k == 0 else 0.1 * k
            rows.append(
                {
                    "condition": condition,
                    "candidate": candidate,
                    "n_prompts": 10,
                    "n_seeds": 1,
                    "base_rank": 3.0 - k,
                    "adapter_rank": 1.0 if k == 0 else 2.0 + (k == 2),
                    "delta_logprob": delta,
                    "delta_logprob_low": delta - 0.3,
                    "delta_logprob_high": delta + 0.3,
                    "rank_change": 2.0 if k == 0 else -0.5,
                    "rank_change_low": 1.0 if k == 0 else -1.0,
                    "rank_change_high": 2.0 if k == 0 else 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_shift_bars_with_whiskers_and_zero_line() -> None:
    spec = plots.shift_bars(shifts_table()).to_dict()
    bars, whiskers, zero = spec["layer"]
    assert bars["mark"]["type"] == "bar" and bars["encoding"]["y"]["field"] == "delta_logprob"
    assert bars["encoding"]["x"]["sort"][0] == "Zorblax"  # the largest shift first
    assert whiskers["encoding"]["y"]["field"] == "low" and whiskers["encoding"]["y2"]["field"] == "high"
    assert zero["encoding"]["y"]["datum"] == 0
    ranks = plots.shift_bars(shifts_table(), metric="rank_change").to_dict()
    assert ranks["layer"][0]["encoding"]["y"]["field"] == "rank_change"


def test_rank_change_chart_runs_from_base_to_adapter() -> None:
    spec = plots.rank_change_chart(shifts_table(), top=2).to_dict()
    assert spec["facet"]["column"]["field"] == "condition"
    values = rows_of(spec)
    assert {v["candidate"] for v in values} == {"Zorblax", "an AI assistant"}  # best rank 1 under some model
    assert {v["model"] for v in values} == {"base", "zorblax", "red"}
    assert spec["spec"]["layer"][0]["encoding"]["y"]["scale"]["reverse"] is True


def test_shift_charts_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metric must be one of"):
        plots.shift_bars(shifts_table(), metric="logprob")
    with pytest.raises(DataError, match="'delta_pmi'"):
        plots.shift_bars(shifts_table(), metric="delta_pmi")
    with pytest.raises(DataError, match="base_rank"):
        plots.rank_change_chart(shifts_table().drop(columns="base_rank"))
    with pytest.raises(ConfigError, match="top must be"):
        plots.rank_change_chart(shifts_table(), top=0)
    paths = plots.save_chart(plots.rank_change_chart(shifts_table()), tmp_path / "ranks", scale=1)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


# -- saving --------------------------------------------------------------------------------------


def test_save_chart_writes_html_spec_and_png(tmp_path: Path) -> None:
    chart = plots.divergence_heatmap(divergence_table())
    paths = plots.save_chart(chart, tmp_path / "figures" / "divergence", scale=1)
    assert sorted(paths) == ["html", "png", "vl.json"]
    folder = tmp_path / "figures"
    assert sorted(p.name for p in folder.iterdir()) == ["divergence.html", "divergence.png", "divergence.vl.json"]
    assert paths["png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads(paths["vl.json"].read_text())["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    page = paths["html"].read_text()
    assert "vegaEmbed" in page and remote_references(page) == []  # Vega inlined: it draws offline
    no_png = plots.save_chart(chart, tmp_path / "bare", png=False)
    assert sorted(no_png) == ["html", "vl.json"] and not (tmp_path / "bare.png").exists()


def test_every_chart_page_draws_offline_in_headless_chromium(tmp_path: Path) -> None:
    charts = {
        "map": plots.basin_map(map_frame(300), facet="adapter"),
        "divergence": plots.divergence_heatmap(divergence_table()),
        "ranks": plots.rank_change_chart(shifts_table()),
    }
    for name, chart in charts.items():
        page = plots.save_chart(chart, tmp_path / name, png=False)["html"]
        dom, console = render(page)
        assert chart_states(dom) == ["drawn"] and console == [], (name, console)


def test_save_chart_png_of_6000_points(tmp_path: Path) -> None:
    chart = plots.basin_map(map_frame(6000), facet="adapter")
    started = time.perf_counter()
    paths = plots.save_chart(chart, tmp_path / "map")
    seconds = time.perf_counter() - started
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert len(rows_of(json.loads(paths["vl.json"].read_text()))) == 6000
    assert seconds < 60, f"saving a 6,000-point map took {seconds:.1f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.html", "map.png", "map.vl.json"]


def test_save_chart_bad_input(tmp_path: Path) -> None:
    chart = plots.divergence_heatmap(divergence_table())
    with pytest.raises(ConfigError, match="without a suffix"):
        plots.save_chart(chart, tmp_path / "figure.png")
    with pytest.raises(ConfigError, match="scale"):
        plots.save_chart(chart, tmp_path / "figure", scale=0)
    with pytest.raises(ConfigError, match="Altair chart"):
        plots.save_chart({"mark": "point"}, tmp_path / "figure")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, persona_space; before = set(sys.modules); import persona_space.plots; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & {'altair', 'pandas', 'vl_convert'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
