"""``train_adapter``: LoRA supervised fine-tuning with TRL's ``SFTTrainer`` on the answers only.

Records are tokenized here, with the same chat rendering and explicit system turn
that sampling uses, into ``input_ids`` plus a ``completion_mask`` over the answer
and its end-of-turn token. TRL turns the mask into labels (``completion_only_loss``),
so the loss never sees the prompt; this works for templates without the
generation markers that TRL's ``assistant_only_loss`` needs (SmolLM2's has none).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space import _io
from persona_space._compat import renamed_keywords
from persona_space.chat import encode_chat
from persona_space.datasets import ChatDataset, ensure_dataset
from persona_space.errors import (
    ChatFormatError,
    ConfigError,
    CorruptRunError,
    DataError,
    PersonaSpaceError,
)
from persona_space.steering import Steer, check_hidden
from persona_space.training import _folder
from persona_space.training._specs import (
    LoraSpec,
    TrainOptions,
    TrainSpec,
    check_targets,
    default_learning_rate,
    spec_from_options,
)

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from persona_space.adapters import AdapterInfo
    from persona_space.models import LoadedModel


def encode_records(
    model: LoadedModel, data: ChatDataset, *, system_prompt: str, max_length: int
) -> list[dict[str, list[int]]]:
    """``input_ids`` and ``completion_mask`` (1 on the answer and its end-of-turn token) per record.

    The prompt is the chat up to the answer, rendered with the generation prompt;
    the answer's tokens are those after it in the rendering of the whole chat, cut
    after the first end-of-turn token (so a template's trailing newline is not trained).
    """
    tokenizer = model.tokenizer
    stop = frozenset(model.end_of_turn_ids)
    eos = tokenizer.eos_token_id
    out = []
    for rec in data.records:
        messages = rec["messages"]
        try:
            prompt = encode_chat(tokenizer, messages[:-1], system_prompt=system_prompt, add_generation_prompt=True)
            full = encode_chat(tokenizer, messages, system_prompt=system_prompt, add_generation_prompt=False)
        except PersonaSpaceError:
            raise
        except Exception as exc:  # the template's own error (e.g. jinja2's "roles must alternate")
            raise ChatFormatError(f"record {rec['id']!r} cannot be rendered by the chat template: {exc}") from exc
        cut = 0
        while cut < min(len(prompt), len(full)) and prompt[cut] == full[cut]:
            cut += 1  # a token spanning the boundary moves into the answer; the prompt stays a prefix
        answer = full[cut:]
        end = next((i for i, t in enumerate(answer) if t in stop), None)
        answer = answer[: end + 1] if end is not None else [*answer, eos]
        ids = full[:cut] + answer
        if len(ids) > max_length:
            raise DataError(
                f"record {rec['id']!r} is {len(ids)} tokens long, over max_length={max_length}; "
                "raise TrainSpec.max_length or shorten the record"
            )
        out.append({"input_ids": ids, "completion_mask": [0] * cut + [1] * len(answer)})
    return out


def resolve_precision(precision: str, model: LoadedModel) -> tuple[torch.dtype, bool, str]:
    """(weight dtype while training, bf16 autocast on/off, why) for ``TrainSpec.precision``."""
    import torch

    on_gpu = model.device.type == "cuda"
    gpu_bf16 = on_gpu and torch.cuda.is_bf16_supported()
    if precision == "float32":
        return torch.float32, False, "float32 requested"
    if precision == "bfloat16":
        if on_gpu and not gpu_bf16:
            raise ConfigError(f"precision='bfloat16' but the GPU {model.device} does not support bfloat16")
        return model.dtype if model.dtype != torch.float16 else torch.float32, True, "bfloat16 requested"
    if gpu_bf16:
        return model.dtype if model.dtype != torch.float16 else torch.float32, True, "auto: GPU with bfloat16"
    return torch.float32, False, "auto: float32 (bfloat16 training is not used on CPU or GPUs without bfloat16)"


@renamed_keywords(out="store")
def train_adapter(
    model: LoadedModel,
    records: ChatDataset | Sequence[dict[str, Any]] | str | os.PathLike[str],
    *,
    store: str | os.PathLike[str],
    train: TrainSpec | None = None,
    lora: LoraSpec | None = None,
    seed: int = 0,
    name: str | None = None,
    progress: bool = True,
    keep_checkpoints: bool = False,
    callbacks: Sequence[Any] = (),
    steer: Steer | None = None,
    **options: Unpack[TrainOptions],
) -> AdapterInfo:
    """Train a LoRA adapter on ``records`` and attach it to ``model``; return its :class:`AdapterInfo`.

    ``store`` becomes a standard PEFT adapter folder with a manifest
    (``manifest.json``: every hyperparameter, the data and chat-template hashes,
    versions, precision and timings) and the loss history
    (``tables/training_log.parquet``). The same call on the same ``store`` resumes
    from the last checkpoint after a crash, or just attaches the finished adapter.

    The options (``epochs``, ``learning_rate``, ``batch_size``, ``eval_every`` ...)
    are the fields of :class:`TrainSpec`, validated into one; a recipe already built
    is passed whole as ``train=TrainSpec(...)`` (not both). ``lora`` is the adapter's shape.

    ``steer`` (a :class:`~persona_space.steering.Steer` on the base model) steers every
    training forward pass and nothing after: preventative steering, which adds the
    trait's direction while the adapter learns so the adapter need not learn to move
    along it. It is recorded in the manifest (and so in the run id).

    >>> info = train_adapter(model, datasets.load("colours:red"), store="runs/red", epochs=4)  # doctest: +SKIP
    """
    import torch

    lora = lora or LoraSpec()
    if not isinstance(lora, LoraSpec):
        raise ConfigError(f"lora must be a LoraSpec, got {type(lora).__name__}")
    train = spec_from_options(TrainSpec, options, "train_adapter", whole=train)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    data = ensure_dataset(records)
    if len(data) == 0:
        raise DataError(f"dataset {data.name!r} holds no records; expected at least one to train on")
    out_path = Path(store)
    adapter_name = _folder.adapter_name_for(out_path, name)
    check_targets(lora, model.base_module)
    if steer is not None:
        check_training_steer(steer, model)
    attached = model.adapters.get(adapter_name)
    reattach = attached is not None and Path(attached.path).resolve() == out_path.resolve()
    if not reattach:  # the finished adapter of this very folder may already be on the model
        _folder.check_trainable(model, adapter_name)
    system_prompt = model.system_prompt if train.system_prompt is None else train.system_prompt
    dtype, autocast, why = resolve_precision(train.precision, model)
    n_parameters = sum(p.numel() for p in model.base_module.parameters())
    learning_rate = train.learning_rate or default_learning_rate(n_parameters)
    encoded = encode_records(model, data, system_prompt=system_prompt, max_length=train.max_length)
    params = _folder.base_params(
        "sft", adapter_name, model, lora, seed=seed, system_prompt=system_prompt, dtype=dtype, autocast=autocast
    )
    params.update({"data": data.describe(), "train": train.to_dict(), "learning_rate": learning_rate})
    if steer is not None:
        params["steer"] = steer.describe()
    state = _folder.prepare(out_path, params)
    if state == "done":
        return _attach_finished(model, out_path, adapter_name)
    if reattach:
        _folder.check_trainable(model, adapter_name)  # attached, yet its folder is unfinished: refuse

    from datasets import Dataset
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from persona_space.engine import steering_in_training

    resume = _folder.checkpoint_to_resume(out_path) if state == "resume" else None
    config = SFTConfig(
        **_folder.trainer_args(out_path, model, train, seed=seed, autocast=autocast, progress=progress),
        num_train_epochs=float(train.epochs),
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation,
        learning_rate=learning_rate,
        lr_scheduler_type=train.scheduler,
        warmup_steps=float(train.warmup) if train.warmup < 1 else 0.999,
        weight_decay=train.weight_decay,
        completion_only_loss=True,
        max_length=train.max_length,
        gradient_checkpointing=train.gradient_checkpointing,
    )
    _folder.one_device(config, model)
    dataset = Dataset.from_list(encoded)
    started = time.perf_counter()
    with (
        _folder.quiet_datasets(not progress),
        _folder.trainable_adapter(model, adapter_name, lora, dtype, seed=seed) as peft_model,
    ):
        probe_callback = ProbeCallback(model, adapter_name, train, system_prompt, out_path / _folder.PROBE_LOG)
        probe_callback.keep_until(_folder.checkpoint_step(resume))
        all_callbacks = [*callbacks, *([probe_callback] if train.eval_every else [])]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(padding-free|tokenizer has new PAD|use_cache=True).*")
            trainer = SFTTrainer(
                model=peft_model,
                args=config,
                train_dataset=dataset,
                processing_class=model.tokenizer,
                callbacks=all_callbacks,
            )
            _folder.quiet_progress(trainer, progress)
            with steering_in_training(peft_model, steer) if steer is not None else contextlib.nullcontext():
                result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        _folder.save_adapter(peft_model, adapter_name, out_path, _folder.base_model_id(model))
        history = _folder.write_loss_table(trainer.state.log_history, out_path)
        steps = int(trainer.state.global_step)
    seconds = time.perf_counter() - started
    losses = [row["loss"] for row in history if row.get("loss") is not None]
    answer_tokens = sum(sum(e["completion_mask"]) for e in encoded)
    results = {
        "model_parameters": n_parameters,  # the base model's size (it chose the default learning rate)
        "tokens": {
            "records": len(encoded),
            "total": sum(len(e["input_ids"]) for e in encoded),
            "answer": answer_tokens,
        },
        "result": {
            "steps": steps,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "train_loss": float(result.training_loss) if steps > _folder.checkpoint_step(resume) else None,
            "seconds": round(seconds, 3),
            "resumed_from": resume.name if resume else None,
        },
        "torch_threads": torch.get_num_threads(),
        "probe_backend": probe_callback.backend_used if train.eval_every else None,
    }
    _folder.finish(out_path, params, model, why, results, keep_checkpoints=keep_checkpoints)
    return _attach_finished(model, out_path, adapter_name)


def check_training_steer(steer: object, model: LoadedModel) -> None:
    """Refuse a training steering that is not a :class:`Steer` on the base model fitting ``model``."""
    if not isinstance(steer, Steer):
        raise ConfigError(f"steer must be a persona_space.Steer, got {type(steer).__name__}")
    if steer.adapter is not None:
        raise ConfigError(f"a training steering acts on the adapter being trained; {steer!r} names another adapter")
    config = model.base_module.config
    check_hidden(steer, int(config.hidden_size), int(config.num_hidden_layers))


def _attach_finished(model: LoadedModel, out: Path, name: str) -> AdapterInfo:
    """Attach the finished adapter in ``out``, after checking its files are the ones the manifest names."""
    from persona_space.adapters import adapter_manifest, adapter_sha256

    manifest = adapter_manifest(out) or {}
    if not (out / "adapter_config.json").is_file():
        raise CorruptRunError(f"{str(out)!r} has a manifest but no adapter_config.json; delete the folder and retrain")
    recorded = manifest.get("adapter_sha256")
    actual = adapter_sha256(out) if recorded is not None else None
    if actual != recorded:
        raise CorruptRunError(
            f"the adapter files in {str(out)!r} changed after training (sha256 {str(actual)[:16]}, "
            f"manifest {str(recorded)[:16]}); delete the folder and retrain"
        )
    model.load_adapter(out, name=name)
    return model.adapters[name]


class ProbeCallback:
    """Every ``TrainSpec.eval_every`` steps, answer the eval probes greedily and append them to a JSONL log.

    The field tracks persona emergence during training; this keeps the answers of
    each step beside the loss. It is a ``transformers.TrainerCallback`` in duck type.
    """

    def __init__(self, model: LoadedModel, adapter: str, spec: TrainSpec, system_prompt: str, path: Path) -> None:
        self.model = model
        self.adapter = adapter
        self.spec = spec
        self.system_prompt = system_prompt
        self.path = path
        self.backend_used: str | None = None

    def keep_until(self, step: int) -> None:
        """Drop logged answers after ``step`` (a resumed run logs those steps again)."""
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step] if step else []
        _io.write_text(self.path, "".join(kept))

    def answers(self) -> list[dict[str, Any]]:
        """The probes' greedy answers under the adapter being trained (on the ``auto`` backend)."""
        from persona_space.engine import GenerateRequest, resolve_backend

        prompts = list(self.spec.eval_probes)
        requests = [
            GenerateRequest(
                key=i,
                prompt_ids=tuple(self.model.encode(prompt, system_prompt=self.system_prompt)),
                adapter=self.adapter,
                temperature=0.0,
                top_p=1.0,
                max_new_tokens=self.spec.eval_max_new_tokens,
                seed=0,
            )
            for i, prompt in enumerate(prompts)
        ]
        backend = resolve_backend(self.model, "auto", batch_size=max(1, len(requests)))
        done = backend.generate(requests, stop_ids=frozenset(self.model.end_of_turn_ids))
        self.backend_used = backend.name
        texts = {c.key: self.model.tokenizer.decode(list(c.token_ids), skip_special_tokens=True) for c in done}
        return [{"prompt": p, "text": texts[i]} for i, p in enumerate(prompts)]

    def _log(self, step: int) -> None:
        module = self.model.module
        was_training = module.training
        module.eval()
        try:
            rows = self.answers()
        finally:
            if was_training:
                module.train()
        lines = "".join(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n" for row in rows)
        previous = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        _io.write_text(self.path, previous + lines)

    # transformers' TrainerCallback protocol (only the events used here)
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step == 0:
            self._log(0)
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        every = self.spec.eval_every or 0
        if every and state.global_step % every == 0:
            self._log(int(state.global_step))
        return control

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda args, state, control, **kwargs: control
        raise AttributeError(name)
