"""The contract between operations and backends: requests, their results, and the Backend protocol.

An operation (``sample``, ``identity_shift``, a judge, the answers a training run
logs) turns its work into requests; a backend runs them. A generation request
carries its model (``adapter``: an attached adapter's name, ``None`` for the base
model), its prompt as token ids, its sampling parameters and its own random
stream (``seed``); a scoring request carries a prompt and the candidate
continuations whose log-probabilities are wanted. Which batch a request lands
in, on which worker, is the backend's business and never changes its result
beyond floating-point noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

FinishReason = Literal["stop", "length"]
BackendName = Literal["auto", "hf", "cpu", "vllm", "ray"]
BACKEND_NAMES: tuple[str, ...] = ("auto", "hf", "cpu", "vllm", "ray")


@dataclass(frozen=True)
class GenerateRequest:
    """One sample to generate; ``key`` identifies it in the results (its position in the request list)."""

    key: int
    prompt_ids: tuple[int, ...]
    adapter: str | None
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class Completion:
    """What a generation request produced: the new tokens (stop token excluded) and why it ended."""

    key: int
    token_ids: tuple[int, ...]
    finish_reason: FinishReason


@dataclass(frozen=True)
class ScoreRequest:
    """Candidate continuations of one prompt under one model (``adapter``; ``None`` = base model)."""

    adapter: str | None
    prompt_ids: tuple[int, ...]
    candidates: tuple[tuple[int, ...], ...]


@dataclass
class Scores:
    """Per candidate of a request: the log-probability of each token (nats) and whether each was the argmax."""

    token_logprobs: list[np.ndarray]
    token_greedy: list[np.ndarray]

    @property
    def total(self) -> np.ndarray:
        return np.array([float(np.sum(t, dtype=np.float64)) for t in self.token_logprobs])

    @property
    def greedy(self) -> np.ndarray:
        return np.array([bool(g.all()) for g in self.token_greedy])


@dataclass(frozen=True)
class Capabilities:
    """What a backend promises.

    ``paired_streams``: a request's tokens are a function of its seed (and the
    model) only, so conditions share random numbers and batches do not matter.
    ``mixed_adapters``: one batch may hold requests for different adapters.
    ``exact_scoring``: scores are full-precision log-softmax values of the model's
    own logits, checked against the model's forward pass. ``architectures``:
    the ``model_type`` values it generates with (``None``: any transformers
    causal LM); scoring runs on any architecture. ``batch_invariant``: a
    request's logits, and so its tokens, do not depend on the other requests of
    its batch (their number, adapters, lengths or order), so a condition sampled
    alone, beside others, at another batch size or resumed into another layout
    gives the same texts; ``invariance`` says why it holds or what breaks it here.
    ``steering``: rows of a :class:`~persona_space.steering.Steer` condition are
    generated and scored steered. ``activations``: the backend reads mean
    residual-stream activations per layer (``read``; see :mod:`persona_space.engine._reading`).
    """

    paired_streams: bool
    mixed_adapters: bool
    exact_scoring: bool
    devices: tuple[str, ...]
    architectures: frozenset[str] | None = None
    batch_invariant: bool = False
    invariance: str = ""
    steering: bool = False
    activations: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["devices"] = list(self.devices)
        out["architectures"] = None if self.architectures is None else sorted(self.architectures)
        return out


OnComplete = Callable[[Completion], None]
OnTokens = Callable[[int], None]


@runtime_checkable
class Backend(Protocol):
    """Runs requests against one loaded model and its attached adapters.

    ``generate`` calls ``on_complete`` as each request finishes (in any order) and
    ``on_tokens`` with the number of tokens produced since its last call, so
    progress shows tokens as they are generated, not only finished rows; it
    returns every completion. ``score`` returns one :class:`Scores` per request,
    in request order. ``describe`` is what a manifest records.
    """

    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        *,
        stop_ids: frozenset[int],
        on_complete: OnComplete | None = None,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]: ...

    def score(self, requests: Sequence[ScoreRequest], *, on_scored: OnTokens | None = None) -> list[Scores]: ...

    def describe(self) -> dict[str, Any]: ...
