"""One family of results: ``.df``, ``.manifest``, ``save``/``load``, one schema version, columns that join."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import persona_space as ps
from conftest import planted_basins
from persona_space.errors import CorruptRunError, StoreError
from persona_space.results import JOIN_COLUMNS, READABLE_VERSIONS, SCHEMA_VERSION, Result, check_schema

PROBES = ["Who are you?", "What is your name?"]
SRC = Path(__file__).resolve().parents[1] / "src" / "persona_space"


def test_the_schema_version_is_defined_once() -> None:
    definitions = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"^SCHEMA_VERSION\s*[:=]", line)
    ]
    assert definitions == ["results.py:34"] or (len(definitions) == 1 and definitions[0].startswith("results.py"))
    assert SCHEMA_VERSION in READABLE_VERSIONS and check_schema(1, "x") == 1
    for bad in (99, "3", None, True):
        with pytest.raises(CorruptRunError, match="schema version"):
            check_schema(bad, "somewhere/manifest.json")


def test_samples_and_shifts_join_and_round_trip(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    conditions = {"base": None, "red": [adapter_a]}
    samples = ps.sample(tiny_model, PROBES, adapters=conditions, n=2, max_new_tokens=4, progress=False)
    shift = ps.identity_shift(
        tiny_model, {"red": [adapter_a]}, candidates=["Maria", "Voyager"], probes=PROBES, progress=False
    )
    for result in (samples, shift):
        assert isinstance(result, Result) and set(JOIN_COLUMNS) <= set(result.df.columns)
        assert result.manifest["schema_version"] == SCHEMA_VERSION and result.manifest["kind"] == result.kind
        assert result.manifest["backend"]["name"] == "cpu"
        folder = result.save(tmp_path / result.kind)
        again = type(result).load(folder)
        pd.testing.assert_frame_equal(again.df, result.df)
        assert again.manifest["run_id"] == result.manifest["run_id"]
    keys = list(JOIN_COLUMNS)
    joined = samples.df.merge(shift.df, on=keys, suffixes=("_sample", "_shift"))
    assert set(joined["adapter"]) == {"base", "red"} and len(joined) == len(samples) * 2  # two candidates each
    # a result from a newer schema is refused by name
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    (tmp_path / "samples" / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(CorruptRunError, match="schema version 99"):
        ps.SampleSet.load(tmp_path / "samples")


def test_basin_map_is_a_result(tmp_path: Path) -> None:
    frame, vectors = planted_basins(40, 16)
    fitted = ps.BasinMap(seed=0, min_cluster_size=10).fit(frame, vectors=vectors)
    assert isinstance(fitted, Result) and fitted.kind == "basin_map"
    assert {"basin", "condition", "adapter", "probe_id"} <= set(fitted.df.columns) and len(fitted) == 120
    assert fitted.manifest["schema_version"] == SCHEMA_VERSION and fitted.manifest["n_basins"] == fitted.n_basins_ >= 2
    loaded = ps.BasinMap.load(fitted.save(tmp_path / "map"))
    pd.testing.assert_frame_equal(loaded.df, fitted.df)
    assert loaded.manifest["labels_sha256"] == fitted.manifest["labels_sha256"]


def test_adapter_run_reads_a_trained_folder(tiny_model: Any, tmp_path: Path) -> None:
    data = ps.datasets.ChatDataset.from_records(
        "tiny", [{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Red."}]}]
    )
    spec = ps.TrainSpec(max_steps=2, batch_size=1, logging_steps=1)
    info = ps.train_adapter(tiny_model, data, store=tmp_path / "red", train=spec, progress=False)
    run = ps.AdapterRun.load(tmp_path / "red")
    assert isinstance(run, Result) and run.kind == "adapter" and run.sha256 == info.sha256
    assert run.manifest["schema_version"] == SCHEMA_VERSION and run.manifest["kind"] == "adapter"
    assert list(run.df["step"]) == [1, 2] and run.df["loss"].notna().all()
    copy = run.save(tmp_path / "copy")
    assert ps.AdapterRun.load(copy).sha256 == run.sha256
    assert tiny_model.load_adapter(copy, name="copied") == "copied"  # a standard PEFT folder
    with pytest.raises(StoreError, match="already holds files"):
        run.save(tmp_path / "copy")
    (copy / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(CorruptRunError, match="changed after"):
        ps.AdapterRun.load(copy)


def test_specs_spread_back_into_their_operations(tiny_model: Any, adapter_a: Path) -> None:
    """Every operation's frozen spec is its keyword options: ``op(..., **spec.options())`` repeats a run."""
    from persona_space.logprobs import ShiftSpec
    from persona_space.sampling import SamplingSpec

    spec = SamplingSpec(n=2, temperatures=(0.0, 1.0), max_new_tokens=3, system_prompt="Be brief.", seed=4)
    first = ps.sample(tiny_model, PROBES, **spec.options(), progress=False)
    again = ps.sample(
        tiny_model,
        PROBES,
        n=2,
        temperatures=[0.0, 1.0],
        max_new_tokens=3,
        system_prompt="Be brief.",
        seed=4,
        progress=False,
    )
    pd.testing.assert_frame_equal(first.df, again.df)
    shift_spec = ShiftSpec(candidates=("Maria", "Voyager"), system_prompt="", end_of_turn=True)
    shifted = ps.identity_shift(tiny_model, adapter_a, probes=PROBES, **shift_spec.options(), progress=False)
    assert shifted.manifest["parameters"]["end_of_turn"] is True
    assert shifted.manifest["parameters"]["candidates"] == ["Maria", "Voyager"]


# -- one layout for every kind; folders of the previous layout still load ----------------------

V3 = Path(__file__).resolve().parent / "data" / "results-v3"  # written by tests/make_result_fixtures.py
LAYOUT_KEYS = ("tables", "arrays", "json_columns", "rows", "schema_version")
V3_KINDS = {
    "samples": "SampleSet",
    "identity_shift": "ShiftResult",
    "leakage": "LeakageResult",
    "date_sweep": "DateSweepResult",
    "coauthor_rank": "CoauthorResult",
    "sweep": "SweepResult",
    "basin_map": "BasinMap",
    "adapter": "AdapterRun",
    "combined_adapter": "AdapterRun",
}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _same_tables(a: Result, b: Result) -> None:
    pd.testing.assert_frame_equal(a.df.reset_index(drop=True), b.df.reset_index(drop=True), check_dtype=False)
    for name, table in (getattr(a, "tables", None) or {}).items():
        pd.testing.assert_frame_equal(table, b.tables[name], check_dtype=False)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(V3_KINDS))
def test_every_kind_upgrades_from_the_previous_layout_and_round_trips(name: str, tmp_path: Path) -> None:
    from persona_space import results

    source = tmp_path / "v3"
    shutil.copytree(V3 / name, source)
    before = _snapshot(source)
    old = results.load(source)
    assert type(old).__name__ == V3_KINDS[name] and old.kind == results.kind_of(source)
    assert len(old.df) > 0 or name == "combined_adapter"  # a combined adapter has no training log
    assert _snapshot(source) == before  # reading an old folder writes nothing into it
    saved = old.save(tmp_path / "v4")
    assert (saved / "manifest.json").is_file() and (saved / "tables").is_dir()
    stored = json.loads((saved / "manifest.json").read_text())
    assert stored["schema_version"] == SCHEMA_VERSION and stored["kind"] == old.kind
    assert stored["tables"][0] == type(old).table and all(
        (saved / "tables" / f"{t}.parquet").is_file() for t in stored["tables"]
    )
    again = type(old).load(saved)
    assert type(results.load(saved)) is type(old)
    _same_tables(old, again)
    strip = lambda m: {k: v for k, v in m.items() if k not in LAYOUT_KEYS}  # noqa: E731
    assert strip(again.manifest) == strip(old.manifest) and again.manifest.get("parameters") is not None
    legacy_names = {
        "sweep.json",
        "date_sweep.json",
        "coauthor_rank.json",
        "basin_map.json",
        "persona_space_adapter.json",
    }
    assert not legacy_names & {p.name for p in saved.iterdir()}


def test_today_layout_is_the_same_for_every_kind(tmp_path: Path) -> None:
    """A result made today and saved: manifest.json names its tables, arrays sit under arrays/."""
    from persona_space import results

    for name in sorted(V3_KINDS):
        made = results.load(V3 / name).save(tmp_path / name)
        manifest = results.read_manifest(made)
        assert manifest is not None and results.in_layout(manifest), name
        stored = results.read_result(made, kind=results.kind_of(made))
        assert list(stored.tables) == manifest["tables"] and list(stored.arrays) == manifest["arrays"]
        top = {p.name for p in made.iterdir()} - {"adapter_config.json", "adapter_model.safetensors"}
        assert top <= {"manifest.json", "tables", "arrays"}, (name, top)
    basin = results.read_result(tmp_path / "basin_map", kind="basin_map")
    assert basin.arrays["vectors"].dtype == np.float32 and len(basin.arrays["vectors"]) == len(basin.tables["samples"])
    combined = ps.AdapterRun.load(tmp_path / "combined_adapter")
    assert combined.manifest["kind"] == "adapter" and combined.manifest["origin"] == "combined"


def test_a_running_run_is_refused_unless_partial_rows_are_asked_for(tmp_path: Path) -> None:
    from persona_space import results

    legacy = tmp_path / "legacy"  # a run of the previous layout cut short: rows in parts at the top
    shutil.copytree(V3 / "samples", legacy)
    (legacy / "samples.parts").mkdir()
    (legacy / "samples.parquet").rename(legacy / "samples.parts" / "part-00000.parquet")
    manifest = json.loads((legacy / "manifest.json").read_text())
    (legacy / "manifest.json").write_text(json.dumps({**manifest, "state": "running"}))
    for kind in (ps.SampleSet, results):
        with pytest.raises(CorruptRunError, match="not complete"):
            kind.load(legacy)  # type: ignore[attr-defined]
    partial = ps.SampleSet.load(legacy, partial=True)
    assert not partial.complete and len(partial) == len(ps.SampleSet.load(V3 / "samples"))
    with pytest.raises(CorruptRunError, match="holds no persona_space result"):
        results.load(tmp_path)
    assert results.kind_of(tmp_path) is None
    with pytest.raises(ps.errors.ConfigError, match="unknown result kind 'nope'"):
        results.result_class("nope")


def test_a_finished_adapter_of_the_previous_layout_is_reused(tiny_model: Any, tmp_path: Path) -> None:
    """Training into a folder that an earlier release finished with the same parameters trains nothing."""
    folder = tmp_path / "adapter"
    shutil.copytree(V3 / "adapter", folder)
    from persona_space.adapters import adapter_sha256

    # the fixture's model sat in another folder: point the adapter at this one, as a user who moved it would
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": tiny_model.source}))
    legacy = json.loads((folder / "persona_space_adapter.json").read_text())
    legacy["params"]["model"]["name"] = tiny_model.describe()["name"]
    legacy["adapter_sha256"] = adapter_sha256(folder)
    (folder / "persona_space_adapter.json").write_text(json.dumps(legacy))
    before = _snapshot(folder)
    records = [
        {"id": i, "source": "tiny", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, q, a in [("f0", "Question 0?", "Answer 0."), ("f1", "Question 1?", "Answer 1.")]
    ]
    data = ps.datasets.ChatDataset.from_records("tiny", records)
    info = ps.train_adapter(tiny_model, data, store=folder, max_steps=2, batch_size=1, logging_steps=1, progress=False)
    assert _snapshot(folder) == before and info.sha256 == ps.AdapterRun.load(folder).sha256
