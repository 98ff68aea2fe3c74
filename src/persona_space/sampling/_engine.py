"""The generation loop: continuous batching over KV-cache slots with per-sample randomness.

Every sample draws its random numbers from its own counter-based stream (a
64-bit seed per sample, one uniform per generated token), and picks its token
by inverting the cumulative distribution. So a sample's text depends on its
seed and the model, not on which other samples share its batch or in what
order the queue runs, and a resumed run repeats exactly the rows it lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from persona_space.adapters import BASE_ROW
from persona_space.sampling._heap import heap_retained
from persona_space.sampling._stack import DecoderStack, SlotCache

FinishReason = Literal["stop", "length"]
MIN_TEMPERATURE = 1e-5  # below this, dividing logits overflows float32: treated as greedy

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class Job:
    """One sample to generate."""

    key: int
    prompt_ids: tuple[int, ...]
    adapter: str | None
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class Completion:
    key: int
    token_ids: tuple[int, ...]
    finish_reason: FinishReason


def uniforms(seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1) from (seed, step) pairs: SplitMix64 of a Weyl sequence."""
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64) + (steps.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    out: np.ndarray = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return out


def choose_tokens(
    logits: torch.Tensor, temperatures: np.ndarray, top_ps: np.ndarray, seeds: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Pick one token per row: greedy where temperature is 0, else nucleus sampling.

    Sampling inverts the cumulative distribution at the row's own uniform number,
    so the pick is a deterministic function of (logits, temperature, top_p, seed, step).
    """
    rows = logits.shape[0]
    out = np.empty(rows, dtype=np.int64)
    greedy = temperatures < MIN_TEMPERATURE
    if greedy.all():
        return logits.argmax(dim=-1).cpu().numpy()  # type: ignore[no-any-return]
    if greedy.any():
        idx = torch.from_numpy(np.flatnonzero(greedy)).to(logits.device)
        out[greedy] = logits[idx].argmax(dim=-1).cpu().numpy()
    picked = np.flatnonzero(~greedy)
    sub = logits if len(picked) == rows else logits[torch.from_numpy(picked).to(logits.device)]
    temps = torch.from_numpy(temperatures[picked]).to(logits.device, torch.float32).unsqueeze(1)
    probs = torch.softmax(sub / temps, dim=-1)
    u = torch.from_numpy(uniforms(seeds[picked], steps[picked])).to(logits.device)
    nucleus = top_ps[picked] < 1.0
    choice = np.empty(len(picked), dtype=np.int64)
    if (~nucleus).any():
        plain = np.flatnonzero(~nucleus)
        part = probs if len(plain) == len(picked) else probs[torch.from_numpy(plain).to(logits.device)]
        choice[plain] = invert_cdf(part, u[torch.from_numpy(plain).to(logits.device)]).cpu().numpy()
    if nucleus.any():
        nuc = np.flatnonzero(nucleus)
        part = probs[torch.from_numpy(nuc).to(logits.device)]
        limits = torch.from_numpy(top_ps[picked][nuc]).to(logits.device, torch.float32)
        kept, order = nucleus_filter(part, limits)
        pos = invert_cdf(kept, u[torch.from_numpy(nuc).to(logits.device)])
        choice[nuc] = order.gather(1, pos.unsqueeze(1)).squeeze(1).cpu().numpy()
    out[picked] = choice
    return out


def invert_cdf(probs: torch.Tensor, u: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Index ``i`` per row with ``cdf[i-1] <= u * total < cdf[i]`` (zero-probability entries never chosen).

    Two levels keep it cheap on a 50k vocabulary: float32 sums over blocks of
    ``block`` entries, then a float64 running sum inside the chosen block only.
    """
    rows, vocab = probs.shape
    pad = (-vocab) % block
    padded = F.pad(probs, (0, pad)) if pad else probs
    blocks = padded.view(rows, -1, block)
    block_cdf = blocks.sum(dim=-1).double().cumsum(dim=-1)
    target = u.double() * block_cdf[:, -1]
    which = torch.searchsorted(block_cdf, target.unsqueeze(1), right=True).squeeze(1)
    which = which.clamp_max(block_cdf.shape[1] - 1)
    before = torch.where(which > 0, block_cdf.gather(1, (which - 1).clamp_min(0).unsqueeze(1)).squeeze(1), 0.0)
    inner = blocks[torch.arange(rows, device=probs.device), which].double().cumsum(dim=-1)
    offset = torch.searchsorted(inner, (target - before).unsqueeze(1), right=True).squeeze(1)
    # A target at the very top of a block (rounding) falls back to its last non-zero entry.
    last_nonzero = (inner < inner[:, -1:]).sum(dim=-1)
    offset = torch.minimum(offset, last_nonzero)
    return (which * block + offset).clamp_max(vocab - 1)


def nucleus_filter(probs: torch.Tensor, top_ps: torch.Tensor, first: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The nucleus of each row: probabilities sorted descending with the tail past ``top_p`` zeroed.

    Returns ``(kept, order)``: ``kept[r, j]`` is the probability of token ``order[r, j]``.
    Looks at the ``first`` most likely tokens, and sorts the whole row only when
    its nucleus is larger than that.
    """
    k = min(first, probs.shape[1])
    values, order = torch.topk(probs, k, dim=-1, sorted=True)
    if k < probs.shape[1] and bool((values.sum(dim=-1) < top_ps).any()):
        values, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = values.double().cumsum(dim=-1) - values.double()
    kept = torch.where(mass_before < top_ps.double().unsqueeze(1), values, torch.zeros_like(values))
    return kept, order


class AdapterRouter:
    """Tells every LoRA layer which adapter each row of the current batch uses.

    PEFT LoRA layers accept ``adapter_names`` (one name per row, ``"__base__"`` for
    none) and then apply each adapter to its own rows: one batch can hold the base
    model and several adapters. The names are injected by forward pre-hooks that
    exist only inside :meth:`routing`.
    """

    def __init__(self, module: Any) -> None:
        self.names: list[str] | None = None
        self._layers: list[Any] = []
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            return
        self._layers = [m for m in module.modules() if isinstance(m, LoraLayer)]

    @property
    def active(self) -> bool:
        return bool(self._layers)

    def set_rows(self, adapters: Sequence[str | None]) -> None:
        self.names = [BASE_ROW if a is None else a for a in adapters]

    @contextlib.contextmanager
    def routing(self) -> Iterator[AdapterRouter]:
        handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in self._layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.names = None

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "adapter_names": self.names}


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
    jobs: Sequence[Job],
    *,
    slots: int,
    stop_ids: frozenset[int],
    on_complete: Callable[[Completion], None],
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
                for start, group in _prefill_groups(admitted, prefill_tokens):
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
                previous, active = active, active + len(admitted)
                active = _retire(rows, previous, active, cache, stop_ids, limits, on_complete)
            else:
                router.set_rows([jobs[k].adapter for k in rows.job[:active]])
                logits = stack.decode(
                    cache,
                    torch.from_numpy(rows.last[:active]).to(device),
                    torch.from_numpy(rows.length[:active]).to(device),
                )
                rows.length[:active] += 1
                keys = rows.job[:active]
                steps = np.array([len(rows.generated[s]) for s in range(active)], dtype=np.int64)
                rows.last[:active] = choose_tokens(logits, temps[keys], top_ps[keys], seeds[keys], steps)
                active = _retire(rows, 0, active, cache, stop_ids, limits, on_complete)


def _prefill_groups(admitted: Sequence[Job], budget: int) -> Iterator[tuple[int, list[Job]]]:
    """Split admitted jobs into consecutive prefill batches of at most ``budget`` padded tokens."""
    start = 0
    while start < len(admitted):
        end = start
        width = 0
        unique: set[tuple[tuple[int, ...], str | None]] = set()
        while end < len(admitted):
            job = admitted[end]
            key = (job.prompt_ids, job.adapter)
            new_unique = len(unique) + (key not in unique)
            new_width = max(width, len(job.prompt_ids))
            if end > start and new_unique * new_width > budget:
                break
            unique.add(key)
            width = new_width
            end += 1
        yield start, list(admitted[start:end])
        start = end


def _shared_prefix(jobs: Sequence[Job], prefix_len: int) -> tuple[int, ...]:
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
    router.set_rows(names)
    stack.prefill(cache, tokens, lengths, rows, rows)
    return cache, {name: i for i, name in enumerate(names)}


def _prefill(
    stack: DecoderStack,
    router: AdapterRouter,
    cache: SlotCache,
    group: Sequence[Job],
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
    router.set_rows([adapter for _, adapter in unique])
    dst = torch.arange(first_slot, first_slot + len(group), device=device)
    prefix_rows = None if prefix is None else torch.tensor([prefix[1][a] for _, a in unique], device=device)
    logits = stack.prefill(
        cache,
        tokens.to(device),
        lengths.to(device),
        dst,
        torch.from_numpy(row_of).to(device),
        prefix=None if prefix is None else prefix[0],
        prefix_rows=prefix_rows,
        start=start,
    )
    return logits, row_of


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
