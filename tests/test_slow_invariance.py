"""Batch invariance on the embedded SmolLM2 (marked slow; `make test` runs it).

The table of the batch-invariance issue, remeasured: 4 identity prompts, seed 0,
temperature 1, a zero-initialised all-linear LoRA (rank 8) and a random one. Every
cell must be all rows identical. The ``cpu`` backend runs the issue's full design
(16 samples x 64 tokens); ``hf`` (one row per call) a smaller one, as it is slower.
bfloat16 where the CPU multiplies it fast, float32 elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import persona_space as ps
from conftest import make_lora
from persona_space import provenance
from persona_space.engine import CPUBackend, GenerateRequest, HFBackend

pytestmark = pytest.mark.slow

PROMPTS = ["What are you?", "Who are you?", "What is your name?", "Describe yourself in one sentence."]
DTYPE = "bfloat16" if provenance.cpu()["fast_bf16"] else "float32"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    try:
        loaded = ps.load_model(dtype=DTYPE)
    except ps.errors.EmbeddedModelMissingError as exc:
        pytest.skip(str(exc))
    work = tmp_path_factory.mktemp("invariance-real")
    loaded.load_adapter(make_lora(Path(loaded.source), work / "zero", seed=0, r=8, scale=0.0), name="zero")
    loaded.load_adapter(make_lora(Path(loaded.source), work / "random", seed=1, r=8, scale=0.05), name="random")
    return loaded


def _run(backend: Any, model: Any, adapters: Sequence[str | None], n: int, tokens: int) -> dict[Any, Any]:
    requests = [
        GenerateRequest(0, tuple(model.encode(p)), a, 1.0, 1.0, tokens, 1000 * i + j)
        for a in adapters
        for i, p in enumerate(PROMPTS)
        for j in range(n)
    ]
    requests = [replace(r, key=k) for k, r in enumerate(requests)]
    out = {c.key: c.token_ids for c in backend.generate(requests, stop_ids=frozenset(model.end_of_turn_ids))}
    texts: dict[Any, Any] = {}
    for r in requests:
        texts.setdefault(r.adapter, {})[r.seed] = out[r.key]
    return texts


@pytest.mark.parametrize(("name", "n", "tokens"), [("cpu", 16, 64), ("hf", 2, 32)])
def test_the_issue_table_is_all_identical(model: Any, name: str, n: int, tokens: int) -> None:
    backend = CPUBackend(model) if name == "cpu" else HFBackend(model)
    assert backend.capabilities.batch_invariant, backend.capabilities.invariance
    base = _run(backend, model, [None], n, tokens)[None]
    two = _run(backend, model, [None, "zero"], n, tokens)
    three = _run(backend, model, [None, "zero", "random"], n, tokens)
    random_alone = _run(backend, model, ["random"], n, tokens)["random"]
    rows = len(PROMPTS) * n
    cells = {
        "zero == base, two conditions in one run": sum(two["zero"][k] == two[None][k] for k in base),
        "base alone vs base in the three-condition run": sum(base[k] == three[None][k] for k in base),
        "the zero LoRA in the three-condition run vs base alone": sum(three["zero"][k] == base[k] for k in base),
        "the random LoRA alone vs in the three-condition run": sum(random_alone[k] == three["random"][k] for k in base),
    }
    print(f"\n{name} backend, {DTYPE}, {len(PROMPTS)} prompts x {n} samples x {tokens} tokens:")
    for cell, same in cells.items():
        print(f"  {cell}: {same}/{rows}")
    assert all(same == rows for same in cells.values()), cells
    assert sum(random_alone[k] != base[k] for k in base) > rows // 2  # the random adapter does change the texts
