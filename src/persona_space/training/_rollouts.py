"""GRPO rollouts through the engine: TRL's ``rollout_func`` answered by a :class:`~persona_space.engine.Backend`.

TRL's own rollouts are the model's plain ``generate`` on the training module. Here
each step's answers are generation requests to the chosen backend instead, with
the adapter being trained as the requests' adapter:

* ``hf`` and ``cpu`` read the live PEFT weights of the module being trained, so the
  rollouts always use the adapter as it is after the last optimizer step (no copy);
* ``vllm`` holds its own copy of the model, so at each new step the adapter is saved
  into the run's ``rollouts/`` folder (safetensors) and served as a new
  ``LoRARequest`` (the previous step's folder is removed);
* ``ray`` actors hold their own models and are refused.

Every answer has its own random stream (:func:`~persona_space.engine.row_seed` of the
run's seed, the prompt, the step and the answer's place in its group), so a resumed
run draws the same rollouts as an uninterrupted one. The answer ends at the model's
end-of-turn token, which is kept as the completion's last token (TRL's own
``generate`` keeps its eos the same way); the loss sees the same tokens.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space.engine import Backend, BackendLike, GenerateRequest, require_generation, resolve_backend, row_seed
from persona_space.errors import ConfigError

if TYPE_CHECKING:
    from persona_space.models import LoadedModel

TRL_ROLLOUTS = "trl"
"""``train_grpo(backend="trl")``: TRL's own ``generate`` on the training module (the earlier path, kept to compare)."""

FOLDER_BACKENDS = frozenset({"vllm"})
"""Backends that hold their own copy of the model: the adapter reaches them as a folder saved each step."""


def prompt_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """The identity of a chat prompt (its messages as canonical JSON), to find its probe id."""
    return json.dumps([dict(m) for m in messages], sort_keys=True, ensure_ascii=False)


def rollout_backend(model: LoadedModel, backend: BackendLike) -> Backend | None:
    """The backend GRPO's rollouts run on (``None``: TRL's own ``generate``), refused before anything is written
    where it cannot generate with a module being trained (``ray``) or with the architecture."""
    if isinstance(backend, str) and backend == TRL_ROLLOUTS:
        return None
    name = backend if isinstance(backend, str) else getattr(backend, "name", None)
    if name == "ray":
        raise ConfigError(
            "backend 'ray' cannot generate GRPO rollouts: its actors hold their own copies of the model, not the "
            "adapter being trained; use 'cpu', 'hf', 'vllm', 'auto' or 'trl' (TRL's own generate)"
        )
    engine = resolve_backend(model, backend)
    require_generation(engine, model)
    return engine


@dataclass
class EngineRollouts:
    """A ``rollout_func`` for TRL's ``GRPOTrainer``: each step's answers from ``backend`` with ``adapter``
    (``None``: the base model).

    ``probe_ids`` maps :func:`prompt_key` of each training prompt to its probe id (the
    random streams are keyed by it). ``history`` records, per call, the answers, the
    tokens generated and the seconds the rollouts took (also logged as TRL metrics, so
    the loss table has them per step).
    """

    backend: Backend
    tokenizer: Any
    adapter: str | None
    probe_ids: Mapping[str, str]
    seed: int
    temperature: float
    max_new_tokens: int
    end_of_turn: int
    folder: Path | None = None
    base_model: str = ""
    history: list[dict[str, Any]] = field(default_factory=list, init=False)
    _served_step: int | None = field(default=None, init=False)
    _calls: Counter[int] = field(default_factory=Counter, init=False)
    _encoded: dict[str, list[int]] = field(default_factory=dict, init=False)  # the same prompts come every epoch

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        import torch

        step = int(trainer.state.global_step)
        call = self._calls[step]
        self._calls[step] += 1
        keys = [prompt_key(p) for p in prompts]
        prompt_ids = [self._encode(key, p) for key, p in zip(keys, prompts, strict=True)]
        seen: Counter[str] = Counter()
        requests = []
        for i, (key, ids) in enumerate(zip(keys, prompt_ids, strict=True)):
            probe = self.probe_ids.get(key, f"prompt-{i}")
            index = seen[probe]
            seen[probe] += 1
            stream = f"{probe}\x1fgrpo-step-{step}-{call}"
            requests.append(
                GenerateRequest(
                    key=i,
                    prompt_ids=tuple(ids),
                    adapter=self.adapter,
                    temperature=self.temperature,
                    top_p=1.0,
                    max_new_tokens=self.max_new_tokens,
                    seed=row_seed(self.seed, stream, self.temperature, index),
                )
            )
        module = trainer.model
        was_training = bool(module.training)
        started = time.perf_counter()
        if self.backend.name in FOLDER_BACKENDS:
            self._serve(module, step)
        module.eval()  # no dropout in the answers
        try:
            with torch.no_grad():
                done = self.backend.generate(requests, stop_ids=frozenset({self.end_of_turn}))
        finally:
            module.train(was_training)
        seconds = time.perf_counter() - started
        by_key = {c.key: c for c in done}
        missing = sorted(set(range(len(requests))) - set(by_key))
        if missing:
            raise RuntimeError(f"backend {self.backend.name!r} returned no completion for rollouts {missing}")
        completion_ids = [
            [*by_key[i].token_ids, *([self.end_of_turn] if by_key[i].finish_reason == "stop" else [])]
            for i in range(len(requests))
        ]
        tokens = sum(len(c.token_ids) for c in done)
        self.history.append(
            {"step": step + 1, "rollouts": len(requests), "rollout_tokens": tokens,
             "rollout_seconds": round(seconds, 4)}
        )  # fmt: skip
        # TRL logs the means of its metrics per logging step into the state a checkpoint keeps, so a
        # resumed run's loss table still has the earlier steps' figures
        metrics = getattr(trainer, "_metrics", None)
        if isinstance(metrics, dict) and "train" in metrics:
            metrics["train"]["rollout_tokens"].append(float(tokens))
            metrics["train"]["rollout_seconds"].append(seconds)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    def _encode(self, key: str, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        if key not in self._encoded:
            text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            self._encoded[key] = [int(t) for t in self.tokenizer(str(text), add_special_tokens=False)["input_ids"]]
        return list(self._encoded[key])

    def _serve(self, module: Any, step: int) -> None:
        """Save the adapter as it is now and hand the folder to the backend (once per step)."""
        if self._served_step == step:
            return
        from persona_space.adapters import info_for_folder
        from persona_space.training._folder import save_adapter

        if self.folder is None or self.adapter is None:
            raise ConfigError(
                f"backend {self.backend.name!r} needs an adapter and a folder to serve the adapter being trained from"
            )
        target = self.folder / f"step-{step:06d}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        save_adapter(module, self.adapter, target, self.base_model)
        serve = getattr(self.backend, "serve", None)
        if not callable(serve):
            raise ConfigError(f"backend {self.backend.name!r} cannot serve an adapter folder; use 'cpu' or 'hf'")
        serve(info_for_folder(self.adapter, target))
        for old in self.folder.glob("step-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        self._served_step = step

    def close(self) -> None:
        """Stop serving the adapter being trained where the backend held a copy of it (``vllm``)."""
        unserve = getattr(self.backend, "unserve", None)
        if self.adapter is not None and self._served_step is not None and callable(unserve):
            unserve(self.adapter)
        self._served_step = None

    def summary(self) -> dict[str, Any]:
        """Totals over the run's rollouts (this process's share of a resumed run)."""
        tokens = sum(int(h["rollout_tokens"]) for h in self.history)
        seconds = sum(float(h["rollout_seconds"]) for h in self.history)
        return {
            "backend": self.backend.describe(),
            "calls": len(self.history),
            "tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        }
