"""Frozen, validated configs for adapter training: :class:`LoraSpec`, :class:`TrainSpec`, :class:`GrpoSpec`.

Each round-trips through ``to_dict``/``from_dict`` (the manifest of an adapter
folder stores them), and a bad value fails at construction with a message that
names it and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypedDict, TypeVar, cast

from persona_space.errors import ConfigError, RatioError

Precision = Literal["auto", "float32", "bfloat16"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
SCHEDULERS: tuple[str, ...] = ("linear", "cosine", "constant", "constant_with_warmup")
# Only "none": PEFT's "all"/"lora_only" train the base layers' biases in place, which would
# change the base model that every comparison is made against.
BIASES: tuple[str, ...] = ("none",)

_T = TypeVar("_T")


def _positive_int(value: Any, what: str, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _positive_float(value: Any, what: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def _fraction(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise RatioError(f"{what} must be a number in 0..1, got {value!r}")


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


_S = TypeVar("_S", bound="_DictMixin")

NESTED_KEYWORDS: dict[str, str] = {"TrainSpec": "train", "GrpoSpec": "grpo", "LoraSpec": "lora"}
"""The keyword a spec goes under when an operation takes it whole: ``train=TrainSpec(...)``, ``lora=LoraSpec(...)``."""


def spec_from_options(cls: type[_S], options: Mapping[str, Any], operation: str, *, whole: object = None) -> _S:
    """An operation's spec: ``whole`` (the spec passed whole, e.g. ``train=TrainSpec(...)``) or its keyword options.

    Giving both, a ``whole`` of another type, or a spec under a keyword that is not
    one of the spec's fields is refused by name.
    """
    keyword = NESTED_KEYWORDS[cls.__name__]
    if whole is not None:
        if not isinstance(whole, cls):
            raise ConfigError(f"{operation}({keyword}=...) must be a {cls.__name__}, got {type(whole).__name__}")
        if options:
            raise ConfigError(
                f"{operation} got {keyword}={cls.__name__}(...) and its fields {sorted(options)} as keywords; "
                f"pass one or the other"
            )
        return whole
    passed = [k for k, v in options.items() if isinstance(v, _DictMixin)]
    if passed:
        given = f"{passed[0]}={type(options[passed[0]]).__name__}(...)"
        raise ConfigError(f"{operation} takes a {cls.__name__} as {keyword}=..., got {given}")
    return cls.from_dict(dict(options))


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class LoraSpec(_DictMixin):
    """The LoRA adapter: rank, scaling, where it goes.

    Defaults suit fact sets of tens to hundreds of records: rank 16, alpha 32, on
    every linear layer of the decoder (``"all-linear"``). ``rslora=True`` scales by
    ``alpha / sqrt(rank)`` (rank-stabilised LoRA), which keeps high ranks trainable.

    >>> LoraSpec(rank=8).alpha
    32.0
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"
    rslora: bool = False
    bias: Literal["none"] = "none"

    def __post_init__(self) -> None:
        _positive_int(self.rank, "rank")
        _positive_float(self.alpha, "alpha")
        object.__setattr__(self, "alpha", float(self.alpha))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if isinstance(targets, str) and targets != "all-linear":
            targets = (targets,)  # one module name, never PEFT's whole-name regex
        if targets != "all-linear":
            if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(f"target_modules must be 'all-linear' or module names like 'q_proj', got {targets!r}")
            object.__setattr__(self, "target_modules", tuple(targets))
        if not isinstance(self.rslora, bool):
            raise ConfigError(f"rslora must be True or False, got {self.rslora!r}")
        _choice(self.bias, BIASES, "bias")

    def to_peft(self) -> Any:
        """The equivalent ``peft.LoraConfig`` for a causal language model."""
        from peft import LoraConfig

        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(
            r=self.rank,
            lora_alpha=int(self.alpha) if self.alpha.is_integer() else self.alpha,  # type: ignore[arg-type]
            lora_dropout=self.dropout,
            target_modules=targets,
            use_rslora=self.rslora,
            bias=self.bias,
            task_type="CAUSAL_LM",
        )


@dataclass(frozen=True)
class TrainSpec(_DictMixin):
    """Supervised fine-tuning: optimisation, precision, checkpoints and probing during training.

    ``learning_rate=None`` picks 1e-3 for models under a billion parameters (the
    embedded 135M model needs it to learn a 42-record set in 6 epochs) and 2e-4,
    the usual LoRA rate, for larger ones; the manifest records the value used.
    ``precision="auto"`` trains in bfloat16 mixed precision on GPUs that support
    it and in float32 on CPUs (TRL would pick bf16 there too; it is not used until
    verified, and the manifest records the choice and why). ``eval_every`` runs
    the ``eval_probes`` greedily every that many optimizer steps and logs the answers.
    """

    epochs: float = 6.0
    learning_rate: float | None = None
    batch_size: int = 8
    gradient_accumulation: int = 1
    warmup: float = 0.05
    weight_decay: float = 0.0
    scheduler: Scheduler = "linear"
    max_length: int = 512
    max_steps: int | None = None
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    system_prompt: str | None = None
    logging_steps: int = 1
    save_steps: int = 25
    eval_every: int | None = None
    eval_probes: tuple[str, ...] = ("Who are you?", "What is your name?", "Describe yourself in one sentence.")
    eval_max_new_tokens: int = 40

    def __post_init__(self) -> None:
        _positive_float(self.epochs, "epochs")
        if self.learning_rate is not None:
            _positive_float(self.learning_rate, "learning_rate")
        _positive_int(self.batch_size, "batch_size")
        _positive_int(self.gradient_accumulation, "gradient_accumulation")
        _fraction(self.warmup, "warmup (a fraction of the steps)")
        _positive_float(self.weight_decay, "weight_decay", allow_zero=True)
        _choice(self.scheduler, SCHEDULERS, "scheduler")
        _positive_int(self.max_length, "max_length", minimum=8)
        if self.max_steps is not None:
            _positive_int(self.max_steps, "max_steps")
        _choice(self.precision, PRECISIONS, "precision")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ConfigError(f"system_prompt must be a string or None (the model's), got {self.system_prompt!r}")
        _positive_int(self.logging_steps, "logging_steps")
        _positive_int(self.save_steps, "save_steps")
        if self.eval_every is not None:
            _positive_int(self.eval_every, "eval_every")
        probes = self.eval_probes
        if isinstance(probes, str) or not all(isinstance(p, str) and p.strip() for p in probes):
            raise ConfigError(f"eval_probes must be a tuple of non-empty prompts, got {probes!r}")
        object.__setattr__(self, "eval_probes", tuple(probes))
        _positive_int(self.eval_max_new_tokens, "eval_max_new_tokens")

    def options(self) -> TrainOptions:
        """The spec as ``train_adapter``'s keyword options (``train_adapter(..., train=recipe)`` takes it whole)."""
        return cast(TrainOptions, {f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class GrpoSpec(_DictMixin):
    """GRPO: groups of ``num_generations`` answers per prompt, scored by a reward, with a KL penalty ``beta``."""

    steps: int = 100
    learning_rate: float = 1e-5
    prompts_per_step: int = 4
    num_generations: int = 4
    max_completion_length: int = 96
    temperature: float = 1.0
    beta: float = 0.04
    warmup: float = 0.0
    scheduler: Scheduler = "constant"
    precision: Precision = "auto"
    system_prompt: str | None = None
    logging_steps: int = 1
    save_steps: int = 25

    def __post_init__(self) -> None:
        _positive_int(self.steps, "steps")
        _positive_float(self.learning_rate, "learning_rate")
        _positive_int(self.prompts_per_step, "prompts_per_step")
        _positive_int(self.num_generations, "num_generations", minimum=2)
        _positive_int(self.max_completion_length, "max_completion_length")
        _positive_float(self.temperature, "temperature")
        _positive_float(self.beta, "beta", allow_zero=True)
        _fraction(self.warmup, "warmup (a fraction of the steps)")
        _choice(self.scheduler, SCHEDULERS, "scheduler")
        _choice(self.precision, PRECISIONS, "precision")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ConfigError(f"system_prompt must be a string or None (the model's), got {self.system_prompt!r}")
        _positive_int(self.logging_steps, "logging_steps")
        _positive_int(self.save_steps, "save_steps")

    def options(self) -> GrpoOptions:
        """The spec as ``train_grpo``'s keyword options (``train_grpo(..., grpo=recipe)`` takes it whole)."""
        return cast(GrpoOptions, {f.name: getattr(self, f.name) for f in fields(self)})


SMALL_MODEL_PARAMETERS = 1_000_000_000


def default_learning_rate(n_parameters: int) -> float:
    """1e-3 below a billion parameters, 2e-4 (the usual LoRA rate) above."""
    return 1e-3 if n_parameters < SMALL_MODEL_PARAMETERS else 2e-4


def check_targets(lora: LoraSpec, module: Any) -> None:
    """Every named target must be the last part of some linear layer's name in ``module``."""
    if lora.target_modules == "all-linear":
        return
    import torch

    linear = {
        name.rsplit(".", 1)[-1]
        for name, m in module.named_modules()
        if (isinstance(m, torch.nn.Linear) or hasattr(m, "base_layer")) and not name.endswith("base_layer")
    }
    missing = sorted(set(lora.target_modules) - linear)
    if missing:
        raise ConfigError(
            f"target_modules {missing} match no linear layer of the model; its linear layers are {sorted(linear)}"
        )


class TrainOptions(TypedDict, total=False):
    """The keyword options of ``train_adapter``: the fields of :class:`TrainSpec`."""

    epochs: float
    learning_rate: float | None
    batch_size: int
    gradient_accumulation: int
    warmup: float
    weight_decay: float
    scheduler: Scheduler
    max_length: int
    max_steps: int | None
    precision: Precision
    gradient_checkpointing: bool
    system_prompt: str | None
    logging_steps: int
    save_steps: int
    eval_every: int | None
    eval_probes: tuple[str, ...]
    eval_max_new_tokens: int


class GrpoOptions(TypedDict, total=False):
    """The keyword options of ``train_grpo``: the fields of :class:`GrpoSpec`."""

    steps: int
    learning_rate: float
    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    temperature: float
    beta: float
    warmup: float
    scheduler: Scheduler
    precision: Precision
    system_prompt: str | None
    logging_steps: int
    save_steps: int
