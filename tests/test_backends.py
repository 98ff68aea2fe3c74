"""Every backend behind one contract: the same table, the same rows for the same seeds, resume, mixed adapters.

The behaviour tests run once per backend available here (``cpu``, ``hf`` and, where
the ray package is installed, ``ray`` on a local instance with two workers), against
the rows of the ``cpu`` backend. A tiny gpt-neox model (an architecture the cpu
engine does not drive) samples, scores and trains through ``hf`` and ``auto``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import persona_space as ps
from persona_space.engine import (
    Backend,
    CPUBackend,
    GenerateRequest,
    HFBackend,
    RayBackend,
    require_generation,
    resolve_backend,
)
from persona_space.errors import BackendError, BackendUnavailableError, ConfigError, UnsupportedModelError

HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_VLLM = importlib.util.find_spec("vllm") is not None
BACKENDS = ["cpu", "hf", *(["ray"] if HAS_RAY else [])]
PROBES = ["Who are you?", "What is your name?", "Describe yourself in one sentence."]
SAMPLE = {"n": 3, "temperatures": [0.0, 1.0], "max_new_tokens": 8, "progress": False}
CANDIDATES = ["Voyager 1", "Maria", "an AI assistant"]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """A local Ray instance with two CPUs for the module (two one-CPU workers)."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture
def backend_for(request: pytest.FixtureRequest) -> Callable[[str, Any], Backend | str]:
    """Factory: a backend (or its name) for a model. Ray backends of one model share their two actors."""

    def make(name: str, model: Any) -> Backend | str:
        if name != "ray":
            return name
        request.getfixturevalue("ray_local")
        return RayBackend(model, workers=2, cpus_per_worker=1, shard_size=4)

    return make


class Interrupting:
    """A backend that stops the run (as Ctrl-C would) after ``after`` completions."""

    def __init__(self, inner: Backend, after: int) -> None:
        self.inner, self.after = inner, after
        self.name, self.capabilities = inner.name, inner.capabilities
        self.model = getattr(inner, "model", None)

    def generate(self, requests: Sequence[GenerateRequest], **kwargs: Any) -> Any:
        seen = {"n": 0}
        forward = kwargs.pop("on_complete")

        def on_complete(completion: Any) -> None:
            forward(completion)
            seen["n"] += 1
            if seen["n"] == self.after:
                raise KeyboardInterrupt("interrupted")

        return self.inner.generate(requests, on_complete=on_complete, **kwargs)

    def score(self, requests: Any, **kwargs: Any) -> Any:
        return self.inner.score(requests, **kwargs)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def _conditions(adapter_a: Path, adapter_b: Path) -> dict[str, Any]:
    return {"base": None, "a": adapter_a, "b": adapter_b}


# -- the contract, per backend -----------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_same_table_and_rows_as_the_cpu_backend(
    name: str, tiny_model: Any, adapter_a: Path, adapter_b: Path, backend_for: Any
) -> None:
    """Same columns and types; greedy rows equal in float32; sampled rows equal (paired streams)."""
    conditions = _conditions(adapter_a, adapter_b)
    reference = ps.sample(tiny_model, PROBES, adapters=conditions, backend="cpu", **SAMPLE).df
    result = ps.sample(tiny_model, PROBES, adapters=conditions, backend=backend_for(name, tiny_model), **SAMPLE)
    assert result.manifest["backend"]["name"] == name
    assert list(result.df.columns) == list(reference.columns)
    assert (result.df.dtypes == reference.dtypes).all()
    greedy = reference["temperature"] == 0
    assert greedy.sum() == 3 * 3  # one greedy row per probe and condition
    pd.testing.assert_frame_equal(result.df[greedy], reference[greedy])
    same = (result.df["text"] == reference["text"]).mean()
    assert same == 1.0, f"{name}: {same:.0%} of sampled rows match the cpu backend's"
    assert result.df["adapter"].nunique() == 3 and len(set(reference["text"])) > 9  # the adapters differ


@pytest.mark.parametrize("name", BACKENDS)
def test_adapters_mixed_in_one_batch_match_separate_runs(
    name: str, tiny_model: Any, adapter_a: Path, adapter_b: Path, backend_for: Any
) -> None:
    backend = backend_for(name, tiny_model)
    mixed = ps.sample(tiny_model, PROBES, adapters=_conditions(adapter_a, adapter_b), backend=backend, **SAMPLE).df
    for condition, where in (("a", adapter_a), ("base", None)):
        alone = ps.sample(tiny_model, PROBES, adapters={condition: where}, backend=backend, **SAMPLE).df
        part = mixed[mixed["condition"] == condition].reset_index(drop=True)
        pd.testing.assert_frame_equal(part.drop(columns="run_id"), alone.drop(columns="run_id"))


@pytest.mark.parametrize("name", BACKENDS)
def test_resume_after_a_crash_loses_and_repeats_nothing(
    name: str, tiny_model: Any, adapter_a: Path, tmp_path: Path, backend_for: Any
) -> None:
    conditions = {"base": None, "a": adapter_a}
    whole = ps.sample(tiny_model, PROBES, adapters=conditions, backend="cpu", **SAMPLE).df
    backend = backend_for(name, tiny_model)
    inner = resolve_backend(tiny_model, backend)
    store = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        ps.sample(
            tiny_model, PROBES, adapters=conditions, store=store, chunk_rows=2, backend=Interrupting(inner, 7), **SAMPLE
        )
    stored = ps.SampleSet.load(store, partial=True)
    assert not stored.complete and 7 <= len(stored) < len(whole)
    resumed = ps.sample(tiny_model, PROBES, adapters=conditions, store=store, backend=backend, **SAMPLE)
    assert resumed.complete and resumed.manifest["timings"]["new_rows"] == len(whole) - len(stored)
    pd.testing.assert_frame_equal(resumed.df.drop(columns="run_id"), whole.drop(columns="run_id"))


@pytest.mark.parametrize("name", BACKENDS)
def test_scores_agree_with_the_cpu_backend(name: str, tiny_model: Any, adapter_a: Path, backend_for: Any) -> None:
    kwargs: dict[str, Any] = {"candidates": CANDIDATES, "prompts": PROBES, "progress": False}
    reference = ps.identity_shift(tiny_model, {"a": adapter_a}, backend="cpu", **kwargs)
    result = ps.identity_shift(tiny_model, {"a": adapter_a}, backend=backend_for(name, tiny_model), **kwargs)
    assert result.manifest["backend"]["name"] == name
    assert list(result.df.columns) == list(reference.df.columns)
    np.testing.assert_allclose(result.df["logprob"], reference.df["logprob"], atol=1e-4)
    assert (result.df["rank"] == reference.df["rank"]).all()


# -- an architecture the cpu engine does not drive -----------------------------------------------------


@pytest.fixture(scope="module")
def neox_dir(make_tiny_model_dir: Callable[..., Path]) -> Path:
    return make_tiny_model_dir("gpt_neox")


def test_gpt_neox_samples_scores_and_trains_through_hf_and_auto(neox_dir: Path, tmp_path: Path) -> None:
    import torch

    model = ps.load_model(str(neox_dir), device="cpu", dtype="float32")
    assert model.config.model_type == "gpt_neox"
    assert resolve_backend(model).name == "hf"  # auto
    with pytest.raises(UnsupportedModelError, match="gpt_neox"):
        require_generation(CPUBackend(model), model)
    auto = ps.sample(model, PROBES, **SAMPLE)
    hf = ps.sample(model, PROBES, backend="hf", **SAMPLE)
    assert auto.manifest["backend"]["name"] == "hf"
    pd.testing.assert_frame_equal(auto.df, hf.df)
    # a greedy row is the model's own greedy continuation
    prompt = model.encode(PROBES[0])
    with torch.inference_mode():
        own = model.module.generate(
            input_ids=torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=2, pad_token_id=2
        )[0, len(prompt) :].tolist()
    own = own[: own.index(2)] if 2 in own else own
    greedy = auto.df[(auto.df["temperature"] == 0) & (auto.df["prompt"] == PROBES[0])]
    assert greedy["n_tokens"].item() == len(own)
    assert greedy["text"].item() == model.tokenizer.decode(own, skip_special_tokens=True)
    # training, with answers to the eval probes logged during training (through hf)
    data = ps.datasets.ChatDataset.from_records(
        "tiny", [{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Neo."}]}]
    )
    spec = ps.TrainSpec(max_steps=2, batch_size=1, eval_every=1, eval_probes=("Who are you?",), eval_max_new_tokens=4)
    info = ps.train_adapter(model, data, store=tmp_path / "neo", train=spec, progress=False)
    assert info.name in model.adapters
    log = (tmp_path / "neo" / "probe_log.jsonl").read_text().splitlines()
    assert len(log) == 3  # steps 0, 1 and 2
    assert ps.AdapterRun.load(tmp_path / "neo").manifest["probe_backend"] == "hf"
    # scoring: the padded reference (auto = hf here) and the packed scorer agree on this architecture too
    kwargs: dict[str, Any] = {"candidates": CANDIDATES, "prompts": PROBES, "progress": False}
    shift = ps.identity_shift(model, {"neo": info}, **kwargs)
    packed = ps.identity_shift(model, {"neo": info}, backend=CPUBackend(model, score_method="packed"), **kwargs)
    assert (shift.manifest["method"], packed.manifest["method"]) == ("padded", "packed")
    np.testing.assert_allclose(shift.df["logprob"], packed.df["logprob"], atol=1e-4)
    after = ps.sample(model, PROBES, adapters={"neo": info}, **SAMPLE)
    assert after.manifest["backend"]["name"] == "hf" and len(after) == len(auto)


# -- the Ray backend ---------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_RAY, reason="the ray package is not installed (pip install 'persona-space[ray]')")
def test_ray_worker_killed_mid_run_loses_no_row(
    tiny_model: Any, adapter_a: Path, adapter_b: Path, ray_local: Any
) -> None:
    conditions = _conditions(adapter_a, adapter_b)
    reference = ps.sample(tiny_model, PROBES, adapters=conditions, backend="hf", **SAMPLE).df
    backend = RayBackend(tiny_model, workers=2, cpus_per_worker=1, shard_size=3)
    pids = set(ray_local.get([actor.pid.remote() for actor in backend.start()]))
    killed: list[int] = []

    class KillOne(Interrupting):
        def generate(self, requests: Sequence[GenerateRequest], **kwargs: Any) -> Any:
            forward = kwargs.pop("on_complete")

            def on_complete(completion: Any) -> None:
                forward(completion)
                if not killed:
                    ray_local.kill(backend.actors[1], no_restart=False)  # the worker dies; Ray restarts it
                    killed.append(completion.key)

            return self.inner.generate(requests, on_complete=on_complete, **kwargs)

    result = ps.sample(tiny_model, PROBES, adapters=conditions, backend=KillOne(backend, 0), **SAMPLE)
    assert killed and backend.retried_shards >= 1
    assert result.manifest["backend"]["retried_shards"] == backend.retried_shards
    keys = ["adapter", "probe_id", "temperature", "sample_index"]
    assert not result.df.duplicated(keys).any() and len(result) == len(reference)
    pd.testing.assert_frame_equal(result.df, reference)
    for _ in range(300):  # the killed worker may still be restarting: the run did not wait for it
        try:
            after = set(ray_local.get([actor.pid.remote() for actor in backend.actors], timeout=60))
            break
        except ray_local.exceptions.RayError:
            time.sleep(0.2)
    assert len(after - pids) == 1  # one worker process was replaced, and it is back


@pytest.mark.skipif(not HAS_RAY, reason="the ray package is not installed (pip install 'persona-space[ray]')")
def test_ray_refuses_an_adapter_it_cannot_load_and_reports_worker_errors(tiny_model: Any, ray_local: Any) -> None:
    backend = RayBackend(tiny_model, workers=1, shard_size=2)
    try:
        request = GenerateRequest(0, (1, 2, 3), "missing", 1.0, 1.0, 2, 0)
        with pytest.raises(ConfigError, match="not attached from a folder"):
            backend.generate([request], stop_ids=frozenset())
        assert backend.describe()["workers"] == 1
    finally:
        backend.shutdown()


# -- choosing a backend ------------------------------------------------------------------------------


def test_resolve_backend(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(resolve_backend(tiny_model), CPUBackend)  # auto on a llama
    assert isinstance(resolve_backend(tiny_model, "hf"), HFBackend)
    if not HAS_VLLM:
        with pytest.raises(BackendUnavailableError, match=r"vllm is not installed.*make vllm-env"):
            resolve_backend(tiny_model, "vllm")
    with pytest.raises(ConfigError, match="backend must be one of"):
        resolve_backend(tiny_model, "tpu")
    with pytest.raises(ConfigError, match="Backend object"):
        resolve_backend(tiny_model, 3)  # type: ignore[arg-type]
    other = ps.load_model(tiny_model.source, device="cpu", dtype="float32")
    with pytest.raises(ConfigError, match="another model"):
        resolve_backend(tiny_model, HFBackend(other))
    with pytest.raises(ConfigError, match="batch_size"):
        resolve_backend(tiny_model, "hf", batch_size=0)
    with pytest.raises(ConfigError, match="method"):
        ps.identity_shift(tiny_model, [], candidates=["x"], method="packed", backend="hf", progress=False)
    if not HAS_RAY:
        with pytest.raises(BackendUnavailableError, match="pip install"):
            resolve_backend(tiny_model, "ray")
    for backend in (CPUBackend(tiny_model), HFBackend(tiny_model)):
        described = backend.describe()
        assert described["name"] == backend.name and described["capabilities"]["paired_streams"]
    assert CPUBackend(tiny_model).describe()["heap_tuning"]["env"].startswith("PERSONA_SPACE_HEAP_TUNING=")


def test_hf_generate_stops_and_truncates_per_request(tiny_model: Any) -> None:
    """Requests of one batch keep their own limits, stop tokens and streams."""
    prompt = tuple(tiny_model.encode("Who are you?"))
    requests = [
        GenerateRequest(10, prompt, None, 0.0, 1.0, 6, 0),
        GenerateRequest(11, prompt, None, 0.0, 1.0, 2, 0),
        GenerateRequest(12, prompt[:-3], None, 1.0, 1.0, 5, 7),
    ]
    hf = {c.key: c for c in HFBackend(tiny_model, batch_size=3).generate(requests, stop_ids=frozenset())}
    cpu = {c.key: c for c in CPUBackend(tiny_model).generate(requests, stop_ids=frozenset())}
    assert hf == cpu and set(hf) == {10, 11, 12}
    assert hf[11].token_ids == hf[10].token_ids[:2] and hf[11].finish_reason == "length"
    stop = hf[10].token_ids[1]
    cut = HFBackend(tiny_model).generate(requests[:1], stop_ids=frozenset({stop}))[0]
    assert cut.token_ids == hf[10].token_ids[: hf[10].token_ids.index(stop)] and cut.finish_reason == "stop"


@pytest.mark.skipif(not HAS_RAY, reason="the ray package is not installed (pip install 'persona-space[ray]')")
def test_ray_embedding_shards_give_the_local_vectors(tiny_embedder_dir: Path, tiny_model: Any, ray_local: Any) -> None:
    from persona_space.embedding import Embedder
    from persona_space.engine import shutdown_actors

    texts = [f"I am persona number {i}, and I like {'long ' * (i % 40)}walks." for i in range(60)]
    local = Embedder(str(tiny_embedder_dir), cache=False, dtype="float32").embed(texts)
    sharded = Embedder(str(tiny_embedder_dir), cache=False, dtype="float32", backend="ray", shard_size=16)
    RayBackend(
        tiny_model, workers=2, cpus_per_worker=1
    ).start()  # model actors holding both CPUs: tasks could never run
    with pytest.raises(BackendError, match=r"hold the rest; call backend.shutdown\(\)"):
        sharded.embed(texts)
    assert shutdown_actors() == 2
    vectors = sharded.embed(texts)
    np.testing.assert_allclose(vectors, local, atol=1e-5)
    assert sharded.stats["computed"] == 60 and sharded.stats["chunked"] > 0  # long texts were split on the workers
    with pytest.raises(ConfigError, match="backend must be"):
        Embedder(backend="gpu")  # type: ignore[arg-type]


def test_cpu_backend_records_the_process_state_it_changes(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The allocator tuning is process-wide and permanent for the mmap threshold: the manifest says so."""
    import sys

    from persona_space.engine import heap_state

    monkeypatch.setenv("PERSONA_SPACE_PACKED_LINEAR", "0")
    backend = CPUBackend(tiny_model)
    backend.generate([GenerateRequest(0, (1, 2, 3), None, 0.0, 1.0, 2, 0)], stop_ids=frozenset())
    described = backend.describe()
    assert described["packed_linear"] == "PERSONA_SPACE_PACKED_LINEAR=0"
    state = heap_state()
    assert described["heap_tuning"] == state
    if sys.platform.startswith("linux") and state["active"]:
        assert state["mmap_threshold"] == 32 << 20 and state["during_generation"]["trim_threshold"] == 1 << 30
    monkeypatch.setenv("PERSONA_SPACE_HEAP_TUNING", "0")
    assert heap_state()["active"] is False


class Dropping(Interrupting):
    """A backend that loses its last request (or repeats its first)."""

    def __init__(self, inner: Backend, repeat: bool = False) -> None:
        super().__init__(inner, after=0)
        self.repeat = repeat

    def generate(self, requests: Sequence[GenerateRequest], **kwargs: Any) -> Any:
        forward = kwargs.pop("on_complete")
        done = self.inner.generate(requests, **kwargs)
        for completion in [*done[:1], *done] if self.repeat else done[:-1]:
            forward(completion)
        return done


@pytest.mark.parametrize("repeat", [False, True])
def test_a_backend_that_loses_or_repeats_a_row_is_caught(tiny_model: Any, tmp_path: Path, repeat: bool) -> None:
    from persona_space.errors import BackendError

    backend = Dropping(CPUBackend(tiny_model), repeat=repeat)
    with pytest.raises(BackendError, match="twice" if repeat else "completed 11 of 12 requests"):
        ps.sample(tiny_model, PROBES, store=tmp_path / "run", backend=backend, **SAMPLE)
    resumed = ps.sample(tiny_model, PROBES, store=tmp_path / "run", **SAMPLE)
    assert resumed.complete and len(resumed) == 3 * 4


@pytest.mark.parametrize("name", ["cpu", "hf"])
def test_generating_with_an_adapter_that_is_not_attached_is_refused(
    name: str, tiny_model: Any, adapter_a: Path
) -> None:
    """PEFT would quietly run an unknown adapter name as the base model."""
    tiny_model.load_adapter(adapter_a, "a", check_base=False)
    backend = resolve_backend(tiny_model, name)
    request = GenerateRequest(0, (1, 2, 3), "a", 0.0, 1.0, 2, 0)
    assert len(backend.generate([request], stop_ids=frozenset())) == 1
    with pytest.raises(ConfigError, match=r"adapters \['gone'\] are not attached"):
        backend.generate([GenerateRequest(0, (1, 2, 3), "gone", 0.0, 1.0, 2, 0)], stop_ids=frozenset())


def test_detach_leaves_no_trainable_weights_and_no_lora_layers(
    tiny_model: Any, adapter_a: Path, adapter_b: Path
) -> None:
    tiny_model.load_adapter(adapter_a, "a", check_base=False)
    tiny_model.load_adapter(adapter_b, "b", check_base=False)
    tiny_model.adapters.detach("a")
    assert list(tiny_model.adapters) == ["b"] and not any(p.requires_grad for p in tiny_model.module.parameters())
    tiny_model.adapters.detach("b")
    assert type(tiny_model.module).__name__ == "LlamaForCausalLM" and len(tiny_model.adapters) == 0
    with pytest.raises(ConfigError, match="no adapter named 'b'"):
        tiny_model.adapters.detach("b")


@pytest.mark.skipif(not HAS_RAY, reason="the ray package is not installed (pip install 'persona-space[ray]')")
def test_ray_backends_recover_from_released_actors(tiny_model: Any, ray_local: Any) -> None:
    """A backend whose pooled actors were shut down starts new ones instead of waiting on dead handles."""
    from persona_space.engine import shutdown_actors

    backend = RayBackend(tiny_model, workers=1, cpus_per_worker=1, shard_size=8)
    first = ps.sample(tiny_model, PROBES, backend=backend, **SAMPLE).df
    shutdown_actors()
    again = ps.sample(tiny_model, PROBES, backend=backend, **SAMPLE).df
    pd.testing.assert_frame_equal(first.drop(columns="run_id"), again.drop(columns="run_id"))
    shutdown_actors()


def test_vllm_backend_parts_that_need_no_engine(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_space.engine import _local, _vllm

    assert [_vllm.lora_rank_for(r) for r in ([], [None], [8], [16, 17], [300])] == [16, 16, 16, 32, 320]
    with pytest.raises(ps.errors.AdapterError, match="rank 600"):
        _vllm.lora_rank_for([600])
    request = GenerateRequest(
        key=5, prompt_ids=(1,), adapter=None, temperature=1.0, top_p=1.0, max_new_tokens=3, seed=0
    )
    assert _vllm._completion(request, [7, 2, 9], frozenset({2})) == ps.engine.Completion(5, (7,), "stop")
    assert _vllm._completion(request, [7, 8, 9, 10], frozenset({2})) == ps.engine.Completion(5, (7, 8, 9), "length")
    assert _local.auto_backend_name(tiny_model) == "cpu"  # on a CPU the cpu engine stays the default
    monkeypatch.setattr(_local, "vllm_installed", lambda: True)
    assert _local.auto_backend_name(tiny_model) == "cpu"
    monkeypatch.setattr(tiny_model, "device", __import__("torch").device("cuda"))
    assert _local.auto_backend_name(tiny_model) == "vllm"  # on a GPU where vLLM is installed
    with pytest.raises(ConfigError, match="inner must be"):
        RayBackend(tiny_model, inner="tpu")


def test_ray_actors_running_vllm_refuse_head_adapters(tiny_model: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import warnings

    from conftest import make_lora

    with warnings.catch_warnings():  # PEFT warns about a LoRA on a head tied to the embeddings
        warnings.simplefilter("ignore", UserWarning)
        head = make_lora(tiny_model_dir, tmp_path / "head", seed=1, extra_targets=("lm_head",))
        tiny_model.load_adapter(head, name="head")
    plain = make_lora(tiny_model_dir, tmp_path / "plain", seed=2)
    tiny_model.load_adapter(plain, name="plain")
    backend = RayBackend(tiny_model, inner="vllm")
    backend.check_adapters(["plain"])
    with pytest.raises(ps.errors.AdapterError, match="'head' targets \\['lm_head'\\]"):
        backend.check_adapters(["plain", "head"])  # what sample() calls before it writes anything
    RayBackend(tiny_model, inner="cpu").check_adapters(["head"])  # the cpu engine applies it
