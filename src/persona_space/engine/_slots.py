"""The ``cpu`` backend's generation loop: continuous batching over KV-cache slots.

Each request keeps its own random stream (:mod:`persona_space.engine._streams`),
so a sample's text depends on its seed and the model, not on which other
samples share its batch or in what order the queue runs, and a resumed run
repeats exactly the rows it lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from persona_space.engine._cache import SlotCache
from persona_space.engine._heap import heap_retained
from persona_space.engine._requests import Completion, FinishReason, GenerateRequest
from persona_space.engine._routing import AdapterRouter
from persona_space.engine._stack import DecoderStack
from persona_space.engine._streams import choose_tokens


@dataclass
class _Rows:
    """Per-slot state of the rows being generated (slot i holds row i; rows are kept compact)."""

    job: np.ndarray
    length: np.ndarray  # tokens in the cache for this row
    last: np.ndarray  # token sampled last, not yet in the cache
    generated: list[list[int]]

    @classmethod
    def empty(cls, slots: int) -> _Rows:
        return cls(
            job=np.full(slots, -1, dtype=np.int64),
            length=np.zeros(slots, dtype=np.int64),
            last=np.zeros(slots, dtype=np.int64),
            generated=[[] for _ in range(slots)],
        )


def generate(
    stack: DecoderStack,
    router: AdapterRouter,
    jobs: Sequence[GenerateRequest],
    *,
    slots: int,
    stop_ids: frozenset[int],
    on_complete: Callable[[Completion], None],
    on_tokens: Callable[[int], None] | None = None,
    prefix_len: int = 0,
    prefill_tokens: int = 4096,
) -> None:
    """Generate every job, calling ``on_complete`` as each one finishes.

    Jobs are queued by prompt length and prompt, so a shared prompt is prefilled
    once and copied into the slots of all its samples. Finished rows leave the
    batch at once; freed slots are refilled from the queue when at least an
    eighth of them are free (or the queue fits).

    ``prefix_len`` tokens at the start of every prompt (the system turn, say) are
    computed once per adapter and copied into each slot instead of recomputed.
    """
    if not jobs:
        return
    if any(job.key != i for i, job in enumerate(jobs)):
        raise ValueError("job keys must be their positions 0..n-1 in the list")
    prefix = _shared_prefix(jobs, prefix_len)
    capacity = max(len(j.prompt_ids) for j in jobs) + max(j.max_new_tokens for j in jobs)
    slots = max(1, min(slots, len(jobs)))
    cache = stack.allocate(slots, capacity)
    order = sorted(
        range(len(jobs)), key=lambda i: (len(jobs[i].prompt_ids), jobs[i].prompt_ids, jobs[i].adapter or "", i)
    )
    queue = [jobs[i] for i in order]
    head = 0
    rows = _Rows.empty(slots)
    active = 0
    temps = np.array([j.temperature for j in jobs], dtype=np.float64)
    top_ps = np.array([j.top_p for j in jobs], dtype=np.float64)
    seeds = np.array([j.seed for j in jobs], dtype=np.uint64)
    limits = np.array([j.max_new_tokens for j in jobs], dtype=np.int64)
    refill_at = max(1, slots // 8)
    device = stack.device

    with torch.inference_mode(), router.routing(), heap_retained():
        prefix_cache = _prefill_prefix(stack, router, prefix, sorted({j.adapter or "" for j in jobs}))
        while head < len(queue) or active > 0:
            free = slots - active
            if head < len(queue) and (active == 0 or free >= min(refill_at, len(queue) - head)):
                admitted = queue[head : head + free]
                head += len(admitted)
                for start, group in _prefill_groups(admitted, prefill_tokens, len(prefix)):
                    first_slot = active + start
                    logits, row_of = _prefill(stack, router, cache, group, first_slot, prefix_cache)
                    keys = np.array([j.key for j in group], dtype=np.int64)
                    picks = choose_tokens(
                        logits[torch.from_numpy(row_of).to(device)],
                        temps[keys],
                        top_ps[keys],
                        seeds[keys],
                        np.zeros(len(group), dtype=np.int64),
                    )
                    for offset, job in enumerate(group):
                        slot = first_slot + offset
                        rows.job[slot] = job.key
                        rows.length[slot] = len(job.prompt_ids)
                        rows.last[slot] = picks[offset]
                        rows.generated[slot] = []
                if on_tokens is not None:
                    on_tokens(len(admitted))
                previous, active = active, active + len(admitted)
                active = _retire(rows, previous, active, cache, stop_ids, limits, on_complete)
            else:
                adapters = [jobs[k].adapter for k in rows.job[:active]]
                router.set_rows(adapters)
                logits = stack.decode(
                    cache,
                    torch.from_numpy(rows.last[:active]).to(device),
                    torch.from_numpy(rows.length[:active]).to(device),
                    adapters,
                )
                rows.length[:active] += 1
                keys = rows.job[:active]
                steps = np.array([len(rows.generated[s]) for s in range(active)], dtype=np.int64)
                rows.last[:active] = choose_tokens(logits, temps[keys], top_ps[keys], seeds[keys], steps)
                if on_tokens is not None:
                    on_tokens(active)
                active = _retire(rows, 0, active, cache, stop_ids, limits, on_complete)


def _prefill_groups(
    admitted: Sequence[GenerateRequest], budget: int, prefix_len: int = 0, *, waste: float = 0.15, rows: int = 256
) -> Iterator[tuple[int, list[GenerateRequest]]]:
    """Split admitted jobs into consecutive prefill batches.

    A batch holds at most ``budget`` padded tokens, and is cut where the next prompt
    would make its padding more than ``waste`` of its real tokens once it holds
    ``rows`` real tokens (enough rows to keep the products efficient). The queue is
    ordered by prompt length, so batches are of similar lengths and the padding the
    prefill's attention computes for nothing stays small (its products skip padding).
    Lengths count after the ``prefix_len`` tokens every prompt shares.
    """
    start = 0
    while start < len(admitted):
        end = start
        width = 0
        real = 0
        unique: set[tuple[tuple[int, ...], str | None]] = set()
        while end < len(admitted):
            job = admitted[end]
            key = (job.prompt_ids, job.adapter)
            new = key not in unique
            new_unique = len(unique) + new
            length = len(job.prompt_ids) - prefix_len
            new_width = max(width, length)
            new_real = real + length * new
            if end > start and new_unique * new_width > budget:
                break
            if end > start and real >= rows and new_unique * new_width > (1 + waste) * new_real:
                break
            unique.add(key)
            width, real = new_width, new_real
            end += 1
        yield start, list(admitted[start:end])
        start = end


def _shared_prefix(jobs: Sequence[GenerateRequest], prefix_len: int) -> tuple[int, ...]:
    if prefix_len <= 0:
        return ()
    head = jobs[0].prompt_ids[:prefix_len]
    for job in jobs:
        if len(job.prompt_ids) <= prefix_len or job.prompt_ids[:prefix_len] != head:
            raise ValueError(f"job {job.key} does not extend the shared prefix of {prefix_len} tokens")
    return head


def _prefill_prefix(
    stack: DecoderStack, router: AdapterRouter, prefix: tuple[int, ...], adapters: list[str]
) -> tuple[SlotCache, dict[str | None, int]] | None:
    """Keys/values of the shared prefix, one slot per adapter."""
    if not prefix:
        return None
    device = stack.device
    names: list[str | None] = [a or None for a in adapters]
    cache = stack.allocate(len(names), len(prefix))
    tokens = torch.tensor([prefix] * len(names), dtype=torch.long, device=device)
    lengths = torch.full((len(names),), len(prefix), dtype=torch.long, device=device)
    rows = torch.arange(len(names), device=device)
    router.set_rows(names, repeats=[len(prefix)] * len(names))  # the prefill's layers run per real token
    stack.prefill(cache, tokens, lengths, rows, rows, adapters=names)
    return cache, {name: i for i, name in enumerate(names)}


def _prefill(
    stack: DecoderStack,
    router: AdapterRouter,
    cache: SlotCache,
    group: Sequence[GenerateRequest],
    first_slot: int,
    prefix: tuple[SlotCache, dict[str | None, int]] | None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Prefill the unique (prompt, adapter) pairs of ``group``; return logits and each job's row."""
    start = 0 if prefix is None else prefix[0].limit
    index: dict[tuple[tuple[int, ...], str | None], int] = {}
    row_of = np.empty(len(group), dtype=np.int64)
    for i, job in enumerate(group):
        row_of[i] = index.setdefault((job.prompt_ids, job.adapter), len(index))
    unique = list(index)
    width = max(len(p) for p, _ in unique) - start
    tokens = torch.zeros((len(unique), width), dtype=torch.long)
    for r, (prompt, _) in enumerate(unique):
        tokens[r, : len(prompt) - start] = torch.tensor(prompt[start:], dtype=torch.long)
    lengths = torch.tensor([len(p) - start for p, _ in unique], dtype=torch.long)
    device = stack.device
    router.set_rows([adapter for _, adapter in unique], repeats=lengths.tolist())  # the layers run per real token
    dst = torch.arange(first_slot, first_slot + len(group), device=device)
    prefix_rows = None if prefix is None else torch.tensor([prefix[1][a] for _, a in unique], device=device)
    last = stack.prefill(
        cache,
        tokens.to(device),
        lengths.to(device),
        dst,
        torch.from_numpy(row_of).to(device),
        prefix=None if prefix is None else prefix[0],
        prefix_rows=prefix_rows,
        start=start,
        adapters=[adapter for _, adapter in unique],
    )
    router.set_rows([adapter for _, adapter in unique])  # the head runs once per prompt
    return stack.logits(last, [adapter for _, adapter in unique]), row_of


def _retire(
    rows: _Rows,
    first: int,
    active: int,
    cache: SlotCache,
    stop_ids: frozenset[int],
    limits: np.ndarray,
    on_complete: Callable[[Completion], None],
) -> int:
    """Record the new token of slots ``first..active-1``; hand finished rows on and compact the slots."""
    finished: list[int] = []
    for slot in range(first, active):
        token = int(rows.last[slot])
        key = int(rows.job[slot])
        reason: FinishReason | None = None
        if token in stop_ids:
            reason = "stop"
        else:
            rows.generated[slot].append(token)
            if len(rows.generated[slot]) >= limits[key]:
                reason = "length"
        if reason is not None:
            on_complete(Completion(key=key, token_ids=tuple(rows.generated[slot]), finish_reason=reason))
            finished.append(slot)
    if not finished:
        return active
    keep = active - len(finished)
    done = set(finished)
    holes = [s for s in finished if s < keep]
    movers = [s for s in range(keep, active) if s not in done]
    if holes:
        dst = torch.tensor(holes, dtype=torch.long, device=cache.keys[0].device)
        src = torch.tensor(movers, dtype=torch.long, device=cache.keys[0].device)
        cache.move(dst, src)
        for d, s in zip(holes, movers, strict=False):
            rows.job[d], rows.length[d], rows.last[d] = rows.job[s], rows.length[s], rows.last[s]
            rows.generated[d] = rows.generated[s]
    return keep
