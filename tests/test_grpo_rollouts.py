"""GRPO rollouts through the engine: the live adapter, random streams per answer, resume, backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch

import persona_space as ps
from persona_space.engine import end_of_turn_id, resolve_backend
from persona_space.errors import ConfigError, StoreMismatchError
from persona_space.training import GrpoSpec, LoraSpec
from persona_space.training._grpo import TRAINING_NAME, train_grpo
from persona_space.training._rollouts import EngineRollouts, prompt_key

PROMPTS = ["Who are you?", "What is your name?"]


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]


def _rollouts(model: Any, backend: str, *, seed: int = 0, temperature: float = 1.0) -> EngineRollouts:
    return EngineRollouts(
        backend=resolve_backend(model, backend),
        tokenizer=model.tokenizer,
        adapter=TRAINING_NAME,
        probe_ids={prompt_key(_messages(p)): f"p{i}" for i, p in enumerate(PROMPTS)},
        seed=seed,
        temperature=temperature,
        max_new_tokens=8,
        end_of_turn=end_of_turn_id(model),
    )


def _batch(groups: int = 3) -> list[list[dict[str, str]]]:
    """Prompts as TRL's sampler sends them: each repeated once per answer of its group."""
    return [_messages(p) for p in PROMPTS for _ in range(groups)]


@pytest.fixture
def training(make_tiny_model_dir: Callable[..., Path]) -> Any:
    """A tiny model (peaky, so answers differ) with a trainable adapter whose B matrices are non-zero."""
    model = ps.load_model(str(make_tiny_model_dir("llama", initializer_range=1.0)), device="cpu", dtype="float32")
    with model.adapters.trainable(TRAINING_NAME, LoraSpec(rank=4).to_peft(), torch.float32, seed=0) as peft:
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(name)))
        peft.train()
        yield model, peft


def _trainer(peft: Any, step: int = 0) -> Any:
    return SimpleNamespace(state=SimpleNamespace(global_step=step), model=peft)


def test_rollouts_follow_the_live_adapter_and_match_across_backends(training: Any) -> None:
    model, peft = training
    eot = end_of_turn_id(model)
    outs = {b: _rollouts(model, b)(_batch(), _trainer(peft)) for b in ("cpu", "hf")}
    assert outs["cpu"]["completion_ids"] == outs["hf"]["completion_ids"]  # float32: same streams, same tokens
    out = outs["cpu"]
    assert out["logprobs"] is None and len(out["completion_ids"]) == 6 and len(out["prompt_ids"]) == 6
    assert out["prompt_ids"][0] == out["prompt_ids"][2] != out["prompt_ids"][3]
    assert len({tuple(c) for c in out["completion_ids"][:3]}) > 1  # each answer of a group has its own stream
    for ids in out["completion_ids"]:
        assert eot not in ids[:-1] and (len(ids) == 8 or ids[-1] == eot)  # the end of turn is kept, last
    assert peft.training  # the trainer's mode is put back
    # the adapter as it is now: zeroing its B matrices gives the base model's answers
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.zero_()
    zeroed = _rollouts(model, "cpu")(_batch(), _trainer(peft))["completion_ids"]
    assert zeroed != out["completion_ids"]
    with model.adapters.disabled():
        base = _rollouts(model, "cpu")
        base.adapter = None  # type: ignore[assignment]
        assert base(_batch(), _trainer(peft))["completion_ids"] == zeroed


def test_rollout_streams_depend_on_step_and_seed_only(training: Any) -> None:
    model, peft = training
    first = _rollouts(model, "cpu")(_batch(), _trainer(peft, step=3))["completion_ids"]
    again = _rollouts(model, "cpu")(_batch(), _trainer(peft, step=3))["completion_ids"]
    assert first == again
    assert _rollouts(model, "cpu")(_batch(), _trainer(peft, step=4))["completion_ids"] != first
    assert _rollouts(model, "cpu", seed=1)(_batch(), _trainer(peft, step=3))["completion_ids"] != first
    # the batch's order does not change an answer: each is keyed by its prompt and its place in the group
    flipped = _rollouts(model, "cpu")(_batch()[3:] + _batch()[:3], _trainer(peft, step=3))["completion_ids"]
    assert flipped == first[3:] + first[:3]


class Shorter:
    """Reward for short answers; ``fail_at`` makes the n-th call raise (a crash mid-run)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("crash")
        return [-float(len(r)) for r in responses]


SPEC = GrpoSpec(steps=4, learning_rate=2e-2, prompts_per_step=1, num_generations=4, max_completion_length=6,
                beta=0.0, save_steps=2)  # fmt: skip


def test_grpo_through_the_engine_resumes_to_the_same_adapter(
    make_tiny_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    folder = str(make_tiny_model_dir("llama", initializer_range=1.0))
    whole = ps.load_model(folder, device="cpu", dtype="float32")
    train_grpo(whole, PROMPTS, reward=Shorter(), store=tmp_path / "whole", lora=LoraSpec(rank=4), grpo=SPEC,
               backend="cpu", progress=False)  # fmt: skip
    crashed = ps.load_model(folder, device="cpu", dtype="float32")
    with pytest.raises(KeyboardInterrupt):
        train_grpo(crashed, PROMPTS, reward=Shorter(fail_at=3), store=tmp_path / "crash", lora=LoraSpec(rank=4),
                   grpo=SPEC, backend="cpu", progress=False)  # fmt: skip
    assert (tmp_path / "crash" / "checkpoints" / "checkpoint-2").is_dir()
    train_grpo(crashed, PROMPTS, reward=Shorter(), store=tmp_path / "crash", lora=LoraSpec(rank=4), grpo=SPEC,
               backend="cpu", progress=False)  # fmt: skip
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "crash" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert manifest["parameters"]["rollouts"] == "cpu"
    assert manifest["rollouts"]["backend"]["name"] == "cpu" and manifest["rollouts"]["tokens"] > 0
    log = pd.read_parquet(tmp_path / "whole" / "tables" / "training_log.parquet")
    assert len(log) == 4 and (log["rollout_tokens"] > 0).all() and (log["rollout_seconds"] > 0).all()
    assert not (tmp_path / "whole" / "rollouts").exists()
    with pytest.raises(StoreMismatchError, match="rollouts"):  # a finished run with other rollouts is not reused
        train_grpo(crashed, PROMPTS, reward=Shorter(), store=tmp_path / "whole", lora=LoraSpec(rank=4), grpo=SPEC,
                   backend="hf", progress=False)  # fmt: skip


def test_grpo_rollout_backends_are_checked_before_anything_is_written(tiny_model: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        train_grpo(tiny_model, PROMPTS, reward=Shorter(), store=tmp_path / "g", grpo=SPEC, backend="nope")
    with pytest.raises(ConfigError, match="'ray' cannot generate GRPO rollouts"):
        train_grpo(tiny_model, PROMPTS, reward=Shorter(), store=tmp_path / "g", grpo=SPEC, backend="ray")
    assert not (tmp_path / "g").exists()


def test_trl_rollouts_remain_available(make_tiny_model_dir: Callable[..., Path], tmp_path: Path) -> None:
    model = ps.load_model(str(make_tiny_model_dir("llama", initializer_range=1.0)), device="cpu", dtype="float32")
    spec = GrpoSpec(steps=2, prompts_per_step=1, num_generations=2, max_completion_length=4, beta=0.0)
    train_grpo(model, PROMPTS, reward=Shorter(), store=tmp_path / "t", grpo=spec, backend="trl", progress=False)
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["parameters"]["rollouts"] == "trl" and manifest["rollouts"] == {"backend": "trl"}


def test_grpo_refuses_a_head_lora_before_anything_is_written(
    tiny_model: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import warnings

    from conftest import make_lora
    from persona_space.errors import AdapterError

    with pytest.raises(ConfigError, match="vocabulary head"):
        train_grpo(tiny_model, PROMPTS, reward=Shorter(), store=tmp_path / "g", grpo=SPEC,
                   lora=LoraSpec(rank=4, target_modules=("q_proj", "lm_head")))  # fmt: skip
    with warnings.catch_warnings():  # PEFT warns about a LoRA on a head tied to the embeddings
        warnings.simplefilter("ignore", UserWarning)
        tiny_model.load_adapter(make_lora(tiny_model_dir, tmp_path / "head", seed=1, extra_targets=("lm_head",)),
                                name="head")  # fmt: skip
    with pytest.raises(AdapterError, match=r"\['head'\] put a LoRA on the vocabulary head"):
        train_grpo(tiny_model, PROMPTS, reward=Shorter(), store=tmp_path / "g", grpo=SPEC)
    assert not (tmp_path / "g").exists()


def test_a_detached_head_adapter_leaves_no_lora_layer_behind(
    tiny_model: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import warnings

    from peft.tuners.tuners_utils import BaseTunerLayer

    from conftest import make_lora

    tiny_model.load_adapter(make_lora(tiny_model_dir, tmp_path / "plain", seed=2), name="plain")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tiny_model.load_adapter(make_lora(tiny_model_dir, tmp_path / "head", seed=1, extra_targets=("lm_head",)),
                                name="head")  # fmt: skip
    assert isinstance(tiny_model.module.get_output_embeddings(), BaseTunerLayer)
    tiny_model.adapters.detach("head")
    assert not isinstance(tiny_model.module.get_output_embeddings(), BaseTunerLayer)
    assert set(tiny_model.module.peft_config) == {"plain"}
    spec = GrpoSpec(steps=1, prompts_per_step=1, num_generations=2, max_completion_length=3, beta=0.0)
    train_grpo(tiny_model, PROMPTS, reward=Shorter(), store=tmp_path / "g", grpo=spec, progress=False)
