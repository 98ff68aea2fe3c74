"""Per-sample random streams: what makes samples independent of batching, and conditions paired.

Every sample draws its random numbers from its own counter-based stream (a
64-bit seed per sample, one uniform per generated token), and picks its token by
inverting the cumulative distribution over the vocabulary in its fixed order. So
a sample's text depends on its seed and the model only, not on which other
samples share its batch, in what order a queue runs or which backend runs it;
a resumed run repeats exactly the rows it lost; and two models that differ a
little pick the same token wherever the uniform falls in the same place of both
distributions (paired sampling).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

MIN_TEMPERATURE = 1e-5  # below this, dividing logits overflows float32: treated as greedy

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def row_seed(seed: int, probe_id: str, temperature: float, index: int, condition: str | None = None) -> int:
    """The 64-bit random stream of one sample, independent of batching and run order.

    Paired sampling (the default) keys it by (seed, probe, temperature, index) only:
    every condition draws the same uniforms, and since tokens are picked by inverting
    the cumulative distribution over a fixed vocabulary order, a condition that
    changes nothing gives the same text, and a small change moves few tokens.
    ``condition`` gives independent streams instead (``pairing="independent"``).
    """
    key = f"{seed}\x1f{probe_id}\x1f{float(temperature)!r}\x1f{index}"
    if condition is not None:
        key = f"{seed}\x1f{condition}\x1f{probe_id}\x1f{float(temperature)!r}\x1f{index}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


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
    import torch

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
    if np.all(temperatures[picked] == 1.0):
        probs = torch.softmax(sub, dim=-1)  # no scaled copy of a [rows, vocab] table at temperature 1
    else:
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
    import torch
    import torch.nn.functional as F

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
    import torch

    k = min(first, probs.shape[1])
    values, order = torch.topk(probs, k, dim=-1, sorted=True)
    if k < probs.shape[1] and bool((values.sum(dim=-1) < top_ps).any()):
        values, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = values.double().cumsum(dim=-1) - values.double()
    kept = torch.where(mass_before < top_ps.double().unsqueeze(1), values, torch.zeros_like(values))
    return kept, order
