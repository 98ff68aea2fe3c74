"""The guarantees of docs/guarantees.md: nothing lost when killed, the same bytes twice, no network needed.

* crash loops: each CLI command killed with SIGKILL at seeded random points and resumed
  gives what an uninterrupted run gives (a seeded subset here; ``python
  tests/crash_loop.py`` runs ten kill points per command);
* determinism: the same call twice writes byte-identical sample, shift and map tables;
* offline: the demo pipeline runs in a process whose every network access is refused.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import persona_space as ps
from persona_space.embedding import Embedder

HERE = Path(__file__).resolve().parent


def _tables(folder: Path) -> dict[str, bytes]:
    """Every table file under ``folder`` (Parquet and CSV) by its path, as bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".parquet", ".csv", ".npy") and p.is_file()
    }


def test_the_same_sample_shift_and_map_twice_write_the_same_bytes(
    tiny_model_dir: Path, adapter_a: Path, adapter_b: Path, tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    conditions = {"base": None, "a": adapter_a, "ab": [adapter_a, adapter_b]}
    kwargs: dict[str, Any] = {"n": 3, "temperatures": [0.7, 1.0], "max_new_tokens": 12, "progress": False}
    embedder = Embedder(model=str(tiny_embedder_dir), device="cpu")
    for run in ("one", "two"):
        samples = ps.sample(model, ps.probes.IDENTITY, adapters=conditions, store=tmp_path / run / "samples",
                            **kwargs)  # fmt: skip
        ps.identity_shift(model, {"a": adapter_a, "ab": [adapter_a, adapter_b]}, candidates=["Voyager 1", "Maria"],
                          store=tmp_path / run / "shift", progress=False)  # fmt: skip
        ps.BasinMap(seed=0, embedder=embedder, min_cluster_size=5).fit(samples).save(tmp_path / run / "map")
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) >= 4, sorted(one)
    different = sorted(name for name in one if one[name] != two[name])
    assert not different, different


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sys.path.insert(0, str(HERE))
    import crash_loop

    yield crash_loop, crash_loop.make_world(tmp_path_factory.mktemp("crash-world"))


@pytest.mark.slow
@pytest.mark.parametrize(("command", "kills"), [("sample", 1), ("train", 1), ("shift", 1), ("map", 1), ("sweep", 1)])
def test_a_command_killed_at_random_points_resumes_to_the_uninterrupted_result(
    world: Any, command: str, kills: int
) -> None:
    crash_loop, tiny = world
    outcome = crash_loop.crash_loop(command, tiny, kills=kills, seed=11)
    assert outcome.kills == kills and not outcome.problems, outcome.line()
    assert outcome.rows > 0


def test_the_crash_loop_finds_a_lost_row_a_leftover_and_an_unfinished_manifest(tmp_path: Path) -> None:
    """The harness's own check can fail: a copy with a row dropped, a temporary file and a partial manifest."""
    import json

    import pandas as pd

    sys.path.insert(0, str(HERE))
    import crash_loop

    reference, crashed = tmp_path / "ref", tmp_path / "crashed"
    frame = pd.DataFrame({"probe_id": ["a", "b", "c"], "sample_index": [0, 1, 2], "text": ["x", "y", "z"]})
    for folder, table in ((reference, frame), (crashed, frame.iloc[:2])):
        (folder / "tables").mkdir(parents=True)
        table.to_parquet(folder / "tables" / "samples.parquet")
        (folder / "manifest.json").write_text(json.dumps({"state": "complete"}))
    assert crash_loop.compare("sample", reference, reference)[1] == []
    (crashed / ".tmp-part.parquet").write_bytes(b"")
    (crashed / "manifest.json").write_text(json.dumps({"state": "partial"}))
    problems = crash_loop.compare("sample", reference, crashed)[1]
    assert any("2 rows against 3" in p for p in problems)
    assert any("temporary file" in p for p in problems) and any("'partial'" in p for p in problems)
    doubled = pd.concat([frame, frame.iloc[:1]]).iloc[[0, 1, 3]]
    doubled.to_parquet(crashed / "tables" / "samples.parquet")
    assert any("differ" in p for p in crash_loop.compare("sample", reference, crashed)[1])  # a duplicate for a row


def test_the_demo_runs_with_every_network_access_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    log, out = tmp_path / "network.log", tmp_path / "demo"
    script = (
        "import sys, socket; sys.path.insert(0, sys.argv[1]); import netguard; netguard.install(sys.argv[2])\n"
        "try:\n    socket.create_connection(('huggingface.co', 443), timeout=1)\n"
        "except OSError:\n    pass\nelse:\n    sys.exit('the guard let a connection through')\n"
        "from persona_space.cli import main\n"
        "sys.exit(main(['demo', '--model', sys.argv[3], '--device', 'cpu', '--dtype', 'float32', '--out', sys.argv[4],"
        " '--n', '2', '--max-new-tokens', '12', '--epochs', '1']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(HERE), str(log), str(tiny_model_dir), str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = log.read_text(encoding="utf-8").splitlines()
    assert attempts == ["create_connection ('huggingface.co', 443)"], attempts  # the guard's own check only
    assert (out / "report.html").is_file()
