"""``ps.sample``: rows, determinism, batching, adapters, the run directory and resuming (tiny llama)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import persona_space as ps
from conftest import EOS_ID
from persona_space import provenance
from persona_space.adapters import adapter_sha256
from persona_space.errors import ConfigError, CorruptRunError, StoreMismatchError
from persona_space.probes import ProbeSet
from persona_space.sampling import COLUMNS, SampleSet, SamplingSpec, row_seed
from persona_space.sampling._runner import _ChunkWriter
from persona_space.store import RunStore

PROBES = ProbeSet.from_list(["Who are you?", "What does an ordinary day look like for you?"], name="t")
DEFAULTS: dict[str, Any] = {"n": 3, "temperatures": [0.7, 1.0], "max_new_tokens": 5, "seed": 0, "progress": False}


def run(model: Any, probes: Any = PROBES, **kwargs: Any) -> SampleSet:
    return ps.sample(model, probes, **{**DEFAULTS, **kwargs})


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def attach(model: Any, **folders: Path) -> dict[str, str | None]:
    """Attach adapters (skipping the name check); return conditions for sample()."""
    for name, folder in folders.items():
        model.load_adapter(folder, name=name, check_base=False)
    return {"base": None, **{name: name for name in folders}}


def bias_towards_eos(model: Any, prompt: str = "Who are you?") -> None:
    """Give the LM head a bias so that EOS has about half the probability at the first step."""
    ids = torch.tensor([model.encode(prompt)])
    with torch.inference_mode():
        logits = model.base_module(ids).logits[0, -1].float()
    others = torch.cat((logits[:EOS_ID], logits[EOS_ID + 1 :]))
    head = model.base_module.get_output_embeddings()
    bias = torch.zeros(head.out_features)
    bias[EOS_ID] = float(torch.logsumexp(others, 0) - logits[EOS_ID])
    head.bias = torch.nn.Parameter(bias, requires_grad=False)


# -- the table ----------------------------------------------------------------------------------


def test_rows_columns_and_seeds(tiny_model: Any) -> None:
    samples = run(tiny_model)
    df = samples.df
    assert tuple(df.columns) == COLUMNS
    assert len(df) == len(samples) == 1 * 2 * 2 * 3
    keys = list(zip(df["adapter"], df["probe_id"], df["temperature"], df["sample_index"], strict=True))
    expected = [("base", p, t, i) for p in PROBES.ids for t in (0.7, 1.0) for i in range(3)]
    assert keys == expected  # every sample once, in canonical order
    for row in df.itertuples():
        assert row.seed == row_seed(0, row.probe_id, row.temperature, row.sample_index)
        assert row.condition == row.adapter == "base" and math.isnan(row.train_seed)
        assert row.prompt == PROBES[row.probe_id].prompt
        assert row.group == row.probe_id and row.category == "custom"
        assert 1 <= row.n_tokens <= 5
        assert (row.finish_reason == "length") == (row.n_tokens == 5)
    assert set(df["run_id"]) == {samples.manifest["run_id"]}
    assert set(df["schema_version"]) == {ps.results.SCHEMA_VERSION} and set(df["top_p"]) == {1.0}
    assert df["text"].str.len().gt(0).all()
    assert samples.complete and samples.path is None


def test_row_count_is_conditions_probes_temperatures_n(tiny_model: Any, adapter_a: Path) -> None:
    conditions = attach(tiny_model, a=adapter_a)
    samples = run(tiny_model, adapters=conditions, n=2, temperatures=[0.0, 0.5, 1.5], max_new_tokens=2)
    assert len(samples) == 2 * 2 * (1 + 2 + 2)  # one greedy row per probe and condition
    sizes = samples.df.groupby(["adapter", "probe_id", "temperature"]).size()
    assert sizes.eq(sizes.index.get_level_values("temperature").map({0.0: 1, 0.5: 2, 1.5: 2})).all()


def test_batch_size_does_not_change_the_table(tiny_model: Any) -> None:
    auto = run(tiny_model, batch_size="auto").df
    assert auto["text"].nunique() == len(auto)  # sampled, not collapsed
    for batch_size in (1, 5):
        other = run(tiny_model, batch_size=batch_size).df
        pd.testing.assert_frame_equal(other, auto)


def test_same_call_is_repeatable_and_seed_changes_texts(tiny_model: Any) -> None:
    first = run(tiny_model).df
    pd.testing.assert_frame_equal(run(tiny_model).df, first)
    other = run(tiny_model, seed=1).df
    assert (other["text"] != first["text"]).all()
    assert (other["seed"] != first["seed"]).all()


def test_temperature_zero_is_greedy_and_tiny_top_p_is_greedy(tiny_model: Any) -> None:
    greedy = run(tiny_model, temperatures=[0.0], n=3, max_new_tokens=6).df
    assert len(greedy) == len(PROBES)  # one greedy answer per probe
    expected = [tiny_model.generate_greedy(p.prompt, max_new_tokens=6) for p in PROBES]
    assert greedy.groupby("probe_id", sort=False)["text"].first().str.strip().tolist() == expected
    nucleus = run(tiny_model, temperatures=[1.0], top_p=1e-6, n=3, max_new_tokens=6).df
    assert nucleus.groupby("probe_id")["text"].nunique().eq(1).all()
    assert nucleus.groupby("probe_id", sort=False)["text"].first().tolist() == greedy["text"].tolist()


def test_max_new_tokens_reached_gives_length(tiny_model: Any) -> None:
    df = run(tiny_model, max_new_tokens=7).df
    assert (df["finish_reason"] == "length").all()
    assert (df["n_tokens"] == 7).all()


def test_empty_completions_are_kept_and_counted(tiny_model: Any) -> None:
    bias_towards_eos(tiny_model)
    samples = run(tiny_model, n=12, temperatures=[1.0], max_new_tokens=4)
    df = samples.df
    assert len(df) == 24
    empty = df[df["n_tokens"] == 0]
    assert 0 < len(empty) < len(df)
    assert (empty["text"] == "").all() and (empty["finish_reason"] == "stop").all()
    stopped = df[df["finish_reason"] == "stop"]
    assert (stopped["n_tokens"] < 4).all()
    summary = samples.summary()
    assert list(summary.columns) == [
        "condition",
        "temperature",
        "samples",
        "groups",
        "seeds",
        *[
            f"{m}{s}"
            for m in ("mean_tokens", "mean_chars", "empty_share", "truncated_share")
            for s in ("", "_low", "_high")
        ],
        "interval",
    ]
    row = summary.iloc[0]
    assert row["empty_share_low"] <= row["empty_share"] <= row["empty_share_high"]
    assert row["empty_share_high"] < 1.0
    assert row["samples"] == 24 and row["groups"] == 2 and row["seeds"] == 1
    assert row["interval"] == "95% bootstrap over 2 question groups, 2000 resamples"
    assert row["mean_chars"] == pytest.approx(df["text"].str.len().mean())
    assert row["empty_share"] == pytest.approx((df["text"].str.strip() == "").mean())
    assert row["empty_share"] >= len(empty) / len(df)
    assert row["truncated_share"] == pytest.approx((df["finish_reason"] == "length").mean())
    assert row["mean_tokens"] == pytest.approx(df["n_tokens"].mean())


def test_ignore_eos_runs_every_sample_to_the_limit(tiny_model: Any) -> None:
    bias_towards_eos(tiny_model)
    assert (run(tiny_model, n=12, temperatures=[1.0], max_new_tokens=4).df["n_tokens"] < 4).any()
    df = run(tiny_model, n=12, temperatures=[1.0], max_new_tokens=4, ignore_eos=True).df
    assert (df["n_tokens"] == 4).all() and (df["finish_reason"] == "length").all()
    assert "<|im_end|>" not in "".join(df["text"])


# -- adapters -----------------------------------------------------------------------------------


def test_mixed_adapter_batches_equal_one_adapter_at_a_time(
    tiny_model_dir: Path, adapter_a: Path, adapter_b: Path
) -> None:
    mixed_model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    conditions = attach(mixed_model, a=adapter_a, b=adapter_b)
    mixed = run(mixed_model, adapters=conditions).df
    assert list(mixed["adapter"].unique()) == ["base", "a", "b"]

    single_model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    attach(single_model, a=adapter_a, b=adapter_b)
    for name, adapter in conditions.items():
        alone = run(single_model, adapters={name: adapter}).df
        part = mixed[mixed["adapter"] == name].drop(columns="run_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(alone.drop(columns="run_id"), part)

    # Base rows equal a model that never saw an adapter; adapter rows differ from them and each other.
    plain = run(ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")).df
    base = mixed[mixed["adapter"] == "base"].reset_index(drop=True)
    assert base["text"].tolist() == plain["text"].tolist()
    texts = {name: mixed.loc[mixed["adapter"] == name, "text"].tolist() for name in conditions}
    for name in ("a", "b"):
        assert sum(x != y for x, y in zip(texts[name], texts["base"], strict=True)) >= len(base) - 1
    assert texts["a"] != texts["b"]


def test_sample_attaches_adapter_folders(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    samples = run(tiny_model, adapters={"base": None, "a": adapter_a}, store=tmp_path / "run")
    assert list(samples.df["adapter"].unique()) == ["base", "a"]
    assert tiny_model.adapters["a"].sha256 == adapter_sha256(adapter_a)
    assert samples.manifest["parameters"]["adapters"] == {"base": None, "a": adapter_sha256(adapter_a)}


# -- run directories ----------------------------------------------------------------------------


def test_store_round_trip_and_manifest(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    store = tmp_path / "run"
    samples = run(tiny_model, adapters=attach(tiny_model, a=adapter_a), store=store, chunk_rows=5)
    assert samples.path == store
    assert (store / "tables" / "samples.parquet").is_file() and not (store / "tables" / "samples.parts").exists()
    loaded = SampleSet.load(store)
    order = ["adapter", "probe_id", "temperature", "sample_index"]  # see the next test for the row order
    pd.testing.assert_frame_equal(
        loaded.df.sort_values(order, ignore_index=True), samples.df.sort_values(order, ignore_index=True)
    )
    assert loaded.manifest == json.loads(json.dumps(samples.manifest, default=str))
    assert loaded.complete and loaded.path == store

    m = loaded.manifest
    assert m["kind"] == "samples" and m["state"] == "complete" and m["rows"] == len(samples) == 24
    assert re.fullmatch(r"[0-9a-f]{16}", m["run_id"])
    params = m["parameters"]
    assert {k: params[k] for k in ("n", "temperatures", "top_p", "max_new_tokens", "seed", "ignore_eos")} == {
        "n": 3,
        "temperatures": [0.7, 1.0],
        "top_p": 1.0,
        "max_new_tokens": 5,
        "seed": 0,
        "ignore_eos": False,
    }
    assert params["system_prompt"] == ps.DEFAULT_SYSTEM_PROMPT
    assert params["probes"] == PROBES.to_records()
    assert params["adapters"] == {"base": None, "a": adapter_sha256(adapter_a)}
    assert re.fullmatch(r"[0-9a-f]{64}", params["adapters"]["a"])
    assert m["run_id"] == provenance.sha256_json(params)[:16]
    assert params["model"]["weights_sha256"] == tiny_model.weights_sha256
    assert re.fullmatch(r"[0-9a-f]{64}", m["model"]["weights_sha256"])
    assert m["model"]["adapters"]["a"]["sha256"] == adapter_sha256(adapter_a)
    env = m["environment"]
    assert env["persona_space"] == ps.__version__
    assert env["packages"]["torch"] == importlib.metadata.version("torch")
    assert {"transformers", "peft", "pandas", "pyarrow"} <= set(env["packages"])
    timings = m["timings"]
    assert timings["new_rows"] == 24 and timings["new_tokens"] == int(samples.df["n_tokens"].sum())
    assert timings["seconds"] >= 0
    assert m["backend"]["name"] == "cpu" and m["backend"]["batch_size"] >= 1
    assert m["backend"]["shared_prefix_tokens"] > 0 and m["backend"]["capabilities"]["paired_streams"]


def test_load_round_trips_exactly_with_alphabetical_conditions(tiny_model: Any, tmp_path: Path) -> None:
    samples = run(tiny_model, adapters={"base": None, "zzz": None}, store=tmp_path / "run")
    pd.testing.assert_frame_equal(SampleSet.load(tmp_path / "run").df, samples.df)


def test_load_keeps_the_condition_order_of_the_call(tiny_model: Any, tmp_path: Path) -> None:
    samples = run(tiny_model, adapters={"base": None, "a": None}, store=tmp_path / "run")
    assert list(samples.df["adapter"].unique()) == ["base", "a"]
    pd.testing.assert_frame_equal(SampleSet.load(tmp_path / "run").df, samples.df)


def test_completed_run_reruns_with_nothing_new(tiny_model: Any, tmp_path: Path) -> None:
    store = tmp_path / "run"
    first = run(tiny_model, store=store)
    again = run(tiny_model, store=store)
    pd.testing.assert_frame_equal(again.df, first.df)
    assert again.manifest["timings"]["new_rows"] == 0
    assert again.manifest["run_id"] == first.manifest["run_id"]
    assert again.manifest["created"] == first.manifest["created"]


def _crash_after_appends(monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    """Make the run die (as if killed) once ``parts`` chunks have been written."""
    real_append = RunStore.append
    calls = {"n": 0}

    def append(self: RunStore, rows: Any) -> Path:
        if calls["n"] >= parts:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        return real_append(self, rows)

    monkeypatch.setattr(RunStore, "append", append)


def test_resume_after_a_crash_between_chunks(tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run(tiny_model, store=tmp_path / "whole", chunk_rows=4)
    store = tmp_path / "crashed"
    with monkeypatch.context() as patch:
        _crash_after_appends(patch, parts=2)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(tiny_model, store=store, chunk_rows=4)
    parts = sorted((store / "tables" / "samples.parts").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    with pytest.raises(ps.errors.CorruptRunError, match="not complete"):
        SampleSet.load(store)
    partial = SampleSet.load(store, partial=True)
    assert not partial.complete and len(partial) == 8
    assert partial.manifest["run_id"] == whole.manifest["run_id"]

    resumed = run(tiny_model, store=store, chunk_rows=4, batch_size=2)
    df = resumed.df
    keys = list(zip(df["adapter"], df["probe_id"], df["temperature"], df["sample_index"], strict=True))
    assert len(keys) == len(set(keys)) == len(whole.df)  # no duplicates, nothing missing
    assert resumed.manifest["timings"]["new_rows"] == len(whole.df) - 8
    assert resumed.manifest["run_id"] == whole.manifest["run_id"]
    assert resumed.complete and not (store / "tables" / "samples.parts").exists()
    columns = [c for c in COLUMNS if c != "seed"]
    pd.testing.assert_frame_equal(df[columns], whole.df[columns])
    pd.testing.assert_frame_equal(SampleSet.load(store).df[columns], whole.df[columns])


def test_parts_stored_by_an_older_schema_resume_in_todays_columns(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(tiny_model, chunk_rows=4)
    store = tmp_path / "old"
    with monkeypatch.context() as patch:
        _crash_after_appends(patch, parts=2)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(tiny_model, store=store, chunk_rows=4)
    parts = sorted((store / "tables" / "samples.parts").glob("part-*.parquet"))
    assert len(parts) == 2
    (store / "samples.parts").mkdir()  # schema 1 kept its parts at the top and had no condition or train seed
    for part in parts:
        old = pd.read_parquet(part).drop(columns=["condition", "train_seed"])
        old.to_parquet(store / "samples.parts" / part.name, index=False)
    shutil.rmtree(store / "tables")
    manifest = json.loads((store / "manifest.json").read_text())
    legacy = {k: v for k, v in manifest.items() if k not in ("tables", "arrays", "json_columns")}
    (store / "manifest.json").write_text(json.dumps({**legacy, "schema_version": 1}))
    resumed = run(tiny_model, store=store, chunk_rows=4)
    assert resumed.manifest["timings"]["new_rows"] == len(whole.df) - 8
    assert resumed.manifest["schema_version"] == ps.results.SCHEMA_VERSION
    columns = [c for c in COLUMNS if c not in ("seed", "run_id")]
    pd.testing.assert_frame_equal(resumed.df[columns], whole.df[columns])
    pd.testing.assert_frame_equal(SampleSet.load(store).df[columns], whole.df[columns])
    assert sorted(p.name for p in store.iterdir()) == ["manifest.json", "tables"]  # finished in today's layout


def test_resumed_table_equals_an_uninterrupted_one_exactly(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(tiny_model, store=tmp_path / "whole", chunk_rows=2)
    store = tmp_path / "crashed"
    with monkeypatch.context() as patch:
        _crash_after_appends(patch, parts=3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(tiny_model, store=store, chunk_rows=2)
    resumed = run(tiny_model, store=store, chunk_rows=2)
    pd.testing.assert_frame_equal(resumed.df, whole.df)
    pd.testing.assert_frame_equal(SampleSet.load(store).df, whole.df)


def test_resume_after_an_interrupt_keeps_finished_rows(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(tiny_model)
    store = tmp_path / "run"
    real_add = _ChunkWriter.add
    seen = {"n": 0}

    def add(self: _ChunkWriter, row: dict[str, Any]) -> None:
        real_add(self, row)
        seen["n"] += 1
        if seen["n"] == 7:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(_ChunkWriter, "add", add)
        with pytest.raises(KeyboardInterrupt):
            run(tiny_model, store=store, chunk_rows=5)
    assert (
        len(SampleSet.load(store, partial=True)) == 7
    )  # one full chunk of 5 plus the 2 pending rows flushed on the way out
    resumed = run(tiny_model, store=store, chunk_rows=5)
    assert resumed.manifest["timings"]["new_rows"] == len(whole.df) - 7
    columns = [c for c in COLUMNS if c != "seed"]
    pd.testing.assert_frame_equal(resumed.df[columns], whole.df[columns])


def test_stale_temporary_files_are_removed_on_resume(tiny_model: Any, tmp_path: Path) -> None:
    store = tmp_path / "run"
    run(tiny_model, store=store)
    (store / ".tmp-manifest.json.abc").write_text("half", encoding="utf-8")
    run(tiny_model, store=store)
    assert not list(store.glob(".tmp-*"))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"n": 4}, "n"),
        ({"temperatures": [0.7]}, "temperatures"),
        ({"system_prompt": "You are a pirate."}, "system_prompt"),
        ({"max_new_tokens": 6}, "max_new_tokens"),
        ({"seed": 1}, "seed"),
        ({"probes": ProbeSet.from_list(["Who are you?"], name="t")}, "probes"),
    ],
)
def test_store_made_with_other_parameters_is_refused(
    tiny_model: Any, tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    store = tmp_path / "run"
    run(tiny_model, store=store)
    before = snapshot(store)
    with pytest.raises(StoreMismatchError, match=re.escape(key)):
        run(tiny_model, **{"store": store, **change})
    assert snapshot(store) == before


def test_corrupt_manifest_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    store = tmp_path / "run"
    run(tiny_model, store=store)
    (store / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptRunError, match=re.escape("manifest.json")):
        run(tiny_model, store=store)
    with pytest.raises(CorruptRunError):
        SampleSet.load(store)
    (store / "manifest.json").write_text("[]", encoding="utf-8")
    with pytest.raises(CorruptRunError, match="parameters"):
        run(tiny_model, store=store)


def test_load_of_a_folder_without_a_run(tmp_path: Path) -> None:
    with pytest.raises(CorruptRunError, match=re.escape("no manifest.json")):
        SampleSet.load(tmp_path)


# -- parameter validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"n": 0}, "0"),
        ({"n": 2.5}, "2.5"),
        ({"temperatures": [-1.0]}, "-1.0"),
        ({"temperatures": [float("nan")]}, "nan"),
        ({"temperatures": [float("inf")]}, "inf"),
        ({"temperatures": []}, "temperatures"),
        ({"temperatures": [0.7, 0.7]}, "(0.7, 0.7)"),
        ({"top_p": 0.0}, "0.0"),
        ({"top_p": 1.5}, "1.5"),
        ({"max_new_tokens": 0}, "0"),
        ({"seed": -1}, "-1"),
        ({"seed": 2**63}, str(2**63)),
        ({"system_prompt": 3}, "3"),
    ],
)
def test_sampling_spec_validation(kwargs: dict[str, Any], shown: str) -> None:
    if "temperatures" in kwargs:
        kwargs = {"temperatures": tuple(kwargs["temperatures"])}
    with pytest.raises(ConfigError, match=re.escape(shown)):
        SamplingSpec(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"n": 0}, "got 0"),
        ({"temperatures": -1}, "-1.0"),
        ({"temperatures": [float("nan")]}, "nan"),
        ({"temperatures": [1.0, 1.0]}, "(1.0, 1.0)"),
        ({"top_p": 0}, "0.0"),
        ({"top_p": 1.5}, "1.5"),
        ({"max_new_tokens": 0}, "got 0"),
        ({"seed": -1}, "-1"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "big"}, "'big'"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"adapters": {}}, "adapters"),
        ({"adapters": {"bad name": None}}, "'bad name'"),
    ],
)
def test_sample_rejects_bad_parameters_before_writing(
    tiny_model: Any, tmp_path: Path, kwargs: dict[str, Any], shown: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(shown)):
        run(tiny_model, store=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_sampling_spec_defaults_and_to_dict() -> None:
    spec = SamplingSpec()
    assert spec.to_dict() == {
        "n": 16,
        "temperatures": [1.0],
        "top_p": 1.0,
        "max_new_tokens": 128,
        "system_prompt": ps.DEFAULT_SYSTEM_PROMPT,
        "seed": 0,
        "ignore_eos": False,
        "pairing": "paired",
    }
    assert SamplingSpec(temperatures=(0.0,)).temperatures == (0.0,)


def test_auto_batch_size_fits_the_memory_budget(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_space.engine import _cpu as _runner

    assert _runner.auto_batch_size(tiny_model, 100) == _runner.AUTO_SLOTS["cpu"]
    # K and V, 2 layers, 2 kv heads, head_dim 16, float32: 512 bytes per position and slot.
    per_slot = 2 * 2 * 2 * 16 * 100 * 4
    monkeypatch.setattr(_runner, "memory_budget", lambda model: 5 * per_slot + 1)
    assert _runner.auto_batch_size(tiny_model, 100) == 5
    monkeypatch.setattr(_runner, "memory_budget", lambda model: 0)
    assert _runner.auto_batch_size(tiny_model, 100) == 1
    df = run(tiny_model, n=2, temperatures=[1.0]).df  # one slot at a time still works
    monkeypatch.undo()
    pd.testing.assert_frame_equal(run(tiny_model, n=2, temperatures=[1.0]).df, df)


def test_row_seed_is_stable_and_distinguishes_every_field() -> None:
    base = row_seed(0, "p", 1.0, 0)
    assert base == row_seed(0, "p", 1, 0)  # an int temperature is the same as its float
    assert 0 <= base < 2**64
    variants = {
        row_seed(1, "p", 1.0, 0),
        row_seed(0, "p", 1.0, 0, "a"),  # an independent stream per condition
        row_seed(0, "p", 1.0, 0, "b"),
        row_seed(0, "q", 1.0, 0),
        row_seed(0, "p", 0.7, 0),
        row_seed(0, "p", 1.0, 1),
    }
    assert base not in variants and len(variants) == 6


def test_sample_set_repr_and_probe_set_by_name(tiny_model: Any) -> None:
    samples = ps.sample(tiny_model, "identity:artificiality", n=1, temperatures=0.0, max_new_tokens=1, progress=False)
    assert len(samples) == 3
    assert repr(samples) == "SampleSet(3 rows, adapters=['base'])"


def test_custom_system_prompt_changes_rows(tiny_model: Any, make_tiny_model_dir: Callable[..., Path]) -> None:
    default = run(tiny_model, temperatures=[0.0], n=1).df
    pirate = run(tiny_model, temperatures=[0.0], n=1, system_prompt="You are a pirate.").df
    assert default["text"].tolist() != pirate["text"].tolist()
    model = ps.load_model(
        str(make_tiny_model_dir("llama")), device="cpu", dtype="float32", system_prompt="You are a pirate."
    )
    pd.testing.assert_frame_equal(run(model, temperatures=[0.0], n=1).df, pirate)


def test_unsupported_model_writes_nothing(tiny_model: Any, tmp_path: Path) -> None:
    """Asking the cpu backend for an architecture it cannot drive fails before the run directory exists."""
    from dataclasses import replace as dc_replace

    from transformers import GPT2Config, GPT2LMHeadModel

    from persona_space.errors import UnsupportedModelError

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    model = dc_replace(tiny_model, module=gpt2)
    with pytest.raises(UnsupportedModelError, match=r"gpt2.*backend='hf'"):
        run(model, store=tmp_path / "run", backend="cpu")
    assert not (tmp_path / "run").exists()


# -- paired random streams --------------------------------------------------------------------


def test_an_adapter_that_changes_nothing_gives_the_base_texts(tiny_model: Any, tmp_path: Path) -> None:
    """Paired streams: a zero-B LoRA (as freshly initialised) answers exactly as the base model does."""
    from conftest import make_lora

    zero = make_lora(Path(tiny_model.source), tmp_path / "zero", seed=3, scale=0.0)
    df = run(tiny_model, adapters={"base": None, "zero": zero}, n=8, max_new_tokens=6).df
    base, adapter = df[df["condition"] == "base"], df[df["condition"] == "zero"]
    assert len(base) == len(adapter) == 2 * 2 * 8
    assert base["text"].tolist() == adapter["text"].tolist()
    assert base["seed"].tolist() == adapter["seed"].tolist()
    # independent streams: the same adapter gives other texts
    df = run(tiny_model, adapters={"base": None, "zero": zero}, n=8, max_new_tokens=6, pairing="independent").df
    base, adapter = df[df["condition"] == "base"], df[df["condition"] == "zero"]
    assert (base["text"].to_numpy() != adapter["text"].to_numpy()).mean() > 0.5


def test_a_small_adapter_changes_few_tokens_when_paired(
    make_tiny_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    """Most paired answers of a slightly perturbed model are the base model's own; independent ones are not.

    The tiny model has wide random weights so that its next-token distributions are
    peaked, as a trained model's are (a flat distribution over 49k tokens moves its
    inverse-CDF pick with the slightest change).
    """
    from conftest import make_lora

    folder = make_tiny_model_dir("llama", initializer_range=1.0)
    model = ps.load_model(str(folder), device="cpu", dtype="float32")
    small = make_lora(folder, tmp_path / "small", seed=3, scale=0.01)
    same = {}
    for pairing in ("paired", "independent"):
        df = run(
            model, adapters={"base": None, "small": small}, n=16, temperatures=[1.0], max_new_tokens=6, pairing=pairing
        ).df
        base, adapter = df[df["condition"] == "base"], df[df["condition"] == "small"]
        assert base["text"].nunique() > 20  # sampled, not collapsed onto a few answers
        same[pairing] = float((base["text"].to_numpy() == adapter["text"].to_numpy()).mean())
    assert same["paired"] > 0.5 and same["independent"] < 0.2, same


def test_several_seeds_per_condition_and_the_pairing_in_the_manifest(
    tiny_model: Any, adapter_a: Path, adapter_b: Path, tmp_path: Path
) -> None:
    samples = run(tiny_model, adapters={"base": None, "lora": [adapter_a, adapter_b]}, n=2, store=tmp_path / "r")
    df = samples.df
    assert list(dict.fromkeys(df["adapter"])) == ["base", "lora:0", "lora:1"]
    assert list(dict.fromkeys(df["condition"])) == ["base", "lora"]
    assert df.loc[df["adapter"] == "lora:1", "train_seed"].unique().tolist() == [1.0]
    assert df.loc[df["condition"] == "base", "train_seed"].isna().all()
    assert samples.manifest["parameters"]["pairing"] == "paired"
    assert samples.manifest["parameters"]["conditions"]["lora:0"] == {"condition": "lora", "train_seed": 0}
    summary = samples.summary()
    assert summary.loc[summary["condition"] == "lora", "seeds"].unique().tolist() == [2]
    assert "x 2 training seeds" in summary.loc[summary["condition"] == "lora", "interval"].iloc[0]
    for share in ("empty_share", "truncated_share"):  # shares stay in [0, 1]; none at 0 or 1 claims certainty
        low, value, high = summary[f"{share}_low"], summary[share], summary[f"{share}_high"]
        assert ((low >= 0) & (low <= value) & (value <= high) & (high <= 1)).all()
        assert (high[value == 0] > 0).all() and (low[value == 1] < 1).all()
    loaded = SampleSet.load(tmp_path / "r")
    pd.testing.assert_frame_equal(loaded.df, df)


def test_greedy_sampling_keeps_one_row_per_probe(tiny_model: Any) -> None:
    df = run(tiny_model, n=4, temperatures=[0.0, 1.0]).df
    assert (df["temperature"] == 0.0).sum() == len(PROBES)  # n identical greedy rows would count as n
    assert (df["temperature"] == 1.0).sum() == 4 * len(PROBES)


def test_compare_gives_paired_differences_with_adjusted_p_values(tiny_model: Any, tmp_path: Path) -> None:
    from conftest import make_lora
    from persona_space.stats import describe_adjustment

    zero = make_lora(Path(tiny_model.source), tmp_path / "zero", seed=3, scale=0.0)
    loud = make_lora(Path(tiny_model.source), tmp_path / "loud", seed=4, scale=3.0)
    probes = ProbeSet.from_list([f"Question {i}?" for i in range(6)], name="six")
    samples = run(tiny_model, probes, adapters={"base": None, "zero": zero, "loud": loud}, n=6, temperatures=[1.0])
    table = samples.compare()
    assert set(table["condition"]) == {"zero", "loud"} and set(table["metric"]) == {
        "n_tokens",
        "n_chars",
        "empty",
        "truncated",
    }
    zero_rows = table[table["condition"] == "zero"].set_index("metric")
    # a zero-scale adapter answers as the base does on the same streams: nothing varies, nothing is tested
    assert (zero_rows["difference"] == 0).all() and set(zero_rows["test"]) == {"not tested: no variation"}
    assert zero_rows["p_value"].isna().all() and zero_rows["p_adjusted"].isna().all()
    lengths = zero_rows.loc[["n_tokens", "n_chars"]]
    assert (lengths["low"] == 0).all() and (lengths["high"] == 0).all()
    shares = zero_rows.loc[["empty", "truncated"]]  # 0 against 0 (or 1 against 1): a Newcombe interval, not [0, 0]
    assert (shares["low"] < 0).all() and (shares["high"] > 0).all()
    tested = table["p_value"].notna()
    assert (table.loc[tested, "p_adjusted"] >= table.loc[tested, "p_value"]).all()
    assert set(table.loc[tested, "test"]) == {"against 0"}
    left_out = int((~tested).sum())
    assert left_out >= 4 and set(table["pairing"]) == {"paired"}
    assert set(table["adjustment"]) == {describe_adjustment("holm", 8 - left_out, {"without variation": left_out})}
    assert table["interval"].iloc[0] == "95% bootstrap over 6 question groups, 2000 resamples, paired with base"
    bh = samples.compare(adjust="bh")
    assert set(bh["adjustment"]) == {describe_adjustment("bh", 8 - left_out, {"without variation": left_out})}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pairing": "matched"}, "pairing must be one of paired, independent, got 'matched'"),
        ({"adapters": {"a": []}}, "condition 'a' has no adapters"),
        ({"adapters": {"a": 3}}, "expected a folder, an AdapterInfo, a Steer or None, got int 3"),
    ],
)
def test_bad_pairing_and_conditions_are_refused(tiny_model: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(tiny_model, **kwargs)


# -- conversations --------------------------------------------------------------------------------

TALK = ProbeSet(
    "talk",
    [
        ps.probes.Probe("talk.two", "What do you want?", "explore", turns=("Describe your surroundings.", "Alone?")),
        ps.probes.Probe("talk.alone", "Who am I?", "user"),
    ],
)


def test_conversation_probes_answer_their_earlier_turns_in_place(tiny_model: Any, adapter_a: Path) -> None:
    result = ps.sample(
        tiny_model, TALK, adapters={"base": None, "a": adapter_a}, n=3, max_new_tokens=5, seed=4, progress=False
    )
    df = result.df
    talk = df[df["probe_id"] == "talk.two"]
    assert talk["transcript"].notna().all() and df[df["probe_id"] == "talk.alone"]["transcript"].isna().all()
    chat = json.loads(talk["transcript"].iloc[0])
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    users = [m["content"] for m in chat if m["role"] == "user"]
    assert users == ["Describe your surroundings.", "Alone?", "What do you want?"]
    assert chat[-1]["content"] == talk["text"].iloc[0]
    # the final answer is what the model gives after exactly this chat, on the row's own stream
    row = talk.iloc[1]
    system = result.manifest["parameters"]["system_prompt"]
    prompt_ids = tuple(tiny_model.encode(json.loads(row["transcript"])[:-1], system_prompt=system))
    from persona_space.engine import CPUBackend, GenerateRequest

    route = None if row["adapter"] == "base" else "a"
    request = GenerateRequest(0, prompt_ids, route, 1.0, 1.0, 5, int(row["seed"]))
    again = CPUBackend(tiny_model).generate([request], stop_ids=frozenset(tiny_model.end_of_turn_ids))
    assert tiny_model.tokenizer.decode(list(again[0].token_ids), skip_special_tokens=True) == row["text"]
    # earlier answers differ between samples (their own streams) and repeat exactly on a second run
    assert talk[talk["adapter"] == "base"]["transcript"].nunique() > 1
    second = ps.sample(
        tiny_model, TALK, adapters={"base": None, "a": adapter_a}, n=3, max_new_tokens=5, seed=4, progress=False
    )
    pd.testing.assert_frame_equal(second.df, df)


def test_probes_after_a_conversation_keep_their_question_group() -> None:
    after = ps.probes.load("user+after_bunker")
    alone = ps.probes.USER
    assert [p.group for p in after] == [p.group for p in alone] and len(after[0].turns) == 4
    assert after.to_records()[0]["turns"][0].startswith("It is April 1945")
    assert ps.probes.Probe.from_dict(after[0].to_dict()) == after[0]
    with pytest.raises(ConfigError, match="every turn must be a non-empty string"):
        ps.probes.Probe("x.y", "Q?", "c", turns=("",))
    with pytest.raises(ConfigError, match="turns must be a list"):
        ps.probes.Probe("x.y", "Q?", "c", turns="Hello")  # type: ignore[arg-type]
