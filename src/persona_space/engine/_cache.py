"""The slot engine's KV cache: one row ("slot") per sequence, each with its own length."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SlotCache:
    """Per-layer key/value buffers shaped ``[slots, kv_heads, capacity, head_dim]``.

    The eager decode step attends over the whole current capacity of the first ``B``
    slots, which is one contiguous block (a slice along the position axis would make
    the batched matmuls copy it each step); for it the capacity grows in blocks of
    :attr:`block` positions as the longest row grows, up to :attr:`limit`. The fused
    step reads each row's own positions only, and its buffers hold :attr:`limit`
    from the start (see :meth:`DecoderStack.allocate`).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    limit: int
    block: int = 32

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2])

    def ensure(self, span: int) -> None:
        """Grow every buffer so that positions ``0..span-1`` fit."""
        if span <= self.capacity:
            return
        if span > self.limit:
            raise ValueError(f"span {span} exceeds the cache limit {self.limit}")
        new = min(self.limit, -(-span // self.block) * self.block)
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                grown = old.new_empty((old.shape[0], old.shape[1], new, old.shape[3]))
                grown[:, :, : old.shape[2]] = old
                grown[:, :, old.shape[2] :] = 0  # masked positions still enter the products: keep them finite
                buffers[i] = grown

    def move(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Copy slots ``src`` onto slots ``dst``."""
        for buf in (*self.keys, *self.values):
            buf[dst] = buf[src]
