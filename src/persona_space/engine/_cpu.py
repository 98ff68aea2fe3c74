"""The ``cpu`` backend: the slot engine for generation and the packed exact scorer.

Named for where it shines; it runs on any torch device. Generation keeps one
KV-cache slot per sample with continuous batching, a shared prompt prefix
computed once per adapter, and (on CPU, in bfloat16 or float32) oneDNN-prepacked weights with
the q/k/v and gate/up projections fused into one product each, where their copy fits in a
quarter of the free memory;
it drives the architectures in :data:`SUPPORTED_MODEL_TYPES`. Scoring packs each
prompt's candidates as a prefix tree into one row (any architecture whose
attention takes a 4-D mask; padded rows otherwise).

Process-wide state it touches, recorded by :meth:`CPUBackend.describe`: the glibc
allocator tuning of :mod:`persona_space.engine._heap`, the
``PERSONA_SPACE_PACKED_LINEAR`` switch of the prepacked weights, and the fused
decode kernels of :mod:`persona_space.engine._native` (compiled once into the
persona_space cache; ``PERSONA_SPACE_NATIVE_KERNELS=0`` turns them off).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from persona_space.engine._arch import PACK_ENV, SUPPORTED_MODEL_TYPES, check_supported, supports
from persona_space.engine._heap import heap_state
from persona_space.engine._host import Host
from persona_space.engine._native import native_state
from persona_space.engine._reading import OnRead, ReadRequest, read_stack
from persona_space.engine._requests import (
    Capabilities,
    Completion,
    GenerateRequest,
    OnComplete,
    OnTokens,
    ScoreRequest,
    Scores,
)
from persona_space.engine._routing import AdapterRouter, check_routable
from persona_space.engine._score import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_ROW_TOKENS,
    ScoreMethod,
    check_score_options,
    resolve_method,
    score_jobs,
)
from persona_space.engine._steering import routes_of
from persona_space.errors import ConfigError

AUTO_SLOTS = {"cpu": 128, "cuda": 256}


class CPUBackend:
    """Continuous batching over KV slots (generation) and prefix-tree packing (scoring)."""

    name = "cpu"

    def __init__(
        self,
        model: Host,
        *,
        batch_size: int | Literal["auto"] = "auto",
        score_method: ScoreMethod = "auto",
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
        invariant: bool = True,
    ) -> None:
        """``invariant=False`` generates through the earlier path (PEFT's LoRA layers, products on whole
        batches), whose rows depend on their batch; it is kept to measure what invariance costs."""
        check_batch_size(batch_size)
        if not isinstance(invariant, bool):
            raise ConfigError(f"invariant must be True or False, got {invariant!r}")
        self.invariant = invariant
        self.last_invariance: str | None = None
        check_score_options(score_method, batch_tokens, max_row_tokens)
        self.model = model
        self.batch_size = batch_size
        self.score_method = score_method
        self.batch_tokens = batch_tokens
        self.max_row_tokens = max_row_tokens
        self.last_slots: int | None = None
        self.last_method: str | None = None
        self.last_prefix: int | None = None

    @property
    def capabilities(self) -> Capabilities:
        """What this backend promises for its model as it is now (attached adapters included)."""
        from persona_space.engine._stack import DecoderStack

        invariant, why = False, "the architecture is not one the slot engine drives"
        if supports(self.model.base_module):
            decided = DecoderStack(
                self.model.base_module, pack_limit=memory_budget(self.model), invariant=self.invariant, build=False
            )
            invariant, why = decided.invariant, decided.invariance
        return Capabilities(
            paired_streams=True,
            mixed_adapters=True,
            exact_scoring=True,
            devices=("cpu", "cuda", "mps"),
            architectures=SUPPORTED_MODEL_TYPES,
            batch_invariant=invariant,
            invariance=why,
            steering=True,
            activations=True,
        )

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        *,
        stop_ids: frozenset[int],
        on_complete: OnComplete | None = None,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]:
        from persona_space.engine._slots import generate
        from persona_space.engine._stack import DecoderStack

        check_supported(self.model.base_module)
        if not requests:
            return []
        routes = routes_of(self.model)
        check_routable(self.model.module, {r.adapter for r in requests}, routes)
        jobs = [replace(r, key=i) for i, r in enumerate(requests)]  # the loop indexes jobs by position
        out: list[Completion] = []

        def done(completion: Completion) -> None:
            mapped = replace(completion, key=requests[completion.key].key)
            out.append(mapped)
            if on_complete is not None:
                on_complete(mapped)

        capacity = max(len(r.prompt_ids) for r in jobs) + max(r.max_new_tokens for r in jobs)
        slots = auto_batch_size(self.model, capacity) if self.batch_size == "auto" else self.batch_size
        self.last_slots = slots
        self.last_prefix = common_prefix_length([r.prompt_ids for r in jobs])
        stack = DecoderStack(
            self.model.base_module, pack_limit=memory_budget(self.model), invariant=self.invariant, routes=routes
        )
        self.last_invariance = stack.invariance
        generate(
            stack,
            AdapterRouter(self.model.module, routes),
            jobs,
            slots=slots,
            stop_ids=stop_ids,
            on_complete=done,
            on_tokens=on_tokens,
            prefix_len=self.last_prefix,
        )
        return out

    def read(
        self, requests: Sequence[ReadRequest], *, batch_size: int = 8, on_batch: OnRead | None = None
    ) -> list[np.ndarray]:
        """Mean activations per layer of each request, read inside the slot engine's prefill, ``batch_size``
        chats a pass; on the row-invariant path a chat's activations do not depend on its batch."""
        from persona_space.engine._stack import DecoderStack

        check_supported(self.model.base_module)
        routes = routes_of(self.model)
        check_routable(self.model.module, {r.adapter for r in requests}, routes)
        stack = DecoderStack(
            self.model.base_module, pack_limit=memory_budget(self.model), invariant=self.invariant, routes=routes
        )
        self.last_invariance = stack.invariance
        router = AdapterRouter(self.model.module, routes)
        return read_stack(stack, router, requests, batch_size=batch_size, on_batch=on_batch)

    def score(self, requests: Sequence[ScoreRequest], *, on_scored: OnTokens | None = None) -> list[Scores]:
        if requests:
            self.last_method = resolve_method(self.model, requests, self.score_method)
        return score_jobs(
            self.model,
            requests,
            method=self.score_method,
            batch_tokens=self.batch_tokens,
            max_row_tokens=self.max_row_tokens,
            progress=on_scored,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capabilities": self.capabilities.to_dict(),
            "invariance": self.last_invariance,  # of the last generation (None: none yet)
            "batch_size": self.batch_size if self.last_slots is None else self.last_slots,
            "shared_prefix_tokens": self.last_prefix,
            "score_method": self.last_method or self.score_method,
            "packed_linear": f"{PACK_ENV}={os.environ.get(PACK_ENV, '1')}",
            "heap_tuning": heap_state(),
            "native_kernels": native_state(),
        }


def check_batch_size(batch_size: object) -> None:
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")


def common_prefix_length(prompts: Sequence[tuple[int, ...]]) -> int:
    """Tokens shared by the start of every prompt, leaving at least one token of each to prefill.

    Computed over the distinct prompts, so it depends on the prompt set, not on which rows remain.
    """
    unique = sorted(set(prompts))
    shortest = min(len(p) for p in unique)
    length = 0
    first = unique[0]
    while length < shortest - 1 and all(p[length] == first[length] for p in unique):
        length += 1
    return length


def auto_batch_size(model: Host, capacity: int) -> int:
    """Slots for the device: large enough to keep the matrix units busy, small enough for memory."""
    slots = AUTO_SLOTS.get(model.device.type, 64)
    config = model.config
    layers = int(config.num_hidden_layers)
    kv = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    per_slot = 2 * layers * kv * head_dim * capacity * model.dtype.itemsize
    budget = memory_budget(model)
    return max(1, min(slots, budget // max(per_slot, 1)))


def memory_budget(model: Host) -> int:
    """A quarter of the free memory of the device holding the model."""
    import torch

    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        return int(free // 4)
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages // 4)
    except (ValueError, OSError, AttributeError):
        return 4 << 30
