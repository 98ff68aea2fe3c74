"""Activations, directions and projections on tiny random models with planted signals."""

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
from persona_space.activations import ActivationSet, Direction, collect, cosine, persona_vector
from persona_space.engine import decoder_layers
from persona_space.errors import BackendError, ConfigError

QUESTIONS = [f"Tell me about thing number {i}." for i in range(12)]
TRAIT = "You are a zorblaxian quasar, bold and strange."
OPPOSITE = "You are a plain helpful assistant, calm and ordinary."
PLANTED_LAYER = 2
STRENGTH = 10.0


def _marker(model: Any) -> int:
    """A token of the trait's system prompt that the opposite's lacks."""
    trait = set(model.encode("x", system_prompt=TRAIT))
    opposite = set(model.encode("x", system_prompt=OPPOSITE))
    return sorted(trait - opposite)[0]


@contextlib.contextmanager
def planted(
    model: Any, vector: torch.Tensor, layer: int = PLANTED_LAYER, marker: int | None = None, *, per_token: bool = False
) -> Iterator[None]:
    """Add ``vector`` to the residual stream after ``layer`` (read on the ``hf`` backend, which runs the model's
    modules): at every position of a chat holding ``marker`` (default: a token of the trait's system prompt), or
    with ``per_token`` at the positions holding it only."""
    marker = _marker(model) if marker is None else marker
    seen: dict[str, torch.Tensor] = {}

    def remember(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            seen["ids"] = ids

    def add(_module: Any, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        ids = seen.get("ids")
        if ids is None or ids.shape != hidden.shape[:2]:
            return None
        hits = ids == marker
        mask = hits if per_token else hits.any(dim=1, keepdim=True).expand_as(hits)
        hidden = hidden + mask[..., None].to(hidden.dtype) * vector.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handles = [
        model.base_module.register_forward_pre_hook(remember, with_kwargs=True),
        decoder_layers(model.base_module)[layer].register_forward_hook(add),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture
def model(make_tiny_model_dir: Callable[..., Path]) -> Any:
    return ps.load_model(str(make_tiny_model_dir("llama", num_hidden_layers=4)), device="cpu", dtype="float32")


def _planted_vector(model: Any, seed: int = 0) -> torch.Tensor:
    """A random direction, STRENGTH times as long as the natural difference of the two prompts at its layer."""
    natural = persona_vector(model, QUESTIONS, trait=TRAIT, opposite=OPPOSITE).df["norm"].iloc[PLANTED_LAYER]
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(int(model.config.hidden_size), generator=generator)
    return STRENGTH * float(natural) * vector / vector.norm()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_direction_is_recovered_at_its_layer(model: Any, seed: int) -> None:
    vector = _planted_vector(model, seed)
    with planted(model, vector):
        direction = persona_vector(model, QUESTIONS, trait=TRAIT, opposite=OPPOSITE, name="zorblax", backend="hf")
    assert direction.layer == PLANTED_LAYER, direction.df
    assert cosine(direction.vectors[PLANTED_LAYER], vector.numpy()) > 0.99
    assert (
        direction.df["separation"].iloc[PLANTED_LAYER] > 5 * direction.df["separation"].iloc[:PLANTED_LAYER].abs().max()
    )
    assert direction.manifest["criterion"].startswith("separation = Cohen's d")


def test_activations_are_the_layers_outputs_averaged_over_the_answer(model: Any, tmp_path: Path) -> None:
    items = ps.datasets.ChatDataset.from_records(
        "two",
        [{"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": f"Hello there {i}"}]}
         for i in range(3)],
    )  # fmt: skip
    acts = collect(
        model, items, store=tmp_path / "acts", progress=False, spec=ps.activations.ActivationSpec(batch_size=2)
    )
    assert acts.means.shape == (3, 4, int(model.config.hidden_size)) and acts.means.dtype == np.float32
    # the same numbers from the model's own hidden states, one item at a time, unpadded
    prompt = model.encode([{"role": "user", "content": "Hi 1"}])
    answer = model.tokenizer("Hello there 1", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.module(input_ids=torch.tensor([prompt + answer]), output_hidden_states=True)
    for layer in range(3):  # the last hidden state of transformers is after the final norm; ours is the layer's
        expected = out.hidden_states[layer + 1][0, len(prompt) :].mean(0).numpy()
        np.testing.assert_allclose(acts.means[1, layer], expected, rtol=1e-4, atol=1e-5)
    assert list(acts.df["n_tokens"]) == [len(answer)] * 3
    loaded = ps.results.load(tmp_path / "acts")
    assert isinstance(loaded, ActivationSet) and np.array_equal(loaded.means, acts.means)
    again = collect(
        model, items, store=tmp_path / "acts", progress=False, spec=ps.activations.ActivationSpec(batch_size=2)
    )
    assert np.array_equal(again.means, acts.means)


@pytest.mark.parametrize("where", ["response", "prompt_last"])
def test_activations_read_alike_on_hf_and_cpu_and_on_cpu_do_not_depend_on_the_batch(
    model: Any, make_adapter: Callable[..., Path], make_tiny_model_dir: Callable[..., Path], tmp_path: Path,
    where: str,
) -> None:  # fmt: skip
    adapter = make_adapter(make_tiny_model_dir("llama", num_hidden_layers=4), 3)
    vector = _planted_vector(model, 5).numpy()
    conditions = {"base": None, "lora": adapter, "away": ps.Steer(vector, alpha=-1.0, layer=1),
                  "both": ps.Steer(vector, mode="cap", cap=0.0, layer=2, adapter=adapter)}  # fmt: skip
    items = ps.datasets.ChatDataset.from_records(
        "chats",
        [{"messages": [{"role": "user", "content": f"Question {i}: " + "why " * (i % 4)},
                       {"role": "assistant", "content": "Because " + "so " * (1 + 2 * i % 5)}]} for i in range(7)],
    )  # fmt: skip
    spec = ps.activations.ActivationSpec(where=where, batch_size=3)  # type: ignore[arg-type]
    reads = {b: collect(model, items, adapters=conditions, spec=spec, progress=False, backend=b) for b in ("hf", "cpu")}
    assert reads["cpu"].manifest["backend"]["name"] == "cpu" and reads["hf"].manifest["backend"]["name"] == "hf"
    pd.testing.assert_frame_equal(reads["hf"].df, reads["cpu"].df)
    np.testing.assert_allclose(reads["cpu"].means, reads["hf"].means, rtol=2e-4, atol=2e-4)
    base = reads["cpu"].rows(condition="base")
    for name in ("lora", "away", "both"):  # every condition reads its own model
        assert np.abs(reads["cpu"].rows(condition=name) - base).max() > 1e-2, name
    # on cpu an item's reading is the same bits alone as in any batch, under any condition
    backend = ps.engine.CPUBackend(model)
    alone = collect(model, items, adapters=conditions, progress=False, backend=backend,
                    spec=ps.activations.ActivationSpec(where=where, batch_size=1))  # type: ignore[arg-type]  # fmt: skip
    assert "batch-invariant" in str(backend.last_invariance)
    np.testing.assert_array_equal(alone.means, reads["cpu"].means)
    # a backend that cannot read refuses before anything is written
    with pytest.raises(BackendError, match="cannot read activations"):
        collect(model, items, store=tmp_path / "never", progress=False, backend=BareBackend(model))
    assert not (tmp_path / "never").exists()


def test_directions_save_and_load_and_project(model: Any, tmp_path: Path) -> None:
    vector = _planted_vector(model)
    with planted(model, vector):
        direction = persona_vector(model, QUESTIONS, trait=TRAIT, opposite=OPPOSITE, backend="hf")
    direction.save(tmp_path / "d")
    loaded = ps.results.load(tmp_path / "d")
    assert isinstance(loaded, Direction) and loaded.layer == direction.layer
    np.testing.assert_array_equal(loaded.vectors, direction.vectors)
    assert direction.at(0).layer == 0
    with pytest.raises(ConfigError, match="layer must be"):
        direction.at(9)


def test_bad_inputs_are_refused(model: Any) -> None:
    with pytest.raises(ConfigError, match="needs answers"):
        collect(model, QUESTIONS, progress=False)
    with pytest.raises(ConfigError, match="where must be"):
        collect(model, QUESTIONS, where="middle", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same system prompt"):
        persona_vector(model, QUESTIONS, trait=TRAIT, opposite=TRAIT)
    with pytest.raises(ConfigError, match="at least 2 items"):
        persona_vector(model, QUESTIONS[:1], trait=TRAIT, opposite=OPPOSITE)


def test_the_bundled_roles_cover_the_seed_archetypes() -> None:
    names = {r.name for r in ps.activations.roles()}
    assert len(names) >= 50
    assert {"ghost", "angel", "soul", "house cat", "park ranger", "cyborg", "Voyager 1", "Napoleon Bonaparte"} <= names


def test_the_assistant_axis_recovers_a_planted_assistant_direction(model: Any, tmp_path: Path) -> None:
    from persona_space.activations import Role, assistant_axis

    personas = [Role(f"role{i}", "test", f"You are character number {i} of a story, called Zed{i}.") for i in range(6)]
    marker = sorted(
        set(model.encode("x")) - {t for r in personas for t in model.encode("x", system_prompt=r.system_prompt)}
    )[0]
    natural = (
        assistant_axis(model, QUESTIONS[:6], personas=personas, progress=False).axis.df["norm"].iloc[PLANTED_LAYER]
    )
    vector = torch.randn(int(model.config.hidden_size), generator=torch.Generator().manual_seed(3))
    vector = STRENGTH * float(natural) * vector / vector.norm()
    with planted(model, vector, marker=marker):
        space = assistant_axis(model, QUESTIONS[:6], personas=personas, store=tmp_path / "space", progress=False,
                               backend="hf")  # fmt: skip
    assert space.layer == PLANTED_LAYER
    assert cosine(space.axis.vectors[PLANTED_LAYER], vector.numpy()) > 0.99
    table = space.df.set_index("role")
    assert (
        len(table) == 7 and table.loc["assistant", "axis_projection"] > table.drop("assistant")["axis_projection"].max()
    )
    assert table.loc["assistant", "pc1"] > 0 and 0 < sum(space.manifest["explained_variance"]) <= 1 + 1e-9
    loaded = ps.results.load(tmp_path / "space")
    assert isinstance(loaded, ps.activations.PersonaSpace)
    np.testing.assert_array_equal(loaded.components, space.components)
    acts = collect(model, QUESTIONS[:6], where="prompt_last", progress=False)
    placed = space.place(acts)
    assert list(placed["condition"]) == ["base"] and {"axis_projection", "pc1", "pc2", "pc3"} <= set(placed.columns)
    # the charts and the report's section
    chart = ps.plots.persona_space_map(space.df, placed).to_dict()
    assert len(chart["layer"]) == 4 and ps.plots.layer_profile(space.layers).to_dict()["layer"]
    from persona_space.html_report import write_report

    space.axis.save(tmp_path / "axis")
    page = write_report([tmp_path], tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Persona space: " in page and "Direction: " in page and "could not be read" not in page
    assert page.count("Activations:") == 0  # the space's own activation sets are its parts, not sections


def test_the_layer_criterion_skips_the_first_layer_and_takes_the_largest_gain() -> None:
    from persona_space.activations import choose_layer

    assert choose_layer([5.0, 3.0, 6.0, 10.0, 13.0]) == 3  # gains after the first: -2, 3, 4, 3
    assert choose_layer([7.0]) == 0
    assert choose_layer([1.0, float("inf"), 2.0]) == 1
    with pytest.raises(ConfigError):
        choose_layer([])


def _planted_adapter(model: Any, folder: Path, vector: torch.Tensor, *, scale: float, seed: int = 0) -> torch.Tensor:
    """A rank-1 LoRA on the planted layer's down projection writing ``vector * (a . x)``: it moves the residual
    stream after that layer along ``vector`` only. Returns ``a`` (scaled)."""
    from peft import LoraConfig, get_peft_model

    base = ps.load_model(str(model.source), device="cpu", dtype="float32").module
    config = LoraConfig(r=1, lora_alpha=1, target_modules=["down_proj"], layers_to_transform=[PLANTED_LAYER],
                        lora_dropout=0.0)  # fmt: skip
    peft = get_peft_model(base, config)
    a = torch.randn(int(model.config.intermediate_size), generator=torch.Generator().manual_seed(seed)) * scale
    with torch.no_grad():
        for name, module in peft.named_modules():
            if name.endswith(f"layers.{PLANTED_LAYER}.mlp.down_proj"):
                module.lora_A["default"].weight.copy_(a[None, :])
                module.lora_B["default"].weight.copy_(vector[:, None])
    peft.save_pretrained(str(folder))
    return a


def _down_inputs(model: Any, questions: list[str]) -> torch.Tensor:
    """The planted layer's down-projection input at each question's last prompt token (base model)."""
    seen: list[torch.Tensor] = []
    layer = decoder_layers(model.base_module)[PLANTED_LAYER]
    handle = layer.mlp.down_proj.register_forward_hook(lambda _m, args, _o: seen.append(args[0][0, -1].detach()))
    try:
        with torch.inference_mode():
            for question in questions:
                model.module(input_ids=torch.tensor([model.encode(question)]))
    finally:
        handle.remove()
    return torch.stack(seen)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_planted_adapter_moves_along_its_direction_by_its_size(model: Any, tmp_path: Path, sign: float) -> None:
    from persona_space.activations import shift_along

    hidden = int(model.config.hidden_size)
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(7))
    vector = sign * vector / vector.norm()
    a = _planted_adapter(model, tmp_path / "planted", vector, scale=0.5)
    inputs = _down_inputs(model, QUESTIONS)
    expected = float((inputs @ a).mean())  # the mean shift along the unit vector at the planted layer
    vectors = np.zeros((len(decoder_layers(model.base_module)), hidden), dtype=np.float32)
    vectors[PLANTED_LAYER] = vector.numpy()
    direction = Direction.from_vectors(vectors, layer=PLANTED_LAYER, name="planted")
    other = np.zeros_like(vectors)
    orthogonal = torch.randn(hidden, generator=torch.Generator().manual_seed(8))
    orthogonal -= (orthogonal @ vector) * vector
    other[PLANTED_LAYER] = orthogonal.numpy()
    table = shift_along(model, {"planted": tmp_path / "planted"}, [direction,
                        Direction.from_vectors(other, layer=PLANTED_LAYER, name="orthogonal")], QUESTIONS)  # fmt: skip
    row = table.set_index("direction").loc["planted"]
    assert row["difference"] == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert np.sign(row["difference"]) == np.sign(expected) and row["low"] <= row["difference"] <= row["high"]
    assert abs(table.set_index("direction").loc["orthogonal", "difference"]) < 1e-3 * abs(expected)
    assert {"p_value", "p_adjusted", "groups", "layer"} <= set(table.columns)


def test_sample_projections_join_the_samples(model: Any) -> None:
    from persona_space.activations import sample_projections

    samples = ps.sample(model, QUESTIONS[:3], n=2, max_new_tokens=4, progress=False)
    acts = collect(model, samples, progress=False)
    direction = Direction.from_vectors(acts.means.mean(axis=0), layer=1, name="mean")
    frame = sample_projections(acts, direction)
    joined = samples.df.merge(frame, on=["condition", "adapter", "probe_id", "temperature", "sample_index"])
    assert len(joined) == len(samples.df) == 6 and np.isfinite(joined["mean"]).all()


def test_drift_reads_every_turn_of_a_conversation_in_context(model: Any) -> None:
    from persona_space.activations import drift, turn_items

    probe = ps.probes.load("conversations").probes[0]
    samples = ps.sample(model, ps.probes.ProbeSet("talk", [probe]), n=2, max_new_tokens=3, progress=False)
    turns = len(probe.turns) + 1
    direction = Direction.from_vectors(np.ones((4, int(model.config.hidden_size)), np.float32), layer=1, name="ones")
    frame = drift(model, samples, direction)
    assert len(frame) == 2 * turns and sorted(set(frame["turn"])) == list(range(1, turns + 1))
    assert np.isfinite(frame["ones"]).all() and (frame["reader"] == "base").all()
    # the last turn read in context is that answer, after the whole chat before it
    items = turn_items(samples)
    last = items[turns - 1]
    assert last.response == samples.df["text"].iloc[0] and len(last.prompt) == 2 * turns - 1


def test_a_training_sets_projection_tracks_how_much_of_it_carries_the_direction(model: Any) -> None:
    from persona_space.activations import correlate, data_projection

    marker = int(model.tokenizer.encode(" zorblax", add_special_tokens=False)[0])
    vector = _planted_vector(model, 4)
    orthogonal = torch.randn(vector.shape, generator=torch.Generator().manual_seed(9))
    orthogonal -= (orthogonal @ vector) / (vector @ vector) * vector
    layers = len(decoder_layers(model.base_module))
    along = Direction.from_vectors(np.tile(vector.numpy(), (layers, 1)), layer=PLANTED_LAYER, name="planted")
    across = Direction.from_vectors(np.tile(orthogonal.numpy(), (layers, 1)), layer=PLANTED_LAYER, name="other")
    shares, differences, others = [0.0, 0.25, 0.5, 0.75, 1.0], [], []
    for share in shares:
        records = []
        for i in range(10):
            words = ["zorblax" if (i + j) % 4 < 4 * share else "quiet" for j in range(8)]
            records.append({"messages": [{"role": "user", "content": f"Tell me thing {i}."},
                                         {"role": "assistant", "content": " " + " ".join(words)}]})  # fmt: skip
        data = ps.datasets.ChatDataset.from_records(f"share{int(share * 100)}", records)
        with planted(model, vector, marker=marker, per_token=True):
            table = data_projection(model, data, [along, across], max_new_tokens=8, backend="hf")
        row = table.set_index("direction")
        differences.append(float(row.loc["planted", "difference"]))
        others.append(float(row.loc["other", "difference"]))
    # the words differ from the model's own answers along any direction; only the planted one grows with the share
    assert differences == sorted(differences)
    assert differences[-1] - differences[0] > 0.1 * float(vector.norm())  # the marker is one of the word's tokens
    assert np.ptp(others) < 0.1 * (differences[-1] - differences[0])
    assert table["records"].iloc[0] == 10 and set(table["layer"]) == {PLANTED_LAYER}
    assert np.isfinite(table["p_adjusted"]).all()
    result = correlate(shares, differences, names=[f"s{i}" for i in range(5)])
    assert result["spearman"] > 0.999 and result["pearson"] > 0.85
    assert result["pearson_low"] <= result["pearson"] <= result["pearson_high"]
    assert result["pairs"] == 5
    assert np.isnan(correlate([1, 2, 3], [1, 2, 3])["pearson"])
    with pytest.raises(ConfigError, match="1-D"):
        correlate([1, 2, 3, 4], [1, 2, 3])
