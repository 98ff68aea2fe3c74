"""Row-invariant linear products for the slot engine, with LoRA terms added per adapter after the base product.

A matrix-product library picks its kernel, blocking and summation order by the
shape of the call: the same row multiplied in a batch of 3 and in a batch of 64
can differ in its last bits (MKL's float32 ``F.linear`` uses three kernels for 1,
2-3 and 4+ rows on the CPUs measured), and sampling by inverse CDF turns such a
difference into another token. Here every product runs in calls of a few fixed
sizes (:data:`TILES`: 256, 128, 64, 32 and 16 rows, the last padded with zero
rows), each size only after a one-off probe per weight shape has found on this CPU
that a row's result in a call of that size is the same as in a 16-row call, whatever
the call's other rows and the row's place in it (:func:`tiles_for`). Large calls
matter where a step reads every weight from memory: a 128-row step in two 64-row
calls reads the weights twice.

Every row's base product runs through the same weights whether or not adapters
are attached (the prepacked copy of a LoRA-wrapped layer's ``base_layer``), and an
adapter's low-rank term is added after it, on the rows of that adapter only, as
two more products (its ``A`` of every projection stacked, its ``B`` block-diagonal):
a row with no adapter, or with an adapter whose ``B`` is zero, gets exactly the
base model's result. Rows are grouped by adapter (contiguous ``segments``), so a
term is a slice, not a gather.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from persona_space.engine._packing import _packed_linear, _reorder

TILES: tuple[int, ...] = (256, 128, 64, 32, 16)
"""The call sizes products may run at, largest first (the last call padded with zero rows).

A size is used only where a probe on this CPU finds a row's result in a call of that
size the same as in a 16-row call (and whatever the call's other rows); where only
16-row calls pass, every call is 16 rows; where none does, products are plain calls
and not invariant.
"""
TILE = TILES[-1]

Segment = tuple[str | None, int, int]  # (adapter or None for the base model, first row, end row)


@dataclass(frozen=True)
class Weight:
    """A product's weight: a oneDNN-prepacked copy (``packed``) or the plain ``[out, in]`` tensor.

    ``tiles`` are the call sizes this weight's products run at (:func:`tiles_for`);
    empty where none keeps a row's result independent of the call.
    """

    tensor: torch.Tensor
    bias: torch.Tensor | None
    packed: bool
    shape: tuple[int, int]  # (out, in)
    tiles: tuple[int, ...] = ()
    whole: bool = False  # pad a call up to the next size rather than split it (small weights: calls cost, rows not)

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None, *, pack: bool, whole: bool = False) -> Weight:
        weight = weight.detach()
        shape = (int(weight.shape[0]), int(weight.shape[1]))
        tiles = tiles_for(weight.dtype, shape, pack, bias is not None)
        bias = None if bias is None else bias.detach()
        return cls(_reorder(weight) if pack else weight, bias, pack, shape, tiles, whole)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """One product call (any number of rows)."""
        if self.packed:
            return _packed_linear(x, (self.tensor, self.bias))
        return F.linear(x, self.tensor, self.bias)

    def tiled(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T (+ b)`` in calls of :attr:`tiles` rows, largest first, the last padded with zero rows."""
        n = int(x.shape[0])
        if n == 0:
            return x.new_empty((0, self.shape[0]))
        if not self.tiles:
            return self.call(x)
        x = x.contiguous()
        parts, first = [], 0
        for size in self.tiles[:1] if self.whole else self.tiles:
            while n - first >= size:
                parts.append(self.call(x[first : first + size]))
                first += size
        if first < n:
            size = min(t for t in self.tiles if t >= n - first)
            pad = x.new_zeros((size, x.shape[1]))
            pad[: n - first] = x[first:]
            parts.append(self.call(pad)[: n - first])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass(frozen=True)
class LoraTerm:
    """One adapter's low-rank term on a product: ``B(A(x))``, every projection of the product at once.

    ``a`` stacks the adapter's ``A`` of each projection it adapts (``[sum of ranks, in]``)
    and ``b`` is block-diagonal (``[out, sum of ranks]``: each projection's ``B`` times its
    scaling in that projection's rows and rank's columns, zeros elsewhere), so the term of a
    fused q/k/v is two products whatever the adapter targets, laid out as the base product.
    """

    a: Weight
    b: Weight
    spans: tuple[tuple[int, int], ...]  # the output columns of each projection it adapts


@dataclass
class Product:
    """The projections of one input (one, or q/k/v or gate/up fused) and every adapter's term on them."""

    base: Weight
    sizes: tuple[int, ...]
    terms: dict[str, LoraTerm] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, segments: Sequence[Segment]) -> torch.Tensor:
        out = self.base.tiled(x)
        for adapter, first, end in segments:
            term = self.terms.get(adapter) if adapter is not None else None
            if term is None:
                continue
            out[first:end] += term.b.tiled(term.a.tiled(x[first:end]))  # the term is in the input's dtype
        return out

    def split(self, x: torch.Tensor, segments: Sequence[Segment]) -> tuple[torch.Tensor, ...]:
        out = self(x, segments)
        return (out,) if len(self.sizes) == 1 else tuple(out.split(self.sizes, dim=-1))


def lora_parts(module: Any) -> tuple[Any, dict[str, tuple[Any, Any, float]]] | None:
    """``(base linear, {adapter: (A, B, scaling)})`` of a plain or LoRA-wrapped linear; ``None`` if unsupported.

    Supported: ``nn.Linear``, and PEFT LoRA linears holding plain LoRA adapters (no
    DoRA or other variant, no bias on ``B``) that are not merged into the base weight.
    """
    if type(module) is torch.nn.Linear:
        return module, {}
    base = getattr(module, "base_layer", None)
    if type(base) is not torch.nn.Linear or getattr(module, "merged", False) or not hasattr(module, "lora_A"):
        return None
    variants = getattr(module, "lora_variant", {}) or {}
    biased = getattr(module, "lora_bias", {}) or {}
    adapters: dict[str, tuple[Any, Any, float]] = {}
    for name in module.lora_A:
        a, b = module.lora_A[name], module.lora_B[name]
        if name in variants or biased.get(name, False) or type(a) is not torch.nn.Linear or b.bias is not None:
            return None
        adapters[name] = (a, b, float(module.scaling[name]))
    return base, adapters


def build(modules: Sequence[Any], *, pack: bool) -> Product | None:
    """One product for ``modules`` (projections of one input, grouped by :func:`_fusions`), or ``None`` where a
    module is unsupported. Several modules have their base weights stacked into one product."""
    parts = [lora_parts(m) for m in modules]
    if any(p is None for p in parts):
        return None
    bases = [p[0] for p in parts if p is not None]
    with torch.no_grad():
        weight = torch.cat([b.weight for b in bases]) if len(bases) > 1 else bases[0].weight
        biases = [b.bias for b in bases]
        bias = None
        if any(x is not None for x in biases):
            bias = torch.cat([b.weight.new_zeros(b.out_features) if b.bias is None else b.bias for b in bases])
        product = Product(Weight.of(weight, bias, pack=pack), tuple(int(b.out_features) for b in bases))
        adapted: dict[str, list[tuple[int, Any, Any, float]]] = {}
        start = 0
        for part, size in zip([p for p in parts if p is not None], product.sizes, strict=True):
            for name, (a, b, scaling) in part[1].items():
                adapted.setdefault(name, []).append((start, a, b, scaling))
            start += size
        for name, members in adapted.items():
            product.terms[name] = _term(members, start, pack=pack, dtype=weight.dtype)
    return product


def _term(members: list[tuple[int, Any, Any, float]], out_features: int, *, pack: bool, dtype: torch.dtype) -> LoraTerm:
    """One adapter's :class:`LoraTerm` from ``(first output column, A, B, scaling)`` of each projection it adapts.

    Computed in the model's ``dtype`` (PEFT keeps bfloat16 adapters in float32; here the
    term is a product like the others, with one rounding more than PEFT's sum).
    """
    ranks = [int(a.weight.shape[0]) for _, a, _, _ in members]
    stacked = torch.cat([a.weight.to(dtype) for _, a, _, _ in members])
    diagonal = stacked.new_zeros((out_features, sum(ranks)))
    spans = []
    column = 0
    for (first, _, b, scaling), rank in zip(members, ranks, strict=True):
        rows = int(b.weight.shape[0])
        diagonal[first : first + rows, column : column + rank] = (b.weight.float() * scaling).to(dtype)
        spans.append((first, first + rows))
        column += rank
    return LoraTerm(
        Weight.of(stacked, None, pack=pack, whole=True), Weight.of(diagonal, None, pack=pack, whole=True), tuple(spans)
    )


@functools.cache
def tiles_for(dtype: torch.dtype, shape: tuple[int, int], packed: bool, bias: bool) -> tuple[int, ...]:
    """The call sizes of :data:`TILES` at which a row's product through a weight of this kind is the same on this CPU.

    Probed once per (dtype, shape, packing, bias) on random inputs (a kernel is chosen
    by the call's shape, not its values). A size passes where a call's rows are the
    same shuffled among other rows, the same alone in a padded call, and the same as
    the rows of 16-row calls over the same inputs. The passing sizes, largest first;
    ``()`` where 16-row calls do not pass (products then run as plain calls).
    """
    generator = torch.Generator().manual_seed(0)
    out_features, in_features = shape
    raw = (torch.randn(out_features, in_features, generator=generator) * in_features**-0.5).to(dtype)
    plain = Weight(raw, torch.randn(out_features, generator=generator).to(dtype) if bias else None, False, shape)
    weight = Weight(_reorder(raw), plain.bias, True, shape) if packed else plain
    with torch.no_grad():
        x = torch.randn(TILES[0], in_features, generator=generator).to(dtype)
        reference = torch.cat([weight.call(x[first : first + TILE]) for first in range(0, TILES[0], TILE)])

        def steady(size: int) -> bool:
            """Whether a ``size``-row call's rows are the same among other rows, alone, and as in 16-row calls."""
            own = weight.call(x[:size])
            order = torch.randperm(size, generator=generator)
            mixed = torch.randn(size, in_features, generator=generator).to(dtype)
            keep = order[: size // 2]
            mixed[keep] = x[: size // 2]
            alone = x.new_zeros((size, in_features))
            alone[size - 1] = x[0]
            return (
                torch.equal(own, reference[:size])
                and torch.equal(weight.call(mixed)[keep], own[: size // 2])
                and torch.equal(weight.call(alone)[size - 1], own[0])
            )

        if not steady(TILE):
            return ()
        return (*(size for size in TILES[:-1] if steady(size)), TILE)


@dataclass
class LayerProducts:
    """One decoder layer's products: q/k/v and gate/up as one fused product each (packed) or one per projection."""

    qkv: list[Product]
    o: Product
    gate_up: list[Product]
    down: Product


@dataclass
class Plan:
    """Every product of a decoder stack on the row-invariant path (:func:`assess` says whether they are here)."""

    layers: list[LayerProducts]
    head: Product


def plan(stack: Any, pack: bool) -> Plan | None:
    """The products of ``stack``'s layers and head, or ``None`` where a module is of a kind not supported here."""
    built = [[build(group, pack=pack) for group in _fusions(modules, pack)] for modules in _groups(stack)]
    if any(p is None for products in built for p in products):
        return None
    *per_layer, head = [[p for p in products if p is not None] for products in built]
    layers = [
        LayerProducts(qkv, o[0], gate_up, down[0]) for qkv, o, gate_up, down in zip(*[iter(per_layer)] * 4, strict=True)
    ]
    return Plan(layers, head[0])


def _fusions(modules: tuple[Any, ...], pack: bool) -> list[tuple[Any, ...]]:
    """The products ``modules`` make: one fused product when packed (unpacked, stacking would hold a second copy
    of the weights and gain nothing), else one per module."""
    return [modules] if pack and len(modules) > 1 else [(m,) for m in modules]


def _groups(stack: Any) -> list[tuple[Any, ...]]:
    """The modules of each product: q/k/v, o, gate/up, down of every layer, and the head."""
    out: list[tuple[Any, ...]] = []
    for layer in stack.layers:
        attn, mlp = layer.self_attn, layer.mlp
        out += [(attn.q_proj, attn.k_proj, attn.v_proj), (attn.o_proj,), (mlp.gate_proj, mlp.up_proj), (mlp.down_proj,)]
    return [*out, (stack.lm_head,)]


def assess(stack: Any, pack: bool) -> tuple[bool, str] | None:
    """Whether ``stack``'s products are row-invariant on this CPU, and why; ``None`` where a module is unsupported.

    Cheap: it reads the modules' shapes and probes each (dtype, shape, packing) once,
    on random weights, without copying any of the model's.
    """
    probes: set[tuple[torch.dtype, tuple[int, int], bool, bool]] = set()
    for modules in _groups(stack):
        for group in _fusions(modules, pack):
            found = [lora_parts(m) for m in group]
            if any(m is None for m in found):
                return None
            members = [m for m in found if m is not None]
            base = members[0][0]
            out = sum(int(m[0].out_features) for m in members)
            probes.add((base.weight.dtype, (out, int(base.in_features)), pack, base.bias is not None))
            for name in {n for m in members for n in m[1]}:
                a = [m[1][name][0].weight for m in members if name in m[1]]
                rank = sum(int(w.shape[0]) for w in a)  # terms run in the base weights' dtype
                probes.add((base.weight.dtype, (rank, int(base.in_features)), pack, False))
                probes.add((base.weight.dtype, (out, rank), pack, False))
    found_tiles = {probe: tiles_for(*probe) for probe in sorted(probes, key=str)}
    failing = [probe for probe, tiles in found_tiles.items() if not tiles]
    if failing:
        dtype, shape, packed, _ = failing[0]
        kind, name = "prepacked" if packed else "plain", str(dtype).removeprefix("torch.")
        return False, f"{kind} {name} products of shape {shape} depend on the other rows of a call on this CPU"
    sizes = sorted({t for tiles in found_tiles.values() for t in tiles}, reverse=True)
    return True, f"every product in calls of {'/'.join(map(str, sizes))} rows (checked on this CPU)"
