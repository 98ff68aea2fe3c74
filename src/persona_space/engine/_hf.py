"""The ``hf`` backend: plain transformers forward passes, for any causal LM transformers loads.

Generation is the model's own ``generate`` with its KV cache, one row per call by
default (the only layout in which a row's tokens do not depend on the others; larger
``batch_size`` left-pads batches, faster and not batch-invariant), with one logits
processor in charge of the pick: every row takes the
token its own random stream selects by inverse CDF (:func:`choose_tokens`), the
same rule as every other backend, so rows match across backends up to
floating-point noise (greedy rows match exactly in float32). The model's
``generation_config`` is set aside during the call, so no repetition penalty or
other default of a model's hub config changes the distribution. Adapters are
routed per row, so one batch holds several adapters and the base model.

Scoring runs one right-padded row per prompt + candidate through the model's own
causal mask and reads the log-softmax of its logits in float32: the reference the
packed scorer of the ``cpu`` backend is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from persona_space.engine._host import Host
from persona_space.engine._reading import OnRead, ReadRequest, read_forward
from persona_space.engine._requests import (
    Capabilities,
    Completion,
    FinishReason,
    GenerateRequest,
    OnComplete,
    OnTokens,
    ScoreRequest,
    Scores,
)
from persona_space.engine._routing import route_rows
from persona_space.engine._score import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ROW_TOKENS, check_score_options, score_jobs
from persona_space.engine._steering import routes_of
from persona_space.engine._streams import choose_tokens
from persona_space.errors import ConfigError

DEFAULT_BATCH = 1
"""Rows per ``generate`` call by default: one, the only layout in which a row's tokens do not depend on the others
(a batch left-pads its prompts and multiplies them together, and both change a row's last bits)."""


class HFBackend:
    """``generate`` with per-row random streams (one row per call by default), and padded exact scoring."""

    name = "hf"

    def __init__(
        self,
        model: Host,
        *,
        batch_size: int = DEFAULT_BATCH,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_score_options("padded", batch_tokens, max_row_tokens)
        invariant = batch_size == 1
        self.capabilities = Capabilities(
            paired_streams=True, mixed_adapters=True, exact_scoring=True, devices=("cpu", "cuda", "mps"),
            architectures=None, batch_invariant=invariant, steering=True, activations=True,
            invariance="batch-invariant: one row per generate call" if invariant else (
                f"not batch-invariant: {batch_size} rows per generate call are left-padded and multiplied together"
            ),
        )  # fmt: skip
        self.model = model
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.max_row_tokens = max_row_tokens

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        *,
        stop_ids: frozenset[int],
        on_complete: OnComplete | None = None,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]:
        order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt_ids), requests[i].prompt_ids, i))
        out: list[Completion] = []
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start : start + self.batch_size]]
            for completion in self._batch(batch, stop_ids, on_tokens):
                out.append(completion)
                if on_complete is not None:
                    on_complete(completion)
        return out

    def _batch(
        self, batch: list[GenerateRequest], stop_ids: frozenset[int], on_tokens: OnTokens | None
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        model = self.model
        base = model.base_module
        pad = model.tokenizer.pad_token_id
        pad = int(pad) if pad is not None else int(next(iter(stop_ids), 0))
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, request in enumerate(batch):
            ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids, dtype=torch.long)
            mask[row, width - len(request.prompt_ids) :] = 1
        picker = _StreamPicker(batch, width, stop_ids, on_tokens)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max(r.max_new_tokens for r in batch),
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=pad,
        )
        saved = getattr(base, "generation_config", None)
        routed = route_rows(model.module, [r.adapter for r in batch], routes_of(model))
        with torch.inference_mode(), routed:
            base.generation_config = GenerationConfig()  # no hub defaults (penalties, bad words) on the logits
            try:
                output = base.generate(
                    input_ids=ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    generation_config=config,
                    logits_processor=LogitsProcessorList([picker]),
                )
            finally:
                base.generation_config = saved
        new = output[:, width:].cpu().numpy()
        return [_completion(r, new[row], stop_ids) for row, r in enumerate(batch)]

    def read(
        self, requests: Sequence[ReadRequest], *, batch_size: int = 8, on_batch: OnRead | None = None
    ) -> list[np.ndarray]:
        """Mean activations per layer of each request, through the model's own forward pass (it sees the
        model's hooks), ``batch_size`` right-padded chats a pass."""
        return read_forward(self.model, requests, batch_size=batch_size, on_batch=on_batch)

    def score(self, requests: Sequence[ScoreRequest], *, on_scored: OnTokens | None = None) -> list[Scores]:
        return score_jobs(
            self.model,
            requests,
            method="padded",
            batch_tokens=self.batch_tokens,
            max_row_tokens=self.max_row_tokens,
            progress=on_scored,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capabilities": self.capabilities.to_dict(),
            "batch_size": self.batch_size,
            "score_method": "padded",
        }


class _StreamPicker:
    """A logits processor that forces each row's token to the one its random stream picks."""

    def __init__(
        self, batch: list[GenerateRequest], width: int, stop_ids: frozenset[int], on_tokens: OnTokens | None
    ) -> None:
        self.temperatures = np.array([r.temperature for r in batch], dtype=np.float64)
        self.top_ps = np.array([r.top_p for r in batch], dtype=np.float64)
        self.seeds = np.array([r.seed for r in batch], dtype=np.uint64)
        self.limits = np.array([r.max_new_tokens for r in batch], dtype=np.int64)
        self.width = width
        self.stop = np.array(sorted(stop_ids), dtype=np.int64)
        self.finished = np.zeros(len(batch), dtype=bool)
        self.on_tokens = on_tokens

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        step = int(input_ids.shape[1]) - self.width
        if step > 0:
            last = input_ids[:, -1].cpu().numpy()
            self.finished |= np.isin(last, self.stop) | (step >= self.limits)
        picks = choose_tokens(
            scores, self.temperatures, self.top_ps, self.seeds, np.full(len(self.seeds), step, dtype=np.int64)
        )
        if self.on_tokens is not None:
            self.on_tokens(int((~self.finished).sum()))
        forced = scores.new_full(scores.shape, float("-inf"))
        rows = np.arange(len(picks))
        forced[rows, picks] = 0.0
        return forced


def _completion(request: GenerateRequest, new: np.ndarray | Sequence[int], stop_ids: frozenset[int]) -> Completion:
    tokens = [int(t) for t in new[: request.max_new_tokens]]
    reason: FinishReason = "length"
    for i, token in enumerate(tokens):
        if token in stop_ids:
            tokens, reason = tokens[:i], "stop"
            break
    return Completion(key=request.key, token_ids=tuple(tokens), finish_reason=reason)
