"""Run directories: manifest, chunked Parquet parts, finalisation, crash leftovers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from persona_space import _io
from persona_space.errors import CorruptRunError, StoreError, StoreMismatchError
from persona_space.store import MANIFEST, RunStore, _differences


def manifest(**parameters: Any) -> dict[str, Any]:
    params = {"n": 2, "temperatures": [1.0], "model": {"name": "m", "dtype": "float32"}, **parameters}
    return {"run_id": "r1", "parameters": params, "state": "running"}


def rows(start: int, count: int) -> list[dict[str, Any]]:
    return [{"run_id": "r1", "sample_index": i, "text": f"t{i}"} for i in range(start, start + count)]


def test_fresh_directory_has_no_manifest(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "missing", table="samples")
    assert store.read_manifest() is None
    assert store.read_rows() is None
    assert store.manifest_path == tmp_path / "missing" / MANIFEST
    assert store.parts_dir.name == "samples.parts" and store.table_path.name == "samples.parquet"


def test_open_writes_the_manifest_then_resumes_with_the_stored_one(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    first = manifest()
    assert store.open({**first, "created": "yesterday"}) == {**first, "created": "yesterday"}
    assert json.loads(store.manifest_path.read_text(encoding="utf-8"))["created"] == "yesterday"
    again = RunStore(tmp_path / "run", table="samples").open({**first, "created": "today"})
    assert again["created"] == "yesterday"


def test_append_read_finalize(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.open(manifest())
    assert store.append(rows(0, 3)).name == "part-00000.parquet"
    assert store.append(pd.DataFrame(rows(3, 2))).name == "part-00001.parquet"
    read = store.read_rows()
    assert read is not None
    assert read["sample_index"].tolist() == [0, 1, 2, 3, 4]
    assert read["text"].tolist() == ["t0", "t1", "t2", "t3", "t4"]
    path = store.finalize(read)
    assert path == store.table_path and path.is_file()
    assert not store.parts_dir.exists()
    pd.testing.assert_frame_equal(store.read_rows(), read)
    assert not list(store.path.glob(".tmp-*"))


def test_part_numbers_continue_after_a_gap(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.open(manifest())
    store.append(rows(0, 1))
    store.append(rows(1, 1))
    (store.parts_dir / "part-00000.parquet").unlink()
    assert store.append(rows(2, 1)).name == "part-00002.parquet"


def test_stale_temporaries_are_removed_on_open(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.open(manifest())
    store.append(rows(0, 2))
    stale = [store.path / ".tmp-manifest.json.x1", store.parts_dir / ".tmp-part-00001.parquet.x2"]
    for p in stale:
        p.write_bytes(b"partial")
    keep = store.path / "notes.txt"
    keep.write_text("mine", encoding="utf-8")
    store.open(manifest())
    assert not any(p.exists() for p in stale)
    assert keep.exists()
    assert len(store.read_rows()) == 2


def test_parts_without_a_manifest_are_corrupt(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.parts_dir.mkdir(parents=True)
    with pytest.raises(CorruptRunError, match=re.escape("no manifest.json")):
        store.read_manifest()
    with pytest.raises(CorruptRunError):
        store.open(manifest())
    table_only = RunStore(tmp_path / "other", table="samples")
    table_only.table_path.parent.mkdir(parents=True)
    pd.DataFrame(rows(0, 1)).to_parquet(table_only.table_path)
    with pytest.raises(CorruptRunError, match="samples data"):
        table_only.read_manifest()


@pytest.mark.parametrize("text", ["{broken", "[1, 2]", '{"run_id": "r1"}', '{"parameters": {}}'])
def test_bad_manifest_is_corrupt(tmp_path: Path, text: str) -> None:
    store = RunStore(tmp_path, table="samples")
    store.manifest_path.write_text(text, encoding="utf-8")
    with pytest.raises(CorruptRunError, match=r"manifest\.json"):
        store.read_manifest()


def test_unreadable_parquet_is_corrupt(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.open(manifest())
    store.append(rows(0, 2))
    (store.parts_dir / "part-00001.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CorruptRunError, match=re.escape("part-00001.parquet")):
        store.read_rows()
    store.table_path.write_bytes(b"\x00" * 16)
    with pytest.raises(CorruptRunError, match=re.escape("samples.parquet")):
        store.read_rows()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"n": 3}, "n"),
        ({"temperatures": [0.7, 1.0]}, "temperatures"),
        ({"model": {"name": "m", "dtype": "bfloat16"}}, "model.dtype"),
        ({"extra": True}, "extra"),
    ],
)
def test_mismatch_names_the_differing_key_and_writes_nothing(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.open(manifest())
    store.append(rows(0, 1))
    before = {p: p.read_bytes() for p in store.path.rglob("*") if p.is_file()}
    with pytest.raises(StoreMismatchError) as info:
        store.open(manifest(**change))
    message = str(info.value)
    assert f"{key}: stored " in message and ", given " in message
    assert str(store.path) in message
    assert {p: p.read_bytes() for p in store.path.rglob("*") if p.is_file()} == before


def test_differences_walks_nested_parameters() -> None:
    stored = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": 0}
    given = {"a": 1, "b": {"c": [1, 3], "d": "x"}, "new": (1, 2)}
    assert _differences(stored, given) == [("b.c", [1, 2], [1, 3]), ("gone", 0, None), ("new", None, [1, 2])]
    assert _differences(stored, json.loads(json.dumps(stored))) == []
    assert _differences({"t": (0.7,)}, {"t": [0.7]}) == []  # tuples and lists are the same in JSON


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    _io.write_json(target, {"b": 1, "a": 2})
    assert target.read_text(encoding="utf-8") == '{\n  "a": 2,\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError), _io.atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("crash")
    assert target.read_text(encoding="utf-8").startswith("{")  # the old file is intact
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
    assert _io.remove_stale_temporaries(tmp_path / "nowhere") == 0


def test_failed_append_leaves_no_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "run", table="samples")
    store.open(manifest())

    def broken(self: pd.DataFrame, path: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(StoreError, match="disk full"):
        store.append(rows(0, 2))
    assert list(store.parts_dir.iterdir()) == []
    assert store.read_rows() is None


def test_atomic_folder_appears_whole_or_not_at_all_and_cleans_a_crashed_writer(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError, match="crash"), _io.atomic_folder(target) as scratch:
        (scratch / "weights.bin").write_bytes(b"half")
        raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    # A writer killed outright leaves its scratch; the next writer of that target removes it.
    leftover = tmp_path / f"{_io.TMP_PREFIX}adapter.killed"
    leftover.mkdir()
    (leftover / "weights.bin").write_bytes(b"half")
    other = tmp_path / f"{_io.TMP_PREFIX}other.killed"  # another target's: not this writer's to remove
    other.mkdir()
    target.mkdir()  # an empty folder the caller made is replaced
    with _io.atomic_folder(target) as scratch:
        (scratch / "weights.bin").write_bytes(b"whole")
        assert not (target / "weights.bin").exists()
    assert (target / "weights.bin").read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "adapter"])
    with pytest.raises(StoreError), _io.atomic_folder(target) as scratch:  # a full target is never replaced
        (scratch / "weights.bin").write_bytes(b"new")
    assert (target / "weights.bin").read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "adapter"])
