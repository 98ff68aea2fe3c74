"""The ``persona-space`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from persona_space.cli import main


def sample_args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "sample",
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--n",
        "2",
        "--temperature",
        "0.7",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
        *extra,
    ]


def test_models_lists_the_embedded_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("smollm2-135m-instruct"))
    assert "embedded" in line


def test_sample_writes_a_run_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = sample_args(tiny_model_dir, out, "--probes", "identity:artificiality", "--seed", "3")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote 12 rows to {out / 'tables' / 'samples.parquet'}" in printed
    df = pd.read_parquet(out / "tables" / "samples.parquet")
    assert len(df) == 3 * 2 * 2
    assert set(df["temperature"]) == {0.7, 1.0} and (df["n_tokens"] <= 4).all()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["state"] == "complete" and manifest["parameters"]["seed"] == 3
    assert manifest["timings"]["new_rows"] == 12
    assert main(args) == 0
    assert "wrote 12 rows" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["timings"]["new_rows"] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "samples.parquet"), df)


def test_sample_with_an_adapter(
    tiny_model_dir: Path, adapter_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = sample_args(tiny_model_dir, out, "--adapter", f"a={adapter_a}")
    assert main(args) == 0
    assert (out / "tables" / "samples.parquet").is_file()
    df = pd.read_parquet(out / "tables" / "samples.parquet")
    assert len(df) == 2 * 15 * 2 * 2  # base and a, 15 identity probes, 2 temperatures, n=2
    assert list(df["adapter"].unique()) == ["base", "a"]
    capsys.readouterr()
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["timings"]["new_rows"] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--adapter", "a"], "--adapter 'a' is not NAME=PATH"),
        (["--adapter", "=path"], "is not NAME=PATH"),
        (["--adapter", "a="], "is not NAME=PATH"),
        (["--adapter", "a=x", "--adapter", "a=y"], "'a' is given twice"),
        (["--no-base"], "nothing to sample"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(sample_args(tmp_path / "no-model", tmp_path / "run", *extra)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("persona-space: error: ")
    assert message in captured.err
    assert not (tmp_path / "run").exists()


def test_bad_batch_size_exits_2(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sample_args(tiny_model_dir, tmp_path / "run", "--batch-size", "many")) == 2
    assert "--batch-size 'many' is not an integer or 'auto'" in capsys.readouterr().err
    assert main(sample_args(tiny_model_dir, tmp_path / "run", "--batch-size", "0")) == 2
    assert "batch_size must be a positive integer" in capsys.readouterr().err


def test_unknown_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sample_args(tmp_path / "no-model", tmp_path / "run")) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sample"])  # --out is required
    assert info.value.code == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_datasets_lists_every_bundled_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "colours:red" in out and "42 records" in out and "figure_facts:moon" in out


def test_train_writes_an_adapter_folder(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "red"
    args = ["train", "--dataset", "colours:red", "--out", str(out), "--model", str(tiny_model_dir)]
    args += ["--device", "cpu", "--dtype", "float32", "--max-steps", "2", "--batch-size", "4", "--lr", "5e-3"]
    assert main(args) == 0
    assert "adapter 'red': 2 steps" in capsys.readouterr().out
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    params = manifest["parameters"]
    assert params["data"]["name"] == "colours:red" and params["learning_rate"] == 5e-3
    # The same command again reuses the finished adapter; other settings are refused.
    assert main(args) == 0
    assert main([*args[:-2], "--lr", "1e-2"]) == 2
    assert "other parameters" in capsys.readouterr().err


def test_train_with_an_unknown_dataset_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "colours:purple", "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'colours:purple'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_map_a_run_directory(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`persona-space map` on a sampled run: a saved map, tables, charts and a summary (real embedder)."""
    run = tmp_path / "run"
    args = sample_args(tiny_model_dir, run)
    args[args.index("--n") + 1] = "8"
    args[args.index("--max-new-tokens") + 1] = "12"
    assert main(args) == 0
    assert main(["map", str(run)]) == 0
    out = run / "basins"
    for name in (
        "manifest.json",
        "tables/samples.parquet",
        "occupancy.csv",
        "summary.md",
        "basin_map.html",
        "basin_map.png",
    ):
        assert (out / name).is_file(), name
    assert "Occupancy" in capsys.readouterr().out


def test_shift_writes_tables_charts_and_a_summary(
    tiny_model_dir: Path, adapter_a: Path, adapter_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shift"
    args = [
        "shift",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--adapter",
        f"ab={adapter_a}",
        "--adapter",
        f"ab={adapter_b}",  # the same name twice: two seeds of one condition
        "--prompts",
        "identity:direct",
        "--candidates",
        "Voyager 1, Voyager 2,an AI assistant",
        "--answer-prefix",
        "I am",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Adapter `ab` against the base model (3 prompts in 3 question groups, 2 training seeds" in printed
    for name in ("tables/shift.parquet", "manifest.json", "shifts.csv", "shifts_by_prompt.csv", "summary.md"):
        assert (out / name).is_file(), name
    for name in ("shift_bars", "rank_change"):
        assert (out / f"{name}.html").is_file() and (out / f"{name}.png").is_file()
    shifts = pd.read_csv(out / "shifts.csv")
    assert sorted(shifts["candidate"]) == ["Voyager 1", "Voyager 2", "an AI assistant"]
    assert set(pd.read_parquet(out / "tables" / "shift.parquet")["adapter"]) == {"base", "ab:0", "ab:1"}
    assert main(args) == 0  # a finished run is read back, not scored again
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["timings"]["prompts_scored"] == 0
    assert main([*args[:-2], "--out", str(tmp_path / "bad"), "--adapter", "broken"]) == 2
    assert "is not NAME=PATH" in capsys.readouterr().err
