"""``train_grpo``: LoRA identity steering with TRL's ``GRPOTrainer`` and a reward over answers.

The prompts are sent with the same explicit system turn as sampling (merged into
the user turn for templates without a system role). The adapter folder has the
layout of :mod:`persona_space.training._folder`; its loss table carries the mean
reward per step.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from persona_space._compat import renamed_keywords
from persona_space.chat import _merge_system, build_messages, system_mode
from persona_space.engine import BackendLike, end_of_turn_id
from persona_space.errors import AdapterError, ConfigError
from persona_space.probes import ProbeSet
from persona_space.provenance import sha256_json
from persona_space.rewards import Reward, as_trl_reward, describe_reward
from persona_space.training import _folder
from persona_space.training._rollouts import TRL_ROLLOUTS, EngineRollouts, prompt_key, rollout_backend
from persona_space.training._sft import _attach_finished, resolve_precision
from persona_space.training._specs import GrpoOptions, GrpoSpec, LoraSpec, check_targets, spec_from_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from persona_space.adapters import AdapterInfo
    from persona_space.models import LoadedModel


# TRL's GRPO copies the adapter named "default" into a frozen "ref" adapter for the KL term, so the
# adapter is trained under that name and attached under its own name from the saved folder.
TRAINING_NAME = "default"


def epoch_seeded(sampler: Any) -> Any:
    """TRL's prompt sampler, with each epoch's order drawn from a generator seeded by (seed, epoch).

    TRL draws every epoch's order from one generator, and transformers does not replay
    earlier epochs on resume, so a run resumed after its first epoch would see the
    first epoch's order again. Seeded by epoch (transformers calls ``set_epoch``), a
    resumed run sees the order the uninterrupted one saw; the first epoch's is TRL's.
    """
    seed, generator = getattr(sampler, "seed", None), getattr(sampler, "generator", None)
    if seed is None or generator is None:
        return sampler

    def set_epoch(epoch: int) -> None:
        generator.manual_seed(int(seed) + int(epoch))

    sampler.set_epoch = set_epoch
    return sampler


HEAD_NAMES = ("lm_head", "embed_out")


def check_head(model: LoadedModel, lora: LoraSpec) -> None:
    """Refuse, before anything is written, what TRL's GRPO cannot train with: a LoRA on the vocabulary head.

    TRL computes the log-probabilities from the head's weight directly, so it refuses
    any model whose head is wrapped by a LoRA layer, the adapter being trained or one
    already attached.
    """
    if lora.target_modules != "all-linear" and set(lora.target_modules) & set(HEAD_NAMES):
        raise ConfigError(
            f"target_modules {sorted(lora.target_modules)} include the vocabulary head; GRPO (TRL) computes "
            "log-probabilities from the head's weight and cannot train a LoRA on it: leave it out"
        )
    on_head = sorted(name for name, info in model.adapters.items() if set(info.target_modules) & set(HEAD_NAMES))
    if on_head:
        raise AdapterError(
            f"attached adapters {on_head} put a LoRA on the vocabulary head, which TRL's GRPO refuses on the model "
            "it trains; detach them (model.adapters.detach(name)) before train_grpo and attach them again after"
        )


def _trainer_class() -> type:
    with warnings.catch_warnings():  # TRL's note on vLLM versions is for its own vLLM modes, not used here
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
        from trl.trainer.grpo_trainer import GRPOTrainer

    class Trainer(GRPOTrainer):  # type: ignore[misc]
        def _get_train_sampler(self, dataset: Any = None) -> Any:
            return epoch_seeded(super()._get_train_sampler(dataset))

    return Trainer


def _prompt_set(prompts: ProbeSet | Sequence[str] | str) -> ProbeSet:
    if isinstance(prompts, ProbeSet):
        return prompts
    if isinstance(prompts, str):
        from persona_space.probes import load

        return load(prompts)
    return ProbeSet.from_list(list(prompts), name="grpo")


@renamed_keywords(out="store")
def train_grpo(
    model: LoadedModel,
    prompts: ProbeSet | Sequence[str] | str,
    *,
    reward: Reward,
    store: str | os.PathLike[str],
    grpo: GrpoSpec | None = None,
    lora: LoraSpec | None = None,
    seed: int = 0,
    name: str | None = None,
    progress: bool = True,
    keep_checkpoints: bool = False,
    backend: BackendLike = "auto",
    **options: Unpack[GrpoOptions],
) -> AdapterInfo:
    """Steer ``model`` with GRPO on ``prompts`` to maximise ``reward``; attach and return the adapter.

    ``reward(prompts, responses) -> list[float]`` sees the user prompts and answers as
    plain text; :class:`~persona_space.rewards.IdentityReward` is the seed's composite.
    ``prompts`` may be a probe set, a list of strings or a probe-set name
    (``"steering"``: 210 identity-probing prompts in three categories).

    The options (``steps``, ``learning_rate``, ``num_generations``, ``beta`` ...) are
    the fields of :class:`GrpoSpec`, validated into one; a recipe already built is
    passed whole as ``grpo=GrpoSpec(...)`` (not both). ``store`` becomes the adapter
    folder, resumed by the same call after a crash.

    ``backend`` generates the rollouts (:mod:`persona_space.training._rollouts`):
    ``"auto"``, ``"cpu"``, ``"hf"`` or ``"vllm"``, with the adapter being trained
    and a random stream per answer (a resumed run draws the same answers), or
    ``"trl"`` for TRL's own ``generate`` on the training module. The loss table
    records each step's rollout tokens and seconds.

    >>> from persona_space.judges import RuleJudge                                      # doctest: +SKIP
    >>> train_grpo(model, "steering", reward=IdentityReward(RuleJudge()), store="runs/steer")  # doctest: +SKIP
    """
    lora = lora or LoraSpec()
    if not isinstance(lora, LoraSpec):
        raise ConfigError(f"lora must be a LoraSpec, got {type(lora).__name__}")
    spec = spec_from_options(GrpoSpec, options, "train_grpo", whole=grpo)
    if not callable(reward):
        raise ConfigError(f"reward must be callable as reward(prompts, responses), got {reward!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    _folder.check_trainable(model, _folder.adapter_name_for(Path(store), name), reserved=(TRAINING_NAME, "ref"))
    check_targets(lora or LoraSpec(), model.base_module)
    check_head(model, lora)
    probes = _prompt_set(prompts)
    engine = rollout_backend(model, backend)
    if len(probes) < spec.prompts_per_step:
        raise ConfigError(
            f"prompts_per_step={spec.prompts_per_step} but only {len(probes)} prompt(s) given; "
            "pass more prompts or lower GrpoSpec.prompts_per_step"
        )
    out_path = Path(store)
    adapter_name = _folder.adapter_name_for(out_path, name)
    system_prompt = model.system_prompt if spec.system_prompt is None else spec.system_prompt
    dtype, autocast, why = resolve_precision(spec.precision, model)
    rows: list[dict[str, Any]] = []
    for probe in probes:
        messages = build_messages(probe.prompt, system_prompt=system_prompt)
        if system_mode(model.tokenizer) == "merged":
            messages = _merge_system(messages)
        rows.append({"prompt": messages, "user_prompt": probe.prompt, "probe_id": probe.id})
    params = _folder.base_params(
        "grpo", adapter_name, model, lora, seed=seed, system_prompt=system_prompt, dtype=dtype, autocast=autocast
    )
    params.update(
        {
            "prompts": {"name": probes.name, "count": len(probes), "sha256": sha256_json([r["prompt"] for r in rows])},
            "reward": describe_reward(reward),
            "spec": spec.to_dict(),
            "rollouts": TRL_ROLLOUTS if engine is None else engine.name,
        }
    )
    state = _folder.prepare(out_path, params)
    if state == "done":
        return _attach_finished(model, out_path, adapter_name)

    from datasets import Dataset

    with warnings.catch_warnings():  # TRL's note on vLLM versions is for its own vLLM modes, not used here
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
        from trl.trainer.grpo_config import GRPOConfig

    resume = _folder.checkpoint_to_resume(out_path) if state == "resume" else None
    config = GRPOConfig(
        **_folder.trainer_args(out_path, model, spec, seed=seed, autocast=autocast, progress=progress),
        max_steps=spec.steps,
        learning_rate=spec.learning_rate,
        per_device_train_batch_size=spec.prompts_per_step * spec.num_generations,
        num_generations=spec.num_generations,
        max_completion_length=spec.max_completion_length,
        temperature=spec.temperature,
        beta=spec.beta,
        lr_scheduler_type=spec.scheduler,
        warmup_steps=float(spec.warmup) if spec.warmup < 1 else 0.999,
        gradient_checkpointing=False,
        log_completions=False,
    )
    _folder.one_device(config, model)
    rollouts = None
    if engine is not None:
        rollouts = EngineRollouts(
            backend=engine,
            tokenizer=model.tokenizer,
            adapter=TRAINING_NAME,
            probe_ids={prompt_key(r["prompt"]): r["probe_id"] for r in rows},
            seed=seed,
            temperature=spec.temperature,
            max_new_tokens=spec.max_completion_length,
            end_of_turn=end_of_turn_id(model),
            folder=out_path / _folder.ROLLOUTS,
            base_model=_folder.base_model_id(model),
        )
    started = time.perf_counter()
    with (
        _folder.quiet_datasets(not progress),
        _folder.trainable_adapter(model, TRAINING_NAME, lora, dtype, seed=seed) as peft,
    ):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(use_cache=True|generation flags|pad token|'rollout_func').*")
            trainer = _trainer_class()(
                model=peft,
                reward_funcs=[cast(Any, as_trl_reward(reward))],
                args=config,
                train_dataset=Dataset.from_list(rows),
                processing_class=model.tokenizer,
                rollout_func=rollouts,
            )
            _folder.quiet_progress(trainer, progress)
            try:
                trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            finally:
                if rollouts is not None:
                    rollouts.close()
        _folder.save_adapter(peft, TRAINING_NAME, out_path, _folder.base_model_id(model))
        history = _folder.write_loss_table(trainer.state.log_history, out_path)
    rewards = [row["reward"] for row in history if row.get("reward") is not None]
    results = {
        "result": {
            "steps": int(trainer.state.global_step),
            "first_reward": rewards[0] if rewards else None,
            "final_reward": rewards[-1] if rewards else None,
            "seconds": round(time.perf_counter() - started, 3),
            "resumed_from": resume.name if resume else None,
        },
        "rollouts": {"backend": TRL_ROLLOUTS} if rollouts is None else rollouts.summary(),
    }
    _folder.finish(out_path, params, model, why, results, keep_checkpoints=keep_checkpoints)
    return _attach_finished(model, out_path, adapter_name)
