"""The ``vllm`` backend against the shared backend contract, on the embedded model with vLLM's CPU build.

Runs where vllm is installed and loads: ``make vllm-env`` builds such an
environment beside the project's, and ``make test`` runs this module in it
(``make test-vllm``). Elsewhere every test skips with the reason. One float32
engine serves the module (vLLM runs float32 on CPUs, so greedy rows can be
compared with ``hf`` exactly); one bf16 engine checks that inexact scores are
routed. Where rows must not depend on what shares a batch, the assertion holds on
the CPU kind it was measured on (AVX-512) and is reported elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import persona_space as ps
from conftest import make_lora
from persona_space import provenance
from persona_space.engine import GenerateRequest, resolve_backend
from persona_space.errors import AdapterError, BackendUnavailableError
from test_backends import Interrupting

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROBES = ["Who are you?", "What is your name?", "Describe yourself in one sentence."]
SAMPLE: dict[str, Any] = {"n": 3, "temperatures": [0.0, 1.0], "max_new_tokens": 12, "progress": False, "seed": 3}
AVX512 = ("amx_bf16", "avx512_bf16", "avx512f")
MEASURED = provenance.cpu()["isa"] in AVX512  # the CPU kind vLLM's CPU build was measured on (rows batch-invariant)
SMOKE = """
import persona_space as ps
from persona_space.engine import GenerateRequest, resolve_backend
model = ps.load_model(dtype="float32")
request = GenerateRequest(
    key=0, prompt_ids=(1, 2, 3), adapter=None, temperature=0.0, top_p=1.0, max_new_tokens=2, seed=0
)
print(resolve_backend(model, "vllm").generate([request], stop_ids=frozenset()))
"""


@functools.cache
def _unavailable() -> str | None:
    """Why vLLM cannot run here, or ``None``; off AVX-512 an engine is first started in a child process (vLLM's
    CPU build may use instructions this CPU lacks, which would kill the test process)."""
    from persona_space.engine._vllm import import_vllm

    try:
        import_vllm()
    except BackendUnavailableError as exc:
        return str(exc)
    if MEASURED:
        return None
    try:
        run = subprocess.run([sys.executable, "-c", SMOKE], capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return "vLLM's CPU build did not start an engine within 300 s on this CPU"
    if run.returncode != 0:
        return f"vLLM's CPU build does not run on this CPU ({provenance.cpu()['isa']}): {run.stderr[-300:]}"
    return None


def _vllm_or_skip() -> None:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def model(smol_folder: Path) -> Iterator[Any]:
    _vllm_or_skip()
    yield ps.load_model(dtype="float32")  # its engine lives to the end of the process (see the bf16 test)


@pytest.fixture(scope="module")
def folders(smol_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("vllm-adapters")
    folders = {
        "zero": make_lora(smol_folder, work / "zero", seed=0, r=8, scale=0.0),
        "red": make_lora(smol_folder, work / "red", seed=1, r=8, scale=0.4),
    }
    with warnings.catch_warnings():  # PEFT warns that SmolLM2's head is tied to its embeddings
        warnings.simplefilter("ignore", UserWarning)
        folders["head"] = make_lora(smol_folder, work / "head", seed=2, r=8, scale=0.4, extra_targets=("lm_head",))
    return folders


def _conditions(folders: dict[str, Path]) -> dict[str, Any]:
    return {"base": None, "zero": folders["zero"], "red": folders["red"]}


def test_same_table_as_the_other_backends_greedy_rows_as_hf_and_a_zero_adapter_is_base(
    model: Any, folders: dict[str, Path]
) -> None:
    result = ps.sample(model, PROBES, adapters=_conditions(folders), backend="vllm", **SAMPLE)
    reference = ps.sample(model, PROBES, adapters=_conditions(folders), backend="hf", **SAMPLE)
    assert result.manifest["backend"]["name"] == "vllm"
    assert result.manifest["backend"]["vllm_version"]
    assert list(result.df.columns) == list(reference.df.columns)
    assert (result.df.dtypes == reference.df.dtypes).all()
    greedy = result.df["temperature"] == 0
    assert greedy.sum() == 3 * 3
    pd.testing.assert_series_equal(result.df.loc[greedy, "text"], reference.df.loc[greedy, "text"])
    by = {c: part.reset_index(drop=True) for c, part in result.df.groupby("condition")}
    sampled = by["base"]["temperature"] > 0
    # vLLM's seeded sampler draws the same noise for the same seed: conditions are paired within the backend
    assert by["zero"].loc[sampled, "text"].tolist() == by["base"].loc[sampled, "text"].tolist()
    assert by["red"]["text"].tolist() != by["base"]["text"].tolist()  # the random adapter does change texts


def test_adapters_mixed_in_one_batch_and_a_resume_after_a_crash_give_the_same_rows(
    model: Any, folders: dict[str, Path], tmp_path: Path
) -> None:
    conditions = _conditions(folders)
    whole = ps.sample(model, PROBES, adapters=conditions, backend="vllm", **SAMPLE).df
    alone = pd.concat(
        [ps.sample(model, PROBES, adapters={c: w}, backend="vllm", **SAMPLE).df for c, w in conditions.items()]
    )
    store = tmp_path / "run"
    inner = resolve_backend(model, "vllm")
    with pytest.raises(KeyboardInterrupt):
        ps.sample(model, PROBES, adapters=conditions, store=store, chunk_rows=2, backend=Interrupting(inner, 7),
                  **SAMPLE)  # fmt: skip
    stored = ps.SampleSet.load(store, partial=True)
    assert not stored.complete and 7 <= len(stored) < len(whole)
    resumed = ps.sample(model, PROBES, adapters=conditions, store=store, backend="vllm", **SAMPLE)
    assert resumed.complete and resumed.manifest["timings"]["new_rows"] == len(whole) - len(stored)
    keys = ["condition", "probe_id", "temperature", "sample_index"]
    assert not resumed.df.duplicated(keys).any() and len(resumed.df) == len(whole)  # nothing lost, nothing twice
    for label, other in (("alone", alone), ("resumed", resumed.df)):
        joined = whole.merge(other, on=keys, suffixes=("", "_other"))
        assert len(joined) == len(whole)
        same = float((joined["text"] == joined["text_other"]).mean())
        if MEASURED:
            assert same == 1.0, f"{label}: {same:.0%} of rows match the mixed run's"
        elif same < 1.0:
            pytest.xfail(f"{label}: {same:.0%} of rows match on this CPU kind (measured invariant on AVX-512 only)")


def test_scores_through_vllm_are_checked_against_hf(model: Any, folders: dict[str, Path]) -> None:
    kwargs: dict[str, Any] = {"candidates": ["Voyager 1", "Maria", "an AI assistant"], "probes": PROBES}
    result = ps.identity_shift(model, {"red": folders["red"]}, backend="vllm", progress=False, **kwargs)
    reference = ps.identity_shift(model, {"red": folders["red"]}, backend="hf", progress=False, **kwargs)
    backend = result.manifest["backend"]
    check = backend["score_check"]
    assert check["dtype"] == "float32" and check["checked_candidates"] > 0
    assert check["exact"] == (check["max_abs_difference"] <= 1e-3)
    assert backend["scorer"] == check["scorer"]
    np.testing.assert_allclose(result.df["logprob"], reference.df["logprob"], atol=1e-3)
    assert (result.df["rank"] == reference.df["rank"]).all()


def test_an_adapter_on_the_vocabulary_head_is_refused_before_anything_is_written(
    model: Any, folders: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "run"
    with warnings.catch_warnings():  # PEFT warns again on attaching it
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(AdapterError, match="lm_head"):
            ps.sample(model, PROBES, adapters={"head": folders["head"]}, store=store, backend="vllm", **SAMPLE)
        assert not store.exists()
        shift = ps.identity_shift(model, {"head": folders["head"]}, candidates=["Voyager 1"], probes=PROBES[:1],
                                  backend="vllm", progress=False)  # fmt: skip
    assert (
        shift.manifest["backend"]["scorer"] == "cpu" and "vocabulary head" in shift.manifest["backend"]["scorer_reason"]
    )


def test_progress_counts_tokens_as_they_are_made_and_stops_at_the_end_of_turn(model: Any) -> None:
    backend = resolve_backend(model, "vllm")
    prompt = tuple(model.encode("Say hello."))
    requests: Sequence[GenerateRequest] = [
        GenerateRequest(key=k, prompt_ids=prompt, adapter=None, temperature=1.0, top_p=1.0, max_new_tokens=40, seed=k)
        for k in range(4)
    ]
    counts: list[int] = []
    stops = frozenset(model.end_of_turn_ids)
    completions = backend.generate(requests, stop_ids=stops, on_tokens=counts.append)
    assert sorted(c.key for c in completions) == [0, 1, 2, 3]
    assert len(counts) > 4  # step by step, not once per finished row
    for completion in completions:
        assert not stops & set(completion.token_ids)
        assert completion.finish_reason == ("stop" if len(completion.token_ids) < 40 else "length")
    stopped = sum(len(c.token_ids) + (c.finish_reason == "stop") for c in completions)
    assert sum(counts) == stopped  # every token made, the end-of-turn ones included, counted once


def test_grpo_rollouts_through_vllm_serve_the_adapter_of_each_step(model: Any, tmp_path: Path) -> None:
    from persona_space.engine._vllm import _ENGINES

    spec = ps.GrpoSpec(steps=2, prompts_per_step=2, num_generations=2, max_completion_length=8, beta=0.0,
                       learning_rate=1e-3)  # fmt: skip
    seen: list[str] = []

    def shorter(prompts: list[str], responses: list[str]) -> list[float]:
        seen.extend(responses)
        return [-float(len(r)) for r in responses]

    for name in [n for n, a in model.adapters.items() if "lm_head" in a.target_modules]:
        model.adapters.detach(name)  # TRL's GRPO refuses a model with a LoRA on its head (another test's adapter)
    backend = resolve_backend(model, "vllm")
    info = ps.train_grpo(model, PROBES, reward=shorter, store=tmp_path / "g", grpo=spec, backend=backend,
                         progress=False)  # fmt: skip
    assert backend.serves["default"] == 2  # one LoRARequest per step, each with the adapter as that step left it
    assert not backend.served  # served no more once trained
    assert not [key for key in _ENGINES[id(model)].lora_ids if key[0] == "default"]  # unloaded from the engine
    assert len(seen) == 8 and any(seen)
    log = pd.read_parquet(tmp_path / "g" / "tables" / "training_log.parquet")
    assert len(log) == 2 and (log["rollout_tokens"] > 0).all()
    assert not (tmp_path / "g" / "rollouts").exists() and info.name in model.adapters
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["parameters"]["rollouts"] == "vllm" and manifest["rollouts"]["backend"]["name"] == "vllm"


@pytest.mark.skipif(os.environ.get("PERSONA_SPACE_VLLM_RAY", "1") == "0", reason="PERSONA_SPACE_VLLM_RAY=0")
def test_ray_actors_run_the_vllm_backend(model: Any, folders: dict[str, Path]) -> None:
    ray = pytest.importorskip("ray")
    import logging

    from persona_space.engine import RayBackend

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        backend = RayBackend(model, workers=1, cpus_per_worker=2, inner="vllm")
        result = ps.sample(model, PROBES, adapters=_conditions(folders), backend=backend, **SAMPLE)
        local = ps.sample(model, PROBES, adapters=_conditions(folders), backend="vllm", **SAMPLE)
    finally:
        ray.shutdown()
    assert result.manifest["backend"]["inner"] == "vllm"
    greedy = local.df["temperature"] == 0
    pd.testing.assert_series_equal(result.df.loc[greedy, "text"], local.df.loc[greedy, "text"])


def test_an_adapter_of_a_higher_rank_restarts_the_engine_in_the_same_process(
    model: Any, smol_folder: Path, tmp_path: Path
) -> None:
    from persona_space.engine._vllm import _ENGINES

    big = make_lora(smol_folder, tmp_path / "big", seed=5, r=64, scale=0.4)
    before = _ENGINES[id(model)]
    greedy = {"n": 1, "temperatures": [0.0], "max_new_tokens": 12, "progress": False, "seed": 0}
    got = ps.sample(model, PROBES, adapters={"big": big}, backend="vllm", **greedy)
    after = _ENGINES[id(model)]
    assert after is not before and after.max_lora_rank == 64
    reference = ps.sample(model, PROBES, adapters={"big": big}, backend="hf", **greedy)
    assert got.df["text"].tolist() == reference.df["text"].tolist()


def test_bf16_scores_are_routed_to_an_exact_scorer_with_the_reason(smol_folder: Path, folders: dict[str, Path]) -> None:
    # last in the module, and never released: shutting a vLLM engine down tears down vLLM's process-wide
    # parallel state, which the float32 engine of this module still uses
    _vllm_or_skip()
    model = ps.load_model(dtype="bfloat16")
    result = ps.identity_shift(
        model, {"red": folders["red"]}, candidates=["Voyager 1", "an AI assistant"], probes=PROBES[:1],
        backend="vllm", progress=False,
    )  # fmt: skip
    reference = ps.identity_shift(
        model, {"red": folders["red"]}, candidates=["Voyager 1", "an AI assistant"], probes=PROBES[:1],
        backend="cpu", progress=False,
    )  # fmt: skip
    backend = result.manifest["backend"]
    assert backend["scorer"] == "cpu" and not backend["score_check"]["exact"]
    assert "bfloat16" in backend["score_check"]["reason"]
    np.testing.assert_array_equal(result.df["logprob"], reference.df["logprob"])
