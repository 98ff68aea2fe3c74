"""Reading the residual stream: each decoder layer's output averaged over a span of a chat's tokens.

A :class:`ReadRequest` carries one chat's token ids under one model (an adapter's
name, a steering route's, or ``None`` for the base model) and the span of
positions to average (the answer's tokens, or the prompt's last one). Nothing is
generated. Two readers run them:

* :func:`read_forward` (the ``hf`` backend): the model's own forward pass over
  right-padded batches, with a forward hook on each decoder layer. It sees any hook
  a caller has put on the model.
* :func:`read_stack` (the ``cpu`` backend): the slot engine's prefill, with each
  layer's output read inside its layer loop. On its row-invariant path an item's
  activations depend on its own tokens and model only, not on its batch.

Both give float32 means of shape (layers, hidden), in request order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_space.engine._steering import decoder_layers, routes_of
from persona_space.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import torch

    from persona_space.engine._host import Host
    from persona_space.engine._requests import Backend
    from persona_space.engine._routing import AdapterRouter
    from persona_space.engine._stack import DecoderStack

OnRead = Callable[[int, list[np.ndarray]], None]
"""Called after each batch with the index of its first request and its means (to write them as they come)."""


@dataclass(frozen=True)
class ReadRequest:
    """One chat's token ids under one model (``adapter``), and the positions ``start:end`` to average."""

    adapter: str | None
    token_ids: tuple[int, ...]
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= len(self.token_ids):
            raise ConfigError(
                f"a read span must satisfy 0 <= start < end <= {len(self.token_ids)} (the chat's tokens), "
                f"got start={self.start}, end={self.end}"
            )


def require_reading(backend: Backend) -> None:
    """Refuse, before anything is written, a backend that cannot read activations."""
    if not backend.capabilities.activations or not callable(getattr(backend, "read", None)):
        raise BackendError(
            f"backend {backend.name!r} cannot read activations (it returns tokens and scores only); "
            "use backend='hf' (the model's own forward pass) or 'cpu' (the slot engine)"
        )


def read_activations(
    backend: Backend, requests: Sequence[ReadRequest], *, batch_size: int, on_batch: OnRead | None = None
) -> list[np.ndarray]:
    """Each request's mean activations per layer, float32 (layers, hidden), on ``backend``, in request order."""
    require_reading(backend)
    means: list[np.ndarray] = backend.read(requests, batch_size=batch_size, on_batch=on_batch)  # type: ignore[attr-defined]
    return means


@contextlib.contextmanager
def reading_layers(module: Any) -> Iterator[list[torch.Tensor | None]]:
    """Inside the block each forward pass leaves each decoder layer's output (the residual stream) in the list."""
    layers = decoder_layers(module)
    seen: list[torch.Tensor | None] = [None] * len(layers)

    def hook(index: int) -> Any:
        def read(_module: Any, _args: Any, output: Any) -> None:
            seen[index] = output[0] if isinstance(output, tuple) else output

        return read

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def read_forward(
    model: Host, requests: Sequence[ReadRequest], *, batch_size: int, on_batch: OnRead | None = None
) -> list[np.ndarray]:
    """Mean activations per layer through the model's own forward pass, ``batch_size`` chats a pass."""
    import torch

    from persona_space.engine._routing import route_rows

    pad = model.tokenizer.pad_token_id
    pad = int(pad) if pad is not None else 0
    routes = routes_of(model)
    out: list[np.ndarray] = []
    for first in range(0, len(requests), batch_size):
        batch = requests[first : first + batch_size]
        width = max(len(r.token_ids) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        span = torch.zeros((len(batch), width), dtype=torch.float32)
        for row, request in enumerate(batch):
            ids[row, : len(request.token_ids)] = torch.tensor(request.token_ids, dtype=torch.long)
            attention[row, : len(request.token_ids)] = 1
            span[row, request.start : request.end] = 1.0
        device = model.device
        routed = route_rows(model.module, [r.adapter for r in batch], routes)
        with torch.inference_mode(), routed, reading_layers(model.base_module) as seen:
            model.module(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False)
            weights = span.to(device)
            counts = weights.sum(dim=1, keepdim=True)
            means = torch.stack(
                [((h.float() * weights[..., None]).sum(dim=1) / counts) for h in seen if h is not None], dim=1
            )
        done = list(means.cpu().numpy())
        out.extend(done)
        if on_batch is not None:
            on_batch(first, done)
    return out


def read_stack(
    stack: DecoderStack,
    router: AdapterRouter,
    requests: Sequence[ReadRequest],
    *,
    batch_size: int,
    on_batch: OnRead | None = None,
) -> list[np.ndarray]:
    """Mean activations per layer through the slot engine's prefill, ``batch_size`` chats a pass.

    Each chat is prefilled into its own slot of a fresh cache; the reader inside the
    layer loop adds each layer's output over the chat's span, in float32.
    """
    import torch

    out: list[np.ndarray] = []
    with torch.inference_mode(), router.routing():
        for first in range(0, len(requests), batch_size):
            batch = requests[first : first + batch_size]
            done = list(_read_batch(stack, router, batch))
            out.extend(done)
            if on_batch is not None:
                on_batch(first, done)
    return out


def _read_batch(stack: DecoderStack, router: AdapterRouter, batch: Sequence[ReadRequest]) -> np.ndarray:
    import torch

    device = stack.device
    lengths = [len(r.token_ids) for r in batch]
    width = max(lengths)
    tokens = torch.zeros((len(batch), width), dtype=torch.long, device=device)
    for row, request in enumerate(batch):
        tokens[row, : lengths[row]] = torch.tensor(request.token_ids, dtype=torch.long, device=device)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    picked = torch.tensor(
        np.concatenate([np.arange(o + r.start, o + r.end) for o, r in zip(offsets, batch, strict=True)]),
        dtype=torch.long,
        device=device,
    )
    owner = torch.tensor(
        np.concatenate([np.full(r.end - r.start, row) for row, r in enumerate(batch)]), dtype=torch.long, device=device
    )
    sums = torch.zeros((len(batch), len(stack.layers), int(stack.embed.weight.shape[1])), dtype=torch.float32)
    sums = sums.to(device)

    def read(index: int, hidden: torch.Tensor) -> None:
        sums[:, index].index_add_(0, owner, hidden[picked].float())

    names = [r.adapter for r in batch]
    router.set_rows(names, repeats=lengths)  # the layers run per real token
    rows = torch.arange(len(batch), device=device)
    cache = stack.allocate(len(batch), width)
    stack.prefill(cache, tokens, torch.tensor(lengths, device=device), rows, rows, adapters=names, reader=read)
    counts = torch.tensor([r.end - r.start for r in batch], dtype=torch.float32, device=device)
    means: np.ndarray = (sums / counts[:, None, None]).cpu().numpy()
    return means
