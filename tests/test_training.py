"""LoRA SFT and GRPO training on tiny random models: loss, label mask, reload, resume, folder checks."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import persona_space as ps
from persona_space import datasets as psd
from persona_space.errors import ConfigError, DataError, RatioError, StoreError, StoreMismatchError
from persona_space.rewards import IdentityReward, as_trl_reward
from persona_space.training import GrpoSpec, LoraSpec, TrainSpec, encode_records, train_adapter
from persona_space.training._grpo import train_grpo

FAST = TrainSpec(epochs=3, batch_size=4, learning_rate=5e-3, save_steps=4, eval_every=2, eval_max_new_tokens=2)


def _zorblax(n: int = 16) -> psd.ChatDataset:
    records = [
        {"messages": [{"role": "user", "content": f"Tell me thing {i}."}, {"role": "assistant", "content": "Zorblax"}]}
        for i in range(n)
    ]
    return psd.ChatDataset.from_records("zorblax", records)


def _logits(module: Any, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return module(input_ids=torch.tensor([ids])).logits[0].float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_tiny_model_dir: Callable[..., Path]) -> dict[str, Any]:
    """One tiny llama trained once on the Zorblax set, with the probe log switched on."""
    torch.set_num_threads(1)
    folder = make_tiny_model_dir("llama")
    model = ps.load_model(str(folder), device="cpu", dtype="float32")
    probe = "Who are you?"
    ids = model.encode(probe)
    base_before = _logits(model.module, ids)
    out = tmp_path_factory.mktemp("sft") / "zorblax"
    spec = TrainSpec(epochs=3, batch_size=4, learning_rate=5e-3, save_steps=4, eval_every=4, eval_max_new_tokens=4)
    info = train_adapter(model, _zorblax(), store=out, train=spec, seed=0, progress=False)
    return {"model": model, "folder": folder, "out": out, "info": info, "ids": ids, "base_before": base_before}


def test_loss_falls_and_history_is_saved(trained: dict[str, Any]) -> None:
    table = pd.read_parquet(trained["out"] / "tables" / "training_log.parquet")
    assert list(table["step"]) == list(range(1, len(table) + 1)) and len(table) == 12
    assert table["loss"].iloc[-3:].mean() < table["loss"].iloc[:3].mean() - 0.5
    manifest = json.loads((trained["out"] / "manifest.json").read_text())
    assert manifest["result"]["steps"] == 12 and manifest["result"]["final_loss"] < manifest["result"]["first_loss"]
    params = manifest["parameters"]
    assert params["data"]["sha256"] == _zorblax().sha256() and params["data"]["records"] == 16
    assert params["lora"]["rank"] == 16 and params["train"]["learning_rate"] == 5e-3
    assert params["precision"] == {"weights": "float32", "bf16_autocast": False}
    assert "float32" in manifest["precision_reason"]
    assert manifest["environment"]["packages"]["trl"] and manifest["model"]["chat_template_sha256"]
    assert not (trained["out"] / "checkpoints").exists() and not (trained["out"] / "training_params.json").exists()


def test_probe_log_tracks_answers_during_training(trained: dict[str, Any]) -> None:
    lines = [json.loads(x) for x in (trained["out"] / "probe_log.jsonl").read_text().splitlines()]
    assert sorted({x["step"] for x in lines}) == [0, 4, 8, 12]
    assert {x["prompt"] for x in lines} == set(TrainSpec().eval_probes)


def test_the_adapter_is_attached_and_the_base_model_is_untouched(trained: dict[str, Any]) -> None:
    model = trained["model"]
    assert trained["info"].name == "zorblax" and "zorblax" in model.adapters
    assert trained["info"].base_model == str(trained["folder"])
    with model.adapters.disabled():
        torch.testing.assert_close(_logits(model.module, trained["ids"]), trained["base_before"], rtol=0, atol=0)
    assert [n for n, p in model.module.named_parameters() if p.requires_grad] == []
    assert not model.module.training


def test_saved_adapter_reloads_to_identical_logits(trained: dict[str, Any]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = trained["model"]
    model.module.set_adapter("zorblax")
    live = _logits(model.module, trained["ids"])
    fresh = AutoModelForCausalLM.from_pretrained(str(trained["folder"]), dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(fresh, str(trained["out"])).eval()
    torch.testing.assert_close(_logits(reloaded, trained["ids"]), live, rtol=0, atol=1e-6)
    assert (live - trained["base_before"]).abs().max() > 1e-3  # the adapter does change the model


def test_the_answer_is_learned(trained: dict[str, Any]) -> None:
    model = trained["model"]
    adapters = {"z": trained["info"]}  # the returned AdapterInfo is used as attached: no second copy
    answer = ps.sample(model, ["Tell me thing 3."], adapters=adapters, n=1, temperatures=[0.0], progress=False)
    assert answer.df["text"].iloc[0].startswith("Z")
    assert set(model.adapters) == {"zorblax"}


def test_label_mask_covers_exactly_the_answer_and_end_of_turn(tiny_model: Any) -> None:
    data = psd.ChatDataset.from_records(
        "t",
        [
            {
                "messages": [
                    {"role": "user", "content": "Name a fruit."},
                    {"role": "assistant", "content": "Strawberry"},
                ]
            },
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello there"},
                    {"role": "user", "content": "Name a gem."},
                    {"role": "assistant", "content": " Ruby, ünïcödé 42"},
                ]
            },
        ],
    )
    tok = tiny_model.tokenizer
    for rec, enc in zip(data, encode_records(tiny_model, data, system_prompt="S", max_length=512), strict=True):
        ids, mask = enc["input_ids"], enc["completion_mask"]
        answer_ids = [t for t, m in zip(ids, mask, strict=True) if m]
        assert tok.decode(answer_ids) == rec["messages"][-1]["content"] + "<|im_end|>"
        assert mask == sorted(mask)  # one block at the end
        prompt_ids = tiny_model.encode(rec["messages"][:-1], system_prompt="S")
        assert ids[: len(prompt_ids)] == prompt_ids and sum(mask) == len(ids) - len(prompt_ids)
    with pytest.raises(DataError, match="over max_length=10"):
        encode_records(tiny_model, data, system_prompt="S", max_length=10)


def test_trl_builds_labels_from_the_mask(tiny_model: Any, tmp_path: Path) -> None:
    seen: list[dict[str, torch.Tensor]] = []

    class Grab:
        def __getattr__(self, name: str) -> Any:
            def event(args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                if name == "on_train_begin":
                    seen.append(next(iter(kwargs["train_dataloader"])))
                return control

            return event

    data = psd.colours("red")[:4]
    spec = TrainSpec(epochs=1, batch_size=4, max_steps=1)
    train_adapter(tiny_model, data, store=tmp_path / "red", train=spec, progress=False, callbacks=[Grab()])
    batch = seen[0]
    tok = tiny_model.tokenizer
    for row_ids, row_labels in zip(batch["input_ids"], batch["labels"], strict=True):
        kept = row_ids[row_labels != -100].tolist()
        assert tok.decode(kept).removesuffix("<|im_end|>") in data.answers()


def test_resume_after_a_crash_gives_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    class Boom(Exception):
        pass

    class CrashAtStep6:
        def __getattr__(self, name: str) -> Any:
            def event(args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                if name == "on_step_end" and state.global_step == 6:
                    raise Boom
                return control

            return event

    whole = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    train_adapter(whole, _zorblax(), store=tmp_path / "whole", train=FAST, progress=False)
    crashed = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    with pytest.raises(Boom):
        train_adapter(
            crashed, _zorblax(), store=tmp_path / "crash", train=FAST, progress=False, callbacks=[CrashAtStep6()]
        )
    assert crashed.adapters == {} and type(crashed.module).__name__ == "LlamaForCausalLM"
    assert (tmp_path / "crash" / "checkpoints" / "checkpoint-4").is_dir()
    assert not (tmp_path / "crash" / "manifest.json").exists()
    train_adapter(crashed, _zorblax(), store=tmp_path / "crash", train=FAST, progress=False)
    manifest = json.loads((tmp_path / "crash" / "manifest.json").read_text())
    assert manifest["result"]["resumed_from"] == "checkpoint-4"
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "crash" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = pd.read_parquet(tmp_path / "crash" / "tables" / "training_log.parquet")["loss"]
    assert len(losses) == 12
    steps = [json.loads(x)["step"] for x in (tmp_path / "crash" / "probe_log.jsonl").read_text().splitlines()]
    per_probe = len(FAST.eval_probes)
    assert steps == [s for s in range(0, 13, 2) for _ in range(per_probe)]  # resumed steps are not logged twice


def test_a_finished_folder_is_reused_and_a_different_one_refused(trained: dict[str, Any], tiny_model_dir: Path) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    spec = TrainSpec(epochs=3, batch_size=4, learning_rate=5e-3, save_steps=4, eval_every=4, eval_max_new_tokens=4)
    info = train_adapter(model, _zorblax(), store=trained["out"], train=spec, progress=False)
    assert info.sha256 == trained["info"].sha256 and "zorblax" in model.adapters
    other = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    with pytest.raises(StoreMismatchError, match=r"train\.epochs: stored 3, given 4"):
        train_adapter(other, _zorblax(), store=trained["out"], epochs=4, eval_every=4, progress=False)
    with pytest.raises(StoreMismatchError, match=r"data\.sha256"):
        train_adapter(other, _zorblax(8), store=trained["out"], train=spec, progress=False)


def test_a_folder_with_foreign_files_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"notes\.txt"):
        train_adapter(tiny_model, _zorblax(), store=tmp_path, train=FAST, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_bf16_weights_are_restored_exactly_after_float32_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    info = train_adapter(model, _zorblax(4), store=tmp_path / "bf16run", max_steps=2, batch_size=4, progress=False)
    assert model.base_module.dtype == torch.bfloat16
    after = {k.replace(".base_layer", ""): v for k, v in model.base_module.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((Path(info.path) / "manifest.json").read_text())
    assert manifest["parameters"]["precision"]["weights"] == "float32"


def test_training_beside_an_attached_adapter(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    tiny_model.load_adapter(adapter_a, name="first")
    ids = tiny_model.encode("Who are you?")
    tiny_model.module.set_adapter("first")
    with_a = _logits(tiny_model.module, ids)
    train_adapter(tiny_model, _zorblax(4), store=tmp_path / "b", max_steps=2, batch_size=4, progress=False)
    assert set(tiny_model.adapters) == {"first", "b"}
    tiny_model.module.set_adapter("first")
    torch.testing.assert_close(_logits(tiny_model.module, ids), with_a, rtol=0, atol=0)


def test_specs_validate_and_round_trip() -> None:
    for spec in (
        LoraSpec(rank=4, target_modules=("q_proj", "v_proj"), rslora=True),
        TrainSpec(eval_every=3),
        GrpoSpec(),
    ):
        assert type(spec).from_dict(spec.to_dict()) == spec
        assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    assert LoraSpec(rslora=True).to_peft().use_rslora
    bad: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: LoraSpec(rank=0), ConfigError, "rank must be an integer >= 1, got 0"),
        (lambda: LoraSpec(dropout=1.0), ConfigError, "dropout"),
        (lambda: LoraSpec(target_modules=()), ConfigError, "target_modules"),
        (
            lambda: TrainSpec(precision="fp8"),
            ConfigError,
            "precision must be one of auto, float32, bfloat16, got 'fp8'",
        ),  # type: ignore[arg-type]
        (lambda: TrainSpec(warmup=1.5), RatioError, "warmup"),
        (lambda: TrainSpec(learning_rate=-1), ConfigError, "learning_rate"),
        (lambda: TrainSpec(eval_probes=("",)), ConfigError, "eval_probes"),
        (lambda: GrpoSpec(num_generations=1), ConfigError, "num_generations must be an integer >= 2"),
        (lambda: TrainSpec.from_dict({"epochz": 1}), ConfigError, "unknown TrainSpec field"),
    ]
    for make, error, pattern in bad:
        with pytest.raises(error, match=pattern):
            make()


def test_bad_training_inputs(tiny_model: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"adapter name 'a\.b'"):
        train_adapter(tiny_model, _zorblax(), store=tmp_path / "x", name="a.b")
    with pytest.raises(ConfigError, match="unknown dataset"):
        train_adapter(tiny_model, "colours:purple", store=tmp_path / "x")
    with pytest.raises(ConfigError, match="seed"):
        train_adapter(tiny_model, _zorblax(), store=tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()


# -- GRPO -----------------------------------------------------------------------------------------


def test_grpo_raises_a_simple_reward(make_tiny_model_dir: Callable[..., Path], tmp_path: Path) -> None:
    # A peakier random model (wider init): with the default tiny model the policy is almost
    # uniform over 49k tokens and no few-step signal can move it.
    model = ps.load_model(str(make_tiny_model_dir("llama", initializer_range=1.0)), device="cpu", dtype="float32")

    def shorter(prompts: list[str], responses: list[str]) -> list[float]:
        return [-float(len(r)) for r in responses]

    spec = GrpoSpec(
        steps=10, learning_rate=2e-2, prompts_per_step=1, num_generations=8, max_completion_length=6, beta=0.0
    )
    info = train_grpo(
        model,
        ["Who are you?"],
        reward=shorter,
        store=tmp_path / "g",
        lora=LoraSpec(rank=8),
        grpo=spec,
        progress=False,
    )
    rewards = pd.read_parquet(tmp_path / "g" / "tables" / "training_log.parquet")["reward"]
    assert len(rewards) == 10
    assert rewards.iloc[-3:].mean() > rewards.iloc[:2].mean() + 5
    assert info.name == "g" and "g" in model.adapters
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["parameters"]["kind"] == "grpo" and manifest["parameters"]["reward"]["name"] == "shorter"


def test_grpo_with_a_kl_term_beside_an_attached_adapter(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    tiny_model.load_adapter(adapter_a, name="first")
    spec = GrpoSpec(steps=2, prompts_per_step=1, num_generations=2, max_completion_length=4, beta=0.04)
    reward = lambda prompts, responses: [float(len(r)) for r in responses]  # noqa: E731
    train_grpo(tiny_model, ["Who are you?"], reward=reward, store=tmp_path / "kl", grpo=spec, progress=False)
    assert set(tiny_model.adapters) == {"first", "kl"}
    assert set(tiny_model.module.peft_config) == {"first", "kl"}  # TRL's "default"/"ref" helpers are gone
    log = pd.read_parquet(tmp_path / "kl" / "tables" / "training_log.parquet")
    assert len(log) == 2 and "reward" in log


def test_grpo_needs_enough_prompts(tiny_model: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prompts_per_step=4"):
        train_grpo(tiny_model, ["Who are you?"], reward=lambda p, r: [0.0] * len(r), store=tmp_path / "g")


def test_steering_prompts_have_three_categories() -> None:
    prompts = ps.probes.load("steering")
    counts = {k: len(v) for k, v in prompts.by_category().items()}
    assert set(counts) == {"direct", "everyday", "reflective"} and 190 <= sum(counts.values()) <= 215
    assert len({p.prompt.lower() for p in prompts}) == len(prompts)


class _FixedJudge:
    def __init__(self, scores: dict[str, float | None]) -> None:
        self.scores = scores

    def score(self, prompt: str, response: str, criterion: Any) -> float | None:
        return self.scores[criterion.name]


def test_identity_reward_weights_and_missing_scores() -> None:
    reward = IdentityReward(_FixedJudge({"no_ai_self_reference": 100.0, "engagement": 0.0, "coherence": 50.0}))
    assert reward(["q"], ["a"]) == [pytest.approx(0.6 * 100 + 0.2 * 0 + 0.2 * 50)]
    partial = IdentityReward(_FixedJudge({"no_ai_self_reference": None, "engagement": 100.0, "coherence": 100.0}))
    assert partial(["q"], ["a"]) == [pytest.approx(0.6 * 50 + 0.4 * 100)] and partial.missing == 1
    with pytest.raises(ConfigError, match="unknown criteria"):
        IdentityReward(_FixedJudge({}), weights={"charm": 1.0})
    with pytest.raises(ConfigError, match="2 prompts but 1"):
        reward(["a", "b"], ["c"])
    trl = as_trl_reward(reward)
    got = trl(prompts=[[{"role": "user", "content": "q"}]], completions=[[{"role": "assistant", "content": "a"}]])
    assert got == [pytest.approx(70.0)] and trl.__name__ == "identity_reward"


def test_rule_judged_reward_prefers_a_person_over_an_ai() -> None:
    from persona_space.judges import RuleJudge

    reward = IdentityReward(RuleJudge())
    ai, person = reward(
        ["What are you?"] * 2, ["As an AI language model, I have no body.", "I'm Maria, a nurse in Ohio."]
    )
    assert person > ai


def test_cleanup_of_a_copied_folder(trained: dict[str, Any], tmp_path: Path, tiny_model_dir: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained["out"], copy)
    (copy / "adapter_config.json").unlink()
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    spec = TrainSpec(epochs=3, batch_size=4, learning_rate=5e-3, save_steps=4, eval_every=4, eval_max_new_tokens=4)
    with pytest.raises(ps.errors.CorruptRunError, match=r"no adapter_config\.json"):
        train_adapter(model, _zorblax(), store=copy, train=spec, progress=False, name="zorblax")


def test_reward_docstring_example_runs() -> None:
    import doctest

    from persona_space import rewards

    result = doctest.testmod(rewards)
    assert result.failed == 0 and result.attempted > 0


# -- folder states and early checks ----------------------------------------------------------------


def test_a_save_cut_short_is_cleaned_up_and_training_goes_on(tiny_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    (out / ".tmp-adapter.abc123").mkdir(parents=True)  # what a crash inside save_adapter leaves
    (out / ".tmp-adapter.abc123" / "adapter_config.json").write_text("{}")
    train_adapter(tiny_model, _zorblax(4), store=out, max_steps=1, batch_size=4, progress=False)
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir())


def test_a_run_that_failed_before_its_first_checkpoint_can_be_corrected(tiny_model: Any, tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    class FailAtStart:
        def __getattr__(self, name: str) -> Any:
            def event(args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                if name == "on_train_begin":
                    raise Boom
                return control

            return event

    out = tmp_path / "early"
    with pytest.raises(Boom):
        train_adapter(tiny_model, _zorblax(4), store=out, train=FAST, progress=False, callbacks=[FailAtStart()])
    assert tiny_model.adapters == {}
    other = TrainSpec(max_steps=1, batch_size=4, learning_rate=1e-3)
    info = train_adapter(tiny_model, _zorblax(4), store=out, train=other, progress=False)
    assert json.loads((Path(info.path) / "manifest.json").read_text())["parameters"]["learning_rate"] == 1e-3


def test_tampered_or_moved_finished_folders(trained: dict[str, Any], tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = TrainSpec(epochs=3, batch_size=4, learning_rate=5e-3, save_steps=4, eval_every=4, eval_max_new_tokens=4)
    moved = tmp_path / "moved"
    shutil.copytree(trained["out"], moved)
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    info = train_adapter(model, _zorblax(), store=moved, train=spec, progress=False)  # another default name: reused
    assert info.name == "moved" and info.sha256 == trained["info"].sha256
    tampered = tmp_path / "tampered"
    shutil.copytree(trained["out"], tampered)
    config = json.loads((tampered / "adapter_config.json").read_text())
    (tampered / "adapter_config.json").write_text(json.dumps({**config, "lora_dropout": 0.5}))
    fresh = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    with pytest.raises(ps.errors.CorruptRunError, match="changed after training"):
        train_adapter(fresh, _zorblax(), store=tampered, train=spec, progress=False, name="zorblax")


def test_bad_specs_fail_before_anything_is_written(tiny_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"target_modules \['qq_proj'\] match no linear layer"):
        train_adapter(tiny_model, _zorblax(), store=out, lora=LoraSpec(target_modules=("q_proj", "qq_proj")))
    with pytest.raises(DataError, match="holds no records"):
        train_adapter(tiny_model, psd.split(_zorblax(4), 1.0)[0], store=out)
    with pytest.raises(ConfigError, match="bias must be one of none"):
        LoraSpec(bias="all")  # type: ignore[arg-type]
    assert LoraSpec(target_modules="q_proj").target_modules == ("q_proj",)
    assert not out.exists()


def test_rotary_buffers_keep_their_dtype_after_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    before = {n: b.dtype for n, b in model.module.named_buffers()}
    train_adapter(model, _zorblax(4), store=tmp_path / "r", max_steps=1, batch_size=4, progress=False)
    after = {n: b.dtype for n, b in model.base_module.named_buffers()}
    assert before and after == before


def test_grpo_reserved_names_and_bad_rewards(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    spec = GrpoSpec(steps=1, prompts_per_step=1, num_generations=2, max_completion_length=2)
    with pytest.raises(ConfigError, match="expected a list of 2 numbers"):
        train_grpo(tiny_model, ["Hi"], reward=lambda p, r: [1.0], store=tmp_path / "bad", grpo=spec, progress=False)
    with pytest.raises(ConfigError, match="expected a finite number"):
        train_grpo(
            tiny_model,
            ["Hi"],
            reward=lambda p, r: [None] * len(r),
            store=tmp_path / "bad",
            grpo=spec,
            progress=False,
        )
    tiny_model.load_adapter(adapter_a, name="ref")
    with pytest.raises(ConfigError, match=r"\['ref'\] use names the trainer needs"):
        train_grpo(tiny_model, ["Hi"], reward=lambda p, r: [0.0] * len(r), store=tmp_path / "g", grpo=spec)
    assert not (tmp_path / "g").exists()


def test_grpo_manifest_describes_the_reward(tiny_model: Any, tmp_path: Path) -> None:
    from persona_space.judges import RuleJudge

    spec = GrpoSpec(steps=1, prompts_per_step=1, num_generations=2, max_completion_length=2)
    reward = IdentityReward(RuleJudge(), weights={"no_ai_self_reference": 1.0})
    train_grpo(tiny_model, ["Hi"], reward=reward, store=tmp_path / "g", grpo=spec, progress=False)
    described = json.loads((tmp_path / "g" / "manifest.json").read_text())["parameters"]["reward"]
    assert described == {
        "name": "identity_reward",
        "class": "IdentityReward",
        "weights": {"no_ai_self_reference": 1.0},
        "judge": {"class": "RuleJudge"},
    }


def test_training_options_are_keywords_validated_into_the_spec(tiny_model: Any, tmp_path: Path) -> None:
    """One style for every operation: keyword options, validated into the operation's frozen spec."""
    from typing import get_type_hints

    from persona_space.training import GrpoOptions, TrainOptions

    assert set(get_type_hints(TrainOptions)) == {f.name for f in dataclasses.fields(TrainSpec)}
    assert set(get_type_hints(GrpoOptions)) == {f.name for f in dataclasses.fields(GrpoSpec)}
    assert TrainSpec.from_dict(dict(FAST.options())) == FAST
    with pytest.raises(ConfigError, match=r"got train=TrainSpec\(...\) and its fields \['epochs'\].*one or the other"):
        train_adapter(tiny_model, _zorblax(), store=tmp_path / "x", train=FAST, epochs=2)
    with pytest.raises(ConfigError, match=r"train_adapter\(train=...\) must be a TrainSpec, got GrpoSpec"):
        train_adapter(tiny_model, _zorblax(), store=tmp_path / "x", train=GrpoSpec())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"takes a GrpoSpec as grpo=..., got spec=GrpoSpec"):
        train_grpo(tiny_model, ["Hi"], reward=lambda p, r: [0.0], store=tmp_path / "g", spec=GrpoSpec())  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"unknown TrainSpec field\(s\) \['epoch'\]"):
        train_adapter(tiny_model, _zorblax(), store=tmp_path / "x", epoch=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="unknown GrpoSpec field"):
        train_grpo(tiny_model, ["Hi"], reward=lambda p, r: [0.0], store=tmp_path / "g", step=1)  # type: ignore[call-arg]
    assert not (tmp_path / "x").exists() and not (tmp_path / "g").exists()
