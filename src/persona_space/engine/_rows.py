"""The slot engine's row-invariant forward pass: a row's logits depend on its own tokens and adapter only.

Every token of a prefill and every row of a decode step is one row of the same
computation: the products of :mod:`persona_space.engine._products` (fixed-size
tiles, the base weights for every row, each adapter's term added after on its own
rows), the fused kernels' norms and activation (one row at a time), and their
attention kernel, which writes each row's key and value to its slot and then
attends each row over its own slot's positions in one fixed order. Nothing a row
computes depends on which rows share its batch, how many there are, their
adapters, their lengths, their order, or which slots they occupy: texts sampled
alone and with other conditions, at any batch size, or resumed into another
layout, are the same. Rows are sorted by adapter for the products (contiguous
segments) and put back in their order after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from persona_space.engine._cache import SlotCache
from persona_space.engine._native import NativeKernels
from persona_space.engine._products import Plan, Product, Segment
from persona_space.engine._steering import Routes, RowSteering, lora_of

Reader = Callable[[int, torch.Tensor], None]
"""Called after each decoder layer with its index and its output (a prefill's: one row per real token, the
prompts' tokens row after row in their order; see :mod:`persona_space.engine._reading`)."""


class DecoderStack(Protocol):
    """What the row-invariant pass reads of :class:`~persona_space.engine._stack.DecoderStack`."""

    plan: Plan | None
    native: NativeKernels | None
    embed: Any
    rotary: Any
    norm: Any
    layers: list[Any]
    head_dim: int
    n_heads: int
    scaling: float
    has_qk_norm: bool
    device: torch.device
    routes: Routes


def sort_rows(adapters: Sequence[str | None], sizes: Sequence[int] | None = None) -> tuple[list[int], list[Segment]]:
    """The rows in adapter order (stable), and each adapter's segment of the sorted rows (``sizes`` rows each)."""
    order = sorted(range(len(adapters)), key=lambda i: (adapters[i] is not None, adapters[i] or ""))
    segments: list[Segment] = []
    first = 0
    for i in order:
        end = first + (1 if sizes is None else int(sizes[i]))
        if segments and segments[-1][0] == adapters[i]:
            segments[-1] = (adapters[i], segments[-1][1], end)
        else:
            segments.append((adapters[i], first, end))
        first = end
    return order, segments


def _outputs(products: list[Product], x: torch.Tensor, segments: Sequence[Segment]) -> tuple[torch.Tensor, ...]:
    if len(products) == 1:
        return products[0].split(x, segments)
    return tuple(p(x, segments) for p in products)


def forward(
    stack: DecoderStack,
    cache: SlotCache,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    slots: torch.Tensor,
    segments: Sequence[Segment],
    reader: Reader | None = None,
) -> torch.Tensor:
    """Hidden states ``[n, hidden]`` of ``n`` rows: token ``tokens[i]`` at ``positions[i]`` of cache slot ``slots[i]``.

    Each row's key and value are written to its slot first, so a prefill passes a
    prompt's tokens as consecutive rows of one slot. ``segments`` name each run of rows'
    model: an adapter, or a steering route (its adapter's term, then its steering after its layer).
    ``reader(layer, hidden)`` sees each layer's output, in the rows' order.
    """
    plan, native = stack.plan, stack.native
    assert plan is not None and native is not None
    steering = RowSteering.from_segments(stack.routes, segments)
    segments = _lora_segments(stack.routes, segments)
    n = int(tokens.shape[0])
    hidden = stack.embed(tokens)
    cos, sin = stack.rotary(stack.embed.weight[:1], positions.view(n, 1))
    cos, sin = cos.reshape(n, stack.head_dim).contiguous(), sin.reshape(n, stack.head_dim).contiguous()
    attended = hidden.new_empty((n, stack.n_heads * stack.head_dim))
    delta: torch.Tensor | None = None

    def norm(module: object) -> torch.Tensor:
        nonlocal delta
        out = torch.empty_like(hidden)
        native.add_rms_norm(hidden, delta, module.weight, out, module.variance_epsilon)  # type: ignore[attr-defined]
        delta = None
        return out

    for index, (layer, products) in enumerate(zip(stack.layers, plan.layers, strict=True)):
        attn = layer.self_attn
        q, k, v = _outputs(products.qkv, norm(layer.input_layernorm), segments)
        native.decode_attention(
            q, k, v, cos, sin, cache.keys[index], cache.values[index], positions, attended, scale=stack.scaling,
            q_norm=attn.q_norm.weight if stack.has_qk_norm else None,
            k_norm=attn.k_norm.weight if stack.has_qk_norm else None,
            norm_eps=float(attn.q_norm.variance_epsilon) if stack.has_qk_norm else 0.0, slots=slots,
        )  # fmt: skip
        delta = products.o(attended, segments)
        gate, up = _outputs(products.gate_up, norm(layer.post_attention_layernorm), segments)
        activated = gate.new_empty(gate.shape)
        native.silu_mul(gate, up, activated)
        delta = products.down(activated, segments)
        if steering is not None and index in steering.layers:
            hidden = steering.apply(index, hidden + delta)
            delta = None
        if reader is not None:
            reader(index, hidden if delta is None else hidden + delta)
    final: torch.Tensor = hidden if delta is None else hidden + delta
    return final


def _lora_segments(routes: Routes, segments: Sequence[Segment]) -> list[Segment]:
    """``segments`` with each steering route's name replaced by its adapter's (``None``: base)."""
    if not routes:
        return list(segments)
    return [(lora_of(routes, name), first, end) for name, first, end in segments]


def head(stack: DecoderStack, hidden: torch.Tensor, adapters: Sequence[str | None]) -> torch.Tensor:
    """Final norm and vocabulary head of rows whose adapters are ``adapters``, in float32, in the rows' order."""
    order, segments = sort_rows(adapters)
    index = torch.tensor(order, device=hidden.device)
    return _sorted_head(stack, hidden[index], segments, index)


def decode(
    stack: DecoderStack,
    cache: SlotCache,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    adapters: Sequence[str | None],
) -> torch.Tensor:
    """One step for slots ``0..B-1`` (row ``b`` in slot ``b``, adapter ``adapters[b]``); logits ``[B, vocab]``."""
    order, segments = sort_rows(adapters)
    index = torch.tensor(order, device=stack.device)
    hidden = forward(stack, cache, tokens[index], positions[index].to(torch.int64).contiguous(), index, segments)
    return _sorted_head(stack, hidden, segments, index)


def prefill(
    stack: DecoderStack,
    cache: SlotCache,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    dst_slots: torch.Tensor,
    src_rows: torch.Tensor,
    adapters: Sequence[str | None],
    *,
    prefix: SlotCache | None,
    prefix_rows: torch.Tensor | None,
    start: int,
    reader: Reader | None = None,
) -> torch.Tensor:
    """:meth:`DecoderStack.prefill` on the row-invariant path: each prompt's tokens are rows of its first slot.

    A prompt is computed once, in the first slot that takes it, and that slot is
    copied to the other slots of its samples; a shared prefix is copied in first.
    """
    sizes = [int(x) for x in lengths.tolist()]
    jobs = list(zip(dst_slots.tolist(), src_rows.tolist(), strict=True))  # (slot, prompt) of every job
    home: dict[int, int] = {}
    for slot, row in jobs:
        home.setdefault(int(row), int(slot))
    homes = [home[r] for r in range(len(sizes))]
    device = stack.device
    if start:
        if prefix is None or prefix_rows is None:
            raise ValueError("a prefill with start > 0 needs the prefix cache and rows")
        at = torch.tensor(homes, device=device)
        for mine, shared in ((cache.keys, prefix.keys), (cache.values, prefix.values)):
            for layer, buffer in enumerate(mine):
                buffer[at, :, :start] = shared[layer][prefix_rows, :, :start]
    order, segments = sort_rows(adapters, sizes)
    flat = torch.cat([tokens[r, : sizes[r]] for r in order])
    positions = torch.cat([torch.arange(start, start + sizes[r], device=device) for r in order])
    slots = torch.cat([torch.full((sizes[r],), homes[r], dtype=torch.int64, device=device) for r in order])
    hidden = forward(stack, cache, flat, positions, slots, segments, None if reader is None else
                     _in_prompt_order(reader, order, sizes, device))  # fmt: skip
    ends = torch.tensor([sizes[r] for r in order], device=device).cumsum(0) - 1
    last = _unsort(hidden[ends], torch.tensor(order, device=device))
    copies = [(int(slot), home[int(row)]) for slot, row in jobs if int(slot) != home[int(row)]]
    if copies:
        dst, src = zip(*copies, strict=True)
        cache.move(torch.tensor(dst, device=device), torch.tensor(src, device=device))
    return last


def _in_prompt_order(reader: Reader, order: Sequence[int], sizes: Sequence[int], device: torch.device) -> Reader:
    """``reader`` taking the rows of prompts sorted by ``order`` in the prompts' own order."""
    starts = dict(zip(order, np.cumsum([0, *(sizes[r] for r in order)]).tolist(), strict=False))
    back = torch.cat([torch.arange(starts[r], starts[r] + sizes[r], device=device) for r in range(len(sizes))])

    def read(index: int, rows: torch.Tensor) -> None:
        reader(index, rows[back])

    return read


def _sorted_head(
    stack: DecoderStack, hidden: torch.Tensor, segments: Sequence[Segment], index: torch.Tensor
) -> torch.Tensor:
    """Float32 logits of rows sorted by adapter (the final RMS norm one row at a time), put back in order."""
    assert stack.native is not None and stack.plan is not None
    normed = torch.empty_like(hidden)
    stack.native.add_rms_norm(hidden.contiguous(), None, stack.norm.weight, normed, stack.norm.variance_epsilon)
    return _unsort(stack.plan.head(normed, _lora_segments(stack.routes, segments)).float(), index)


def _unsort(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows`` computed in the order ``index`` put back in the original order."""
    out = torch.empty_like(rows)
    out[index] = rows
    return out
