"""A judge that reads a local chat model's probabilities of every rating on a criterion's scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from persona_space.chat import render_chat
from persona_space.errors import ConfigError
from persona_space.judges._base import (
    JUDGE_SYSTEM_PROMPT,
    RATING_MASS_FLOOR,
    Criterion,
    Rating,
    check_min_mass,
    judge_messages,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from persona_space.engine import Backend, BackendLike
    from persona_space.models import LoadedModel


class LocalJudge:
    """Exact expected rating from a local chat model (the base model; adapters are switched off).

    The judge prompt is rendered with its chat template and the generation prompt; each answer
    ("0".."100", or the criterion's own scale) is the tokens of the number followed by the
    end-of-turn token, so "5" and "50" are different answers. The answer probabilities are
    normalised and :meth:`score` is the probability-weighted mean rating.
    They are computed by the exact candidate scorer of :mod:`persona_space.logprobs`.

    The answers are complete and disjoint, so their total is the probability the model
    gives to answering with a rating at all (:meth:`rate`'s ``mass``). Where it is under
    ``min_mass`` (:data:`~persona_space.judges.RATING_MASS_FLOOR`, the floor
    :class:`~persona_space.judges.OpenAIJudge` applies too) :meth:`score` is ``None`` and
    ``reads["below_floor"]`` counts it: a small model that mostly answers with words
    rates with a share of a small mass. ``min_mass=0`` keeps every rating.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        system_prompt: str = JUDGE_SYSTEM_PROMPT,
        backend: BackendLike = "auto",
        min_mass: float = RATING_MASS_FLOOR,
    ) -> None:
        from persona_space.engine import resolve_backend

        if not isinstance(system_prompt, str):
            raise ConfigError(f"system_prompt must be a string, got {system_prompt!r}")
        self.model = model
        self.system_prompt = system_prompt
        self.min_mass = check_min_mass(min_mass)
        self.reads = {"rated": 0, "below_floor": 0, "none": 0}
        self.backend: Backend = resolve_backend(model, backend)

    def describe(self) -> dict[str, Any]:
        """The judge for manifests: its model (name, weights hash) and system prompt."""
        return {
            "class": type(self).__name__,
            "model": self.model.name,
            "weights_sha256": self.model.weights_sha256,
            "system_prompt": self.system_prompt,
            "backend": self.backend.name,
            "min_mass": self.min_mass,
            "reads": dict(self.reads),
        }

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        """The probability-weighted mean rating (``None`` below ``min_mass`` or if the probabilities are not finite)."""
        return self.rate(prompt, response, criterion).value

    def rate(self, prompt: str, response: str, criterion: Criterion) -> Rating:
        """:meth:`score` with the probability the model gives to the scale's answers together (``mass``)."""
        import numpy as np

        logp = self.answer_logprobs(prompt, response, criterion)
        if not np.isfinite(logp).all():
            self.reads["none"] += 1
            return Rating(None, None, "none")
        top = float(logp.max())
        shifted = np.exp(logp - top)
        mass = float(np.exp(top) * shifted.sum())
        if mass < self.min_mass:
            self.reads["below_floor"] += 1
            return Rating(None, mass, "below_floor")
        probs = shifted / shifted.sum()
        self.reads["rated"] += 1
        return Rating(float(probs @ np.arange(criterion.low, criterion.high + 1, dtype=np.float64)), mass, "rated")

    def distribution(self, prompt: str, response: str, criterion: Criterion) -> npt.NDArray[np.float64]:
        """Probabilities of the ratings ``criterion.low``..``criterion.high`` (summing to 1)."""
        import numpy as np

        logp = self.answer_logprobs(prompt, response, criterion)
        shifted = np.exp(logp - logp.max())
        return np.asarray(shifted / shifted.sum(), dtype=np.float64)

    def answer_logprobs(self, prompt: str, response: str, criterion: Criterion) -> npt.NDArray[np.float64]:
        """Unnormalised log-probabilities (nats) of the full answers "0<eot>" .. "100<eot>" (or the scale's)."""
        from persona_space.engine import end_of_turn_id, split_continuations

        tokenizer = self.model.tokenizer
        text = render_chat(tokenizer, judge_messages(prompt, response, criterion, system_prompt=self.system_prompt))
        split = split_continuations(tokenizer, text, criterion.answers, end_of_turn=end_of_turn_id(self.model))
        return self._logprobs(split.prompt_ids, split.ids)

    def _logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> npt.NDArray[np.float64]:
        """Sum of the token log-probabilities of each candidate after the prompt (nats), base model.

        The candidates share one pass after the prompt as a prefix tree ("1", "10", "100"
        share their first digit): see :mod:`persona_space.logprobs`.
        """
        import numpy as np

        from persona_space.engine import ScoreRequest

        request = ScoreRequest(
            None, tuple(int(i) for i in prompt_ids), tuple(tuple(int(i) for i in c) for c in candidates)
        )
        return np.asarray(self.backend.score([request])[0].total, dtype=np.float64)
