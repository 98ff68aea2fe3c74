"""One family of results: ``.df``, ``.manifest``, ``save``/``load``, one schema version, columns that join."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import persona_space as ps
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
        tiny_model, {"red": [adapter_a]}, candidates=["Maria", "Voyager"], prompts=PROBES, progress=False
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
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(40, 16)) for c in centres]).astype(np.float32)
    frame = pd.DataFrame(
        {
            "text": [f"persona {k} sample {i}" for k in range(3) for i in range(40)],
            "condition": ["a", "b"] * 60,
            "adapter": ["a", "b"] * 60,
            "probe_id": [f"p{i % 4}" for i in range(120)],
            "group": [f"p{i % 4}" for i in range(120)],
        }
    )
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
    info = ps.train_adapter(tiny_model, data, out=tmp_path / "red", **spec.options(), progress=False)
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
    shifted = ps.identity_shift(tiny_model, adapter_a, prompts=PROBES, **shift_spec.options(), progress=False)
    assert shifted.manifest["parameters"]["end_of_turn"] is True
    assert shifted.manifest["parameters"]["candidates"] == ["Maria", "Voyager"]
