"""Untrusted folders: a pickle payload planted in every kind of folder the library reads never runs.

Each payload, if unpickled, would create a marker file. Every test plants it where a
loader of that folder kind would look (weights only in pickle form, a pickle file beside
safetensors, a training checkpoint's optimizer, scheduler and random states, a result's
NumPy arrays, stray files in run and map folders), uses the folder through the public
API, and checks that the marker never appears and that a refusal is an
``UnsafeFileError`` or ``CorruptRunError`` naming the file.
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import persona_space as ps
from persona_space.embedding import Embedder
from persona_space.errors import CorruptRunError, UnsafeFileError


class _Payload:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def plant(path: Path, marker: Path, *, how: str = "torch") -> Path:
    """Write a payload at ``path``: a torch.save file (``how="torch"``), a bare pickle, or a NumPy object array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch":
        torch.save({"state": _Payload(marker)}, path)
    elif how == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        array = np.empty(1, dtype=object)
        array[0] = _Payload(marker)
        np.save(path, array, allow_pickle=True)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "MARKER-payload-ran"
    yield path
    assert not path.exists(), "a planted pickle payload ran"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path torch.load is asked to open during the test (the loader every pickle weight goes through)."""
    paths: list[str] = []
    original = torch.load

    def recording(f: Any, *args: Any, **kwargs: Any) -> Any:
        paths.append(str(f))
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording)
    return paths


def _model_copy(tiny_model_dir: Path, tmp_path: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_a_model_folder_with_only_pickle_weights_is_refused_by_name(
    tiny_model_dir: Path, tmp_path: Path, marker: Path
) -> None:
    folder = _model_copy(tiny_model_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(UnsafeFileError, match=r"pytorch_model\.bin.*safetensors only"):
        ps.load_model(str(folder), device="cpu", dtype="float32")


def test_pickle_files_beside_safetensors_are_never_touched(
    tiny_model_dir: Path, tmp_path: Path, marker: Path, opened: list[str]
) -> None:
    folder = _model_copy(tiny_model_dir, tmp_path)
    planted = [plant(folder / name, marker) for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt")]
    model = ps.load_model(str(folder), device="cpu", dtype="float32")
    assert len(ps.sample(model, ["Hi"], n=1, max_new_tokens=2, progress=False).df) == 1
    assert not set(opened) & {str(p) for p in planted}


def test_an_adapter_whose_weights_are_a_payload_is_refused_by_name(
    tiny_model_dir: Path, adapter_a: Path, tmp_path: Path, marker: Path, opened: list[str]
) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    folder = tmp_path / "evil-adapter"
    shutil.copytree(adapter_a, folder)
    (folder / "adapter_model.safetensors").unlink()
    plant(folder / "adapter_model.bin", marker)
    with pytest.raises(UnsafeFileError, match=r"adapter_model\.bin.*weights-only"):
        model.adapters.attach(folder)
    assert not list(model.adapters)
    with pytest.raises(UnsafeFileError, match=r"adapter_model\.bin"):
        ps.sample(model, ["Hi"], adapters={"evil": folder}, n=1, max_new_tokens=2, store=tmp_path / "run",
                  progress=False)  # fmt: skip
    assert not (tmp_path / "run").exists()
    # a payload beside the adapter's safetensors is never read
    beside = tmp_path / "beside"
    shutil.copytree(adapter_a, beside)
    opened.clear()
    planted = [plant(beside / "adapter_model.bin", marker), plant(beside / "training_args.bin", marker)]
    assert model.adapters.attach(beside) == "beside"
    assert not set(opened) & {str(p) for p in planted}


def test_an_adapter_with_honest_pickle_weights_still_attaches(
    tiny_model_dir: Path, adapter_a: Path, tmp_path: Path, marker: Path
) -> None:
    from safetensors.torch import load_file

    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    folder = tmp_path / "bin-adapter"
    shutil.copytree(adapter_a, folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    (folder / "adapter_model.safetensors").unlink()
    torch.save(weights, folder / "adapter_model.bin")  # tensors only: what the weights-only loader reads
    assert model.adapters.attach(folder) == "bin-adapter"


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "adapter_model.bin", "scaler.pt"])
def test_a_training_checkpoint_holding_a_payload_is_refused_on_resume(
    tiny_model_dir: Path, tmp_path: Path, marker: Path, name: str
) -> None:
    from transformers import TrainerCallback

    class Stop(TrainerCallback):  # type: ignore[misc]
        def on_save(self, *_args: Any, **_kwargs: Any) -> None:
            raise KeyboardInterrupt("stopped after the first checkpoint")

    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    data = ps.datasets.load("colours:red")
    out = tmp_path / "adapter"
    spec = ps.TrainSpec(max_steps=3, batch_size=4, learning_rate=5e-3, save_steps=1)
    with pytest.raises(KeyboardInterrupt):
        ps.train_adapter(model, data, store=out, train=spec, callbacks=[Stop()], progress=False)
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "no checkpoint was written before the stop"
    plant(checkpoints[-1] / name, marker)
    with pytest.raises(UnsafeFileError, match="training checkpoint file .*" + re.escape(name)):
        ps.train_adapter(model, data, store=out, train=spec, progress=False)
    # removing the planted file's checkpoint lets the run start again from what is left
    shutil.rmtree(checkpoints[-1])
    info = ps.train_adapter(model, data, store=out, train=spec, progress=False)
    assert (Path(info.path) / "adapter_model.safetensors").is_file()


def test_an_honest_checkpoint_resumes(tiny_model_dir: Path, tmp_path: Path, marker: Path) -> None:
    from transformers import TrainerCallback

    class Stop(TrainerCallback):  # type: ignore[misc]
        def on_save(self, *_args: Any, **_kwargs: Any) -> None:
            raise KeyboardInterrupt("stopped after the first checkpoint")

    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    data = ps.datasets.load("colours:red")
    spec = ps.TrainSpec(max_steps=3, batch_size=4, learning_rate=5e-3, save_steps=1)
    with pytest.raises(KeyboardInterrupt):
        ps.train_adapter(model, data, store=tmp_path / "a", train=spec, callbacks=[Stop()], progress=False)
    plant(next((tmp_path / "a" / "checkpoints").glob("checkpoint-*")) / "training_args.bin", marker)  # never read

    class Begin(TrainerCallback):  # type: ignore[misc]
        step: int | None = None

        def on_train_begin(self, _args: Any, state: Any, *_rest: Any, **_kwargs: Any) -> None:
            Begin.step = int(state.global_step)

    resumed = ps.train_adapter(model, data, store=tmp_path / "a", train=spec, callbacks=[Begin()], progress=False)
    assert Begin.step == 1  # it went on from the checkpoint, not from the start
    clean = ps.train_adapter(model, data, store=tmp_path / "b", train=spec, progress=False)
    assert resumed.sha256 == clean.sha256  # the checkpoint's states were read, and training went on from them


def test_an_embedder_folder_with_only_pickle_weights_is_refused_by_name(
    tiny_embedder_dir: Path, tmp_path: Path, marker: Path
) -> None:
    folder = tmp_path / "embedder"
    shutil.copytree(tiny_embedder_dir, folder)
    for weights in folder.rglob("model.safetensors"):
        plant(weights.with_name("pytorch_model.bin"), marker)
        weights.unlink()
    embedder = Embedder(model=str(folder), device="cpu")
    with pytest.raises(UnsafeFileError, match=r"pytorch_model\.bin"):
        embedder.embed(["a text"])


def test_result_arrays_holding_a_payload_are_refused_and_stray_pickles_ignored(
    tiny_model_dir: Path, tmp_path: Path, marker: Path
) -> None:
    from persona_space.activations import collect

    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    acts = collect(model, ["Who are you?"], where="prompt_last", store=tmp_path / "acts", progress=False)
    run = ps.sample(model, ["Who are you?"], n=2, max_new_tokens=4, store=tmp_path / "run", progress=False)
    for folder in (tmp_path / "acts", tmp_path / "run"):  # stray pickle files are never read
        plant(folder / "state.pkl", marker, how="pickle")
        plant(folder / "tables" / "extra.pt", marker)
    assert ps.results.load(tmp_path / "run").df["text"].tolist() == run.df["text"].tolist()
    again = ps.sample(model, ["Who are you?"], n=2, max_new_tokens=4, store=tmp_path / "run", progress=False)
    assert again.df["text"].tolist() == run.df["text"].tolist()
    assert np.array_equal(ps.results.load(tmp_path / "acts").means, acts.means)
    array = next((tmp_path / "acts" / "arrays").glob("*.npy"))
    plant(array.with_suffix(""), marker, how="numpy")  # np.save adds the .npy back
    with pytest.raises(CorruptRunError, match=array.name):
        ps.results.load(tmp_path / "acts")


def test_a_basin_map_folder_holding_payloads_is_refused_or_ignored(tmp_path: Path, marker: Path) -> None:
    from conftest import planted_basins

    frame, vectors = planted_basins(20, 8)
    basin_map = ps.BasinMap(seed=0, min_cluster_size=10).fit(frame, vectors=vectors)
    basin_map.save(tmp_path / "map")
    plant(tmp_path / "map" / "umap.pkl", marker, how="pickle")  # where a pickling library would keep its models
    plant(tmp_path / "map" / "hdbscan.joblib", marker, how="pickle")
    loaded = ps.results.load(tmp_path / "map")
    assert len(loaded.to_frame()) == len(frame)
    array = next((tmp_path / "map" / "arrays").glob("*.npy"))
    plant(array.with_suffix(""), marker, how="numpy")
    with pytest.raises(CorruptRunError, match=array.name):
        ps.results.load(tmp_path / "map")
