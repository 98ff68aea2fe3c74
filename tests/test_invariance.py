"""Same seed, same text, whatever else shares the run: batch invariance of the ``cpu`` and ``hf`` backends.

A condition's texts must be the same sampled alone, beside one or three other
conditions, at batch sizes 1, 7 and 64, with prompts of mixed lengths, and after a
resume into another batch layout; a zero-initialised adapter must give the base
model's texts in every one of those layouts. Tiny random models in float32 and
bfloat16; the embedded model's table is in ``test_slow_real.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import persona_space as ps
from conftest import make_lora
from persona_space import provenance
from persona_space.engine import CPUBackend, GenerateRequest, HFBackend
from persona_space.engine._stack import DecoderStack

PROMPTS = ["Hi", "Who are you?", "Describe yourself in one sentence, and then say where you are right now."]
N = 4  # samples per prompt and condition
TOKENS = 12
CONDITIONS = (None, "zero", "red", "blue")

Texts = dict[tuple[str | None, int, int], tuple[int, ...]]  # (adapter, prompt, sample) -> tokens


@pytest.fixture(scope="module")
def models(make_tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny llama in float32 and bfloat16, each with a zero adapter and two random ones attached."""
    base = make_tiny_model_dir("llama")
    work = tmp_path_factory.mktemp("invariance")
    folders = {
        "zero": make_lora(base, work / "zero", seed=0, scale=0.0),
        "red": make_lora(base, work / "red", seed=1, scale=0.3),
        "blue": make_lora(base, work / "blue", seed=2, r=2, scale=0.3),
    }
    out = {}
    for dtype in ("float32", "bfloat16"):
        model = ps.load_model(str(base), device="cpu", dtype=dtype)
        for name, folder in folders.items():
            model.load_adapter(folder, name=name)
        out[dtype] = model
    return out


def _requests(model: Any, adapters: Sequence[str | None]) -> list[GenerateRequest]:
    requests = [
        GenerateRequest(
            key=0,
            prompt_ids=tuple(model.encode(prompt)),
            adapter=adapter,
            temperature=1.0,
            top_p=1.0,
            max_new_tokens=TOKENS,
            seed=1000 * p + s,
        )
        for adapter in adapters
        for p, prompt in enumerate(PROMPTS)
        for s in range(N)
    ]
    return [replace(r, key=k) for k, r in enumerate(requests)]


def _texts(backend: Any, model: Any, adapters: Sequence[str | None], reverse: bool = False) -> Texts:
    requests = _requests(model, adapters)
    if reverse:  # another order of the same requests
        requests = [replace(r, key=k) for k, r in enumerate(reversed(requests))]
    out = {c.key: c.token_ids for c in backend.generate(requests, stop_ids=frozenset())}
    return {(r.adapter, r.seed // 1000, r.seed % 1000): out[r.key] for r in requests}


def _of(texts: Texts, adapter: str | None) -> dict[tuple[int, int], tuple[int, ...]]:
    return {(p, s): t for (a, p, s), t in texts.items() if a == adapter}


def _backend(name: str, model: Any, batch_size: int | None) -> Any:
    if name == "cpu":
        return CPUBackend(model, batch_size="auto" if batch_size is None else batch_size)
    return HFBackend(model) if batch_size is None else HFBackend(model, batch_size=1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("backend_name", ["cpu", "hf"])
def test_a_conditions_texts_do_not_depend_on_what_shares_its_run(
    models: dict[str, Any], backend_name: str, dtype: str
) -> None:
    model = models[dtype]
    backend = _backend(backend_name, model, None)
    capabilities = backend.capabilities
    if backend_name == "cpu" and provenance.cpu()["fast_bf16"]:  # this CPU kind is measured: it must hold here
        assert capabilities.batch_invariant, capabilities.invariance
    if not capabilities.batch_invariant:
        pytest.skip(f"the {backend_name} backend states it is not batch-invariant here: {capabilities.invariance}")
    alone = {a: _of(_texts(backend, model, [a]), a) for a in CONDITIONS}
    assert alone["zero"] == alone[None]  # a zero adapter is the base model
    assert alone["red"] != alone[None] and alone["blue"] != alone["red"]  # the random adapters do change the texts
    layouts: dict[str, Texts] = {
        "with one other": _texts(backend, model, [None, "zero"]) | _texts(backend, model, ["red", "blue"]),
        "with three others": _texts(backend, model, list(CONDITIONS)),
        "in another order": _texts(backend, model, list(CONDITIONS), reverse=True),
    }
    sizes = (1, 7, 64) if backend_name == "cpu" else (1,)
    for size in sizes:
        layouts[f"batch size {size}"] = _texts(_backend(backend_name, model, size), model, list(CONDITIONS))
    for layout, texts in layouts.items():
        for adapter in CONDITIONS:
            assert _of(texts, adapter) == alone[adapter], f"{adapter or 'base'} {layout}"
        assert _of(texts, "zero") == alone[None], f"zero adapter {layout}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_resumed_run_in_another_batch_layout_gives_the_same_texts(
    models: dict[str, Any], dtype: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = models[dtype]
    if not CPUBackend(model).capabilities.batch_invariant:
        pytest.skip(CPUBackend(model).capabilities.invariance)
    options: dict[str, Any] = {"n": N, "temperatures": [1.0], "max_new_tokens": TOKENS, "seed": 0, "progress": False}
    whole = ps.sample(model, PROMPTS, adapters={"base": None, "zero": "zero", "red": "red"}, **options)
    store = tmp_path / "run"
    from persona_space.sampling import _runner

    real = _runner._ChunkWriter.flush
    written = {"chunks": 0}

    def crash_after_two_chunks(self: Any) -> None:
        real(self)
        written["chunks"] += 1
        if written["chunks"] == 2:
            raise KeyboardInterrupt  # killed with two chunks stored

    monkeypatch.setattr(_runner._ChunkWriter, "flush", crash_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        ps.sample(model, PROMPTS, adapters={"base": None, "zero": "zero", "red": "red"}, store=store, chunk_rows=5,
                  batch_size=3, **options)  # fmt: skip
    monkeypatch.setattr(_runner._ChunkWriter, "flush", real)
    assert 0 < len(ps.SampleSet.load(store, partial=True).df) < len(whole.df)
    resumed = ps.sample(
        model, PROMPTS, adapters={"base": None, "zero": "zero", "red": "red"}, store=store, batch_size=7, **options
    )
    key = ["condition", "probe_id", "sample_index"]
    a = whole.df.sort_values(key, ignore_index=True)
    b = resumed.df.sort_values(key, ignore_index=True)
    assert list(a["text"]) == list(b["text"])
    zero, base = (a[a["condition"] == c]["text"].tolist() for c in ("zero", "base"))
    assert zero == base


def test_the_backends_state_their_invariance_and_the_manifest_records_it(models: dict[str, Any]) -> None:
    model = models["float32"]
    assert not HFBackend(model, batch_size=8).capabilities.batch_invariant
    assert "left-padded" in HFBackend(model, batch_size=8).capabilities.invariance
    assert HFBackend(model).capabilities.batch_invariant  # one row per call is the default
    earlier = CPUBackend(model, invariant=False).capabilities
    assert not earlier.batch_invariant and "invariant=False" in earlier.invariance
    samples = ps.sample(model, PROMPTS[:1], n=1, max_new_tokens=2, progress=False)
    backend = samples.manifest["backend"]
    assert backend["capabilities"]["batch_invariant"] == CPUBackend(model).capabilities.batch_invariant
    assert backend["invariance"] == CPUBackend(model).capabilities.invariance


def test_the_eager_step_states_it_is_not_invariant(models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_space.engine import _native

    monkeypatch.setenv(_native.ENV, "0")
    stack = DecoderStack(models["float32"].base_module, build=False)
    assert not stack.invariant and "eager step" in stack.invariance
    assert not CPUBackend(models["float32"]).capabilities.batch_invariant


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("packed", [True, False])
def test_a_rows_product_is_the_same_in_a_call_of_every_size(dtype: torch.dtype, packed: bool) -> None:
    from persona_space.engine._products import TILE, TILES, Weight

    generator = torch.Generator().manual_seed(3)
    try:
        weight = Weight.of(torch.randn(96, 40, generator=generator).to(dtype), None, pack=packed)
    except RuntimeError as error:  # the engine checks packing the same way and goes unpacked
        pytest.skip(f"this torch build cannot prepack {dtype} weights on this CPU: {error}")
    if not weight.tiles:
        pytest.skip(f"{dtype} products depend on the other rows of a call on this CPU; the engine states so")
    assert weight.tiles[-1] == TILE and set(weight.tiles) <= set(TILES)
    x = torch.randn(2 * TILES[0] + 37, 40, generator=generator).to(dtype)
    alone = torch.cat([weight.tiled(x[i : i + 1]) for i in range(len(x))])
    for rows in (1, 7, 16, 64, 100, TILES[0], len(x)):
        assert torch.equal(weight.tiled(x[:rows]), alone[:rows]), rows
