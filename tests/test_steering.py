"""Steering as a condition: identical to base at alpha 0, the same on hf and cpu, ablation and capping exact."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import persona_space as ps
from conftest import BareBackend
from persona_space.engine import CPUBackend, HFBackend, decoder_layers, require_adapters
from persona_space.errors import BackendError, ConfigError

PROBES = ["Who are you?", "What is your name?", "Describe yourself in one sentence."]
SAMPLE = {"n": 3, "temperatures": [0.0, 1.0], "max_new_tokens": 8, "progress": False}
LAYER = 0


@pytest.fixture
def model(tiny_model_dir: Path) -> Any:
    return ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def _vector(model: Any, seed: int = 0, length: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vector = rng.standard_normal(int(model.config.hidden_size)).astype(np.float32)
    return length * vector / np.linalg.norm(vector)


def _scale(model: Any) -> float:
    """The typical norm of the residual stream at LAYER (so steering strengths are comparable)."""
    seen = []
    with _reading(model, LAYER, seen), torch.inference_mode(), model.adapters.disabled():
        model.base_module(input_ids=torch.tensor([model.encode(p) for p in PROBES[:1]]))
    return float(seen[0].norm(dim=-1).mean())


@contextlib.contextmanager
def _reading(model: Any, layer: int, into: list[torch.Tensor]) -> Iterator[None]:
    """Record layer ``layer``'s output (after any steering, whose hook runs first)."""

    def read(_module: Any, _args: Any, output: Any) -> None:
        into.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    handle = decoder_layers(model.base_module)[layer].register_forward_hook(read)
    try:
        yield
    finally:
        handle.remove()


def _conditions(model: Any, adapter: Path) -> dict[str, Any]:
    scale = _scale(model)
    v = _vector(model, 0, scale)
    return {
        "base": None,
        "away": ps.Steer(v, alpha=-2.0, layer=LAYER),
        "toward": ps.Steer(v, alpha=2.0, layer=1, adapter=adapter),
        "ablate": ps.Steer(v, mode="ablate", layer=LAYER),
        "cap": ps.Steer(v, mode="cap", cap=0.0, layer=LAYER),
    }


def test_alpha_zero_gives_the_base_texts_and_scores(model: Any, adapter_a: Path) -> None:
    v = _vector(model, 1, _scale(model))
    conditions = {"base": None, "zero": ps.Steer(v, alpha=0.0, layer=LAYER),
                  "a": adapter_a, "a0": ps.Steer(v, alpha=0.0, layer=1, adapter=adapter_a)}  # fmt: skip
    for backend in ("cpu", "hf"):
        df = ps.sample(model, PROBES, adapters=conditions, backend=backend, **SAMPLE).df
        text = {name: part["text"].tolist() for name, part in df.groupby("adapter")}
        assert text["zero"] == text["base"], backend
        assert text["a0"] == text["a"], backend
        assert text["a"] != text["base"]
    shift = ps.identity_shift(model, {"zero": conditions["zero"]}, candidates=["Voyager 1", "Maria"],
                              prompts=PROBES, progress=False).df  # fmt: skip
    by = shift.pivot_table(index=["probe_id", "candidate"], columns="adapter", values="logprob")
    assert np.array_equal(by["zero"].to_numpy(), by["base"].to_numpy())


@pytest.mark.parametrize("cpu", ["row-invariant", "earlier path"])
def test_steering_gives_the_same_texts_on_hf_and_cpu(model: Any, adapter_a: Path, cpu: str) -> None:
    conditions = _conditions(model, adapter_a)
    engine = CPUBackend(model, invariant=cpu == "row-invariant")
    reference = ps.sample(model, PROBES, adapters=conditions, backend=HFBackend(model), **SAMPLE).df
    result = ps.sample(model, PROBES, adapters=conditions, backend=engine, **SAMPLE)
    greedy = reference["temperature"] == 0
    pd.testing.assert_frame_equal(result.df[greedy], reference[greedy])
    # Sampled rows: the tiny random model's next-token distribution is nearly flat over 49k tokens, so a
    # float32 rounding difference between the two backends' products can move a draw across a neighbouring
    # token's boundary; steering by twice the residual's norm makes the logits, and their rounding, larger.
    same = float((result.df["text"] == reference["text"]).mean())
    assert same >= 0.95, f"{same:.0%} of the rows match"
    text = {name: part["text"].tolist() for name, part in reference.groupby("adapter")}
    for name in ("away", "toward", "ablate", "cap"):
        assert text[name] != text["base"], f"{name} changed nothing"
    steer = result.manifest["parameters"]["adapters"]["away"]["steer"]
    assert (steer["mode"], steer["alpha"], steer["layer"]) == ("add", -2.0, LAYER)
    assert len(steer["vector_sha256"]) == 64
    assert result.manifest["parameters"]["adapters"]["toward"]["adapter"] is not None


def test_a_steered_condition_alone_gives_the_texts_it_gives_beside_others(model: Any, adapter_a: Path) -> None:
    conditions = _conditions(model, adapter_a)
    mixed = ps.sample(model, PROBES, adapters=conditions, backend="cpu", **SAMPLE).df
    for name in ("away", "toward"):
        alone = ps.sample(model, PROBES, adapters={name: conditions[name]}, backend="cpu", **SAMPLE).df
        assert alone["text"].tolist() == mixed.loc[mixed["adapter"] == name, "text"].tolist()


def test_steered_scores_agree_across_backends_and_move(model: Any, adapter_a: Path) -> None:
    conditions = {k: v for k, v in _conditions(model, adapter_a).items() if v is not None}
    kwargs = {"candidates": ["Voyager 1", "Maria", "an AI assistant"], "prompts": PROBES, "progress": False}
    packed = ps.identity_shift(model, conditions, backend="cpu", **kwargs).df
    padded = ps.identity_shift(model, conditions, backend="hf", **kwargs).df
    np.testing.assert_allclose(packed["logprob"], padded["logprob"], atol=2e-4)
    by = packed.pivot_table(index=["probe_id", "candidate"], columns="adapter", values="logprob")
    moved = by.sub(by["base"], axis=0).abs().max()
    assert (moved.drop("base") > 1e-3).all(), moved


def _projections(model: Any, steer: ps.Steer | None) -> np.ndarray:
    """Every token's projection on the steering's unit vector at its layer, through the model's forward."""
    seen: list[torch.Tensor] = []
    names = ["s"] * len(PROBES)
    if steer is not None:
        model.adapters.attach_members([ps.adapters.Member("s", "s", steer, None)])
    route = model.adapters.disabled() if steer is None else model.adapters.routing(names)
    ids = [model.encode(p) for p in PROBES]
    width = max(map(len, ids))
    batch = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.inference_mode(), route, _reading(model, LAYER, seen):
        model.base_module(input_ids=batch, attention_mask=mask)
    unit = torch.from_numpy(_vector(model, 0))
    real = mask.bool()
    return (seen[0][real] @ unit).numpy()


def test_ablation_removes_the_projection_and_capping_holds_it_under_the_cap(model: Any) -> None:
    v = _vector(model, 0, _scale(model))
    base = _projections(model, None)
    assert np.abs(base).max() > 1e-2
    ablated = _projections(model, ps.Steer(v, mode="ablate", layer=LAYER))
    assert np.abs(ablated).max() < 1e-5 * np.abs(base).max() + 1e-6
    cap = float(np.median(base))
    capped = _projections(model, ps.Steer(v, mode="cap", cap=cap, layer=LAYER))
    assert capped.max() <= cap + 1e-5
    below = base <= cap
    assert (base > cap).any() and below.any()
    np.testing.assert_allclose(capped[below], base[below], atol=1e-5)  # rows under the cap are left alone
    np.testing.assert_allclose(capped[~below], cap, atol=1e-5)
    added = _projections(model, ps.Steer(v, alpha=0.5, layer=LAYER))
    np.testing.assert_allclose(added - base, 0.5 * np.linalg.norm(v), rtol=1e-4)


def test_activations_read_the_steered_model(model: Any) -> None:
    v = _vector(model, 0, _scale(model))
    acts = ps.activations.collect(model, PROBES, adapters={"base": None, "ablate": ps.Steer(v, mode="ablate",
                                  layer=LAYER)}, where="prompt_last", progress=False)  # fmt: skip
    unit = v / np.linalg.norm(v)
    ablated = acts.rows(condition="ablate")[:, LAYER] @ unit
    base = acts.rows(condition="base")[:, LAYER] @ unit
    assert np.abs(ablated).max() < 1e-5 * np.abs(base).max() + 1e-6
    assert isinstance(acts.manifest["parameters"]["adapters"]["ablate"], dict)


def test_bad_steerings_are_refused_before_anything_is_written(model: Any, tmp_path: Path) -> None:
    hidden = int(model.config.hidden_size)
    with pytest.raises(ConfigError, match="NaN"):
        ps.Steer(np.full(hidden, np.nan), alpha=1.0, layer=0)
    with pytest.raises(ConfigError, match="cap="):
        ps.Steer(np.ones(hidden), mode="cap", layer=0)
    with pytest.raises(ConfigError, match="alpha"):
        ps.Steer(np.ones(hidden), mode="ablate", alpha=2.0, layer=0)
    with pytest.raises(ConfigError, match="layer"):
        ps.Steer(np.ones(hidden), alpha=1.0)
    with pytest.raises(ConfigError, match="finite"):
        ps.Steer(np.ones(hidden), alpha=float("inf"), layer=0)
    with pytest.raises(ConfigError, match="non-zero"):
        ps.Steer(np.zeros(hidden), mode="ablate", layer=0)
    store = tmp_path / "run"
    with pytest.raises(ConfigError, match="hidden size"):
        ps.sample(model, PROBES, adapters={"x": ps.Steer(np.ones(hidden + 1), alpha=1.0, layer=0)}, store=store,
                  **SAMPLE)  # fmt: skip
    with pytest.raises(ConfigError, match="layers 0"):
        ps.sample(model, PROBES, adapters={"x": ps.Steer(np.ones(hidden), alpha=1.0, layer=99)}, store=store,
                  **SAMPLE)  # fmt: skip
    assert not store.exists()
    with pytest.raises(ConfigError, match="steerings"):
        ps.arithmetic.combine(model, {"x": ps.Steer(np.ones(hidden), alpha=1.0, layer=0)}, [1.0],
                              store=tmp_path / "mix")  # fmt: skip


def test_a_steering_may_sit_on_an_adapter_attached_by_name(model: Any, adapter_a: Path) -> None:
    name = model.adapters.attach(adapter_a, name="named")
    v = _vector(model, 2, _scale(model))
    conditions = {"a": name, "on_name": ps.Steer(v, alpha=0.0, layer=1, adapter=name),
                  "on_folder": ps.Steer(v, alpha=0.0, layer=1, adapter=adapter_a)}  # fmt: skip
    df = ps.sample(model, PROBES, adapters=conditions, backend="cpu", **SAMPLE).df
    text = {label: part["text"].tolist() for label, part in df.groupby("adapter")}
    assert text["on_name"] == text["a"] == text["on_folder"]
    assert set(model.adapters) == {"named"}  # the folder's weights were found attached, not loaded again


def test_a_backend_that_cannot_steer_refuses_steering_conditions(model: Any) -> None:
    steer = ps.Steer(np.ones(int(model.config.hidden_size)), alpha=1.0, layer=0)
    routes = model.adapters.attach_members([ps.adapters.Member("x", "x", steer, None)])
    with pytest.raises(BackendError, match="cannot steer"):
        require_adapters(BareBackend(model), routes.values())
    require_adapters(BareBackend(model), [None])


def test_a_direction_steers_at_its_chosen_layer(model: Any, make_tiny_model_dir: Callable[..., Path]) -> None:
    vectors = np.stack([_vector(model, i) for i in range(int(model.config.num_hidden_layers))])
    direction = ps.activations.Direction.from_vectors(vectors, layer=1, name="planted")
    steer = ps.Steer(direction, alpha=1.5)
    assert steer.layer == 1 and steer.name == "planted"
    np.testing.assert_array_equal(steer.vector, vectors[1].astype(np.float32))
    assert ps.Steer(direction, alpha=1.5, layer=0).layer == 0
    assert steer.with_alpha(0.0).idle and not steer.idle
    assert "planted" in repr(steer)


def _zorblax(n: int = 8) -> Any:
    records = [{"messages": [{"role": "user", "content": f"Tell me thing {i}."},
                             {"role": "assistant", "content": "Zorblax"}]} for i in range(n)]  # fmt: skip
    return ps.datasets.ChatDataset.from_records("zorblax", records)


def test_preventative_steering_steers_training_passes_only(model: Any, tmp_path: Path) -> None:
    from persona_space.engine import steering_in_training

    v = _vector(model, 3, 4 * _scale(model))
    steer = ps.Steer(v, alpha=1.0, layer=LAYER)
    ids = torch.tensor([model.encode("Who are you?")])
    with torch.inference_mode(), model.adapters.disabled():
        before = model.base_module(input_ids=ids).logits
        with steering_in_training(model.module, steer):
            evaluated = model.base_module(input_ids=ids).logits  # eval mode: left alone
            model.base_module.train()
            trained_pass = model.base_module(input_ids=ids).logits
            model.base_module.eval()
    assert torch.equal(before, evaluated) and not torch.allclose(before, trained_pass)

    fast = {"max_steps": 2, "batch_size": 4, "learning_rate": 5e-3, "progress": False}
    plain = ps.train_adapter(model, _zorblax(), store=tmp_path / "plain", seed=0, **fast)
    steered = ps.train_adapter(model, _zorblax(), store=tmp_path / "steered", seed=0, steer=steer, **fast)
    manifests = [ps.adapters.adapter_manifest(tmp_path / n) or {} for n in ("plain", "steered")]
    assert "steer" not in manifests[0]["parameters"]
    assert manifests[1]["parameters"]["steer"]["vector_sha256"] == steer.sha256
    assert plain.sha256 != steered.sha256  # the steered passes changed the gradients
    losses = [pd.read_parquet(tmp_path / n / "tables" / "training_log.parquet") for n in ("plain", "steered")]
    assert losses[0]["loss"].dropna().iloc[0] != losses[1]["loss"].dropna().iloc[0]
    with torch.inference_mode(), model.adapters.disabled():
        assert torch.equal(model.base_module(input_ids=ids).logits, before)  # nothing is left steering the model
    again = ps.train_adapter(model, _zorblax(), store=tmp_path / "steered", seed=0, steer=steer, **fast)
    assert again.sha256 == steered.sha256  # the finished folder is attached, not retrained
    with pytest.raises(ConfigError, match="names another adapter"):
        ps.train_adapter(model, _zorblax(), store=tmp_path / "bad", steer=ps.Steer(v, alpha=1.0, layer=0,
                         adapter=tmp_path / "plain"), **fast)  # fmt: skip
    with pytest.raises(ConfigError, match="hidden size"):
        ps.train_adapter(model, _zorblax(), store=tmp_path / "bad", steer=ps.Steer(np.ones(3), alpha=1.0,
                         layer=0), **fast)  # fmt: skip
    assert not (tmp_path / "bad").exists()
