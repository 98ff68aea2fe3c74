"""Rewards for GRPO identity steering.

A reward is any callable ``reward(prompts, responses) -> list[float]`` over the user
prompts and the model's answers (plain strings). :class:`IdentityReward` is the
composite of the identity-steering experiment: a judge scores each answer 0..100 on
three criteria and the reward is ``0.60 * no_ai_self_reference + 0.20 * engagement
+ 0.20 * coherence``.

>>> from persona_space.judges import RuleJudge
>>> reward = IdentityReward(RuleJudge())
>>> a, b = reward(["What are you?"] * 2, ["I am an AI language model.", "I'm Maria, a nurse from Ohio."])
>>> a < b
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from persona_space.errors import ConfigError

if TYPE_CHECKING:
    from persona_space.judges import Judge

Reward = Callable[[list[str], list[str]], list[float]]
DEFAULT_WEIGHTS: dict[str, float] = {"no_ai_self_reference": 0.60, "engagement": 0.20, "coherence": 0.20}
NEUTRAL_SCORE = 50.0


@dataclass
class IdentityReward:
    """The seed's composite reward: weighted judge scores (each 0..100), so the reward is 0..100 too.

    A criterion the judge cannot score (``None``, e.g. an endpoint whose numbers carry
    too little probability) counts as the neutral 50 and is tallied in ``missing``.
    """

    judge: Judge
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    missing: int = 0
    name: str = "identity_reward"

    def __post_init__(self) -> None:
        from persona_space.judges import CRITERIA

        unknown = sorted(set(self.weights) - set(CRITERIA))
        if unknown:
            raise ConfigError(f"unknown criteria {unknown} in weights; expected some of {sorted(CRITERIA)}")
        for name, w in self.weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"weight of {name!r} must be a non-negative number, got {w!r}")
        if not sum(self.weights.values()) > 0:
            raise ConfigError(f"weights {self.weights} sum to 0; expected a positive total")

    def describe(self) -> dict[str, Any]:
        """What the reward is, for manifests: the weights and the judge's own description."""
        judge_describe = getattr(self.judge, "describe", None)
        judge = judge_describe() if callable(judge_describe) else {"class": type(self.judge).__name__}
        return {"class": type(self).__name__, "weights": dict(self.weights), "judge": judge}

    def components(self, prompt: str, response: str) -> dict[str, float | None]:
        """The judge's score for each weighted criterion."""
        from persona_space.judges import CRITERIA

        return {name: self.judge.score(prompt, response, CRITERIA[name]) for name in self.weights}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ConfigError(f"{len(prompts)} prompts but {len(responses)} responses; expected one per prompt")
        total = sum(self.weights.values())
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            value = 0.0
            for name, score in self.components(prompt, response).items():
                if score is None:
                    self.missing += 1
                    score = NEUTRAL_SCORE
                value += self.weights[name] * score
            out.append(value / total)
        return out


def as_trl_reward(reward: Reward) -> Callable[..., list[float]]:
    """Adapt ``reward(prompts, responses)`` to TRL's reward-function signature.

    TRL passes conversational prompts and completions as message lists; the user
    prompt is the last user message and the response the assistant's content.
    """

    name = reward_name(reward)

    def trl_reward(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        # The probe's own text when the dataset carries it: a template without a system role
        # has the system prompt merged into the user turn, which the reward should not see.
        user = columns.get("user_prompt") or [_last_content(p, "user") for p in prompts]
        texts = [_last_content(c, "assistant") for c in completions]
        values = reward(list(user), texts)
        if not isinstance(values, (list, tuple)) or len(values) != len(texts):
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else f"a {type(values).__name__}"
            raise ConfigError(
                f"reward {name!r} returned {got}; expected a list of {len(texts)} numbers, one per response"
            )
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"reward {name!r} returned {v!r}; expected a finite number for every response")
            out.append(float(v))
        return out

    trl_reward.__name__ = name
    return trl_reward


def _last_content(value: Any, role: str) -> str:
    if isinstance(value, str):
        return value
    for message in reversed(list(value)):
        if message.get("role") == role:
            return str(message.get("content", ""))
    return str(value[-1].get("content", "")) if value else ""


def reward_name(reward: Reward) -> str:
    """A reward's ``name`` attribute, else its ``__name__``, else its class name."""
    return str(getattr(reward, "name", None) or getattr(reward, "__name__", type(reward).__name__))


def describe_reward(reward: Reward) -> dict[str, Any]:
    """A reward's description for manifests: its ``describe()`` where it has one, else its name."""
    describe = getattr(reward, "describe", None)
    if callable(describe):
        return {"name": reward_name(reward), **describe()}
    return {"name": reward_name(reward), "class": type(reward).__name__}
