"""Row-invariant linear products for the slot engine, with LoRA terms added per adapter after the base product.

A matrix-product library picks its kernel, blocking and summation order by the
shape of the call: the same row multiplied in a batch of 3 and in a batch of 64
can differ in its last bits (MKL's float32 ``F.linear`` uses three kernels for 1,
2-3 and 4+ rows on the CPUs measured), and sampling by inverse CDF turns such a
difference into another token. Here every product is called on tiles of exactly
:data:`TILE` rows (the last one padded with zero rows), so a row's result comes
from the same call shape whatever else is in its batch; a one-off probe per weight
shape checks on this CPU that a row's result does not depend on the other rows of
its tile or its place in it (:func:`tile_invariant`).

Every row's base product runs through the same weights whether or not adapters
are attached (the prepacked copy of a LoRA-wrapped layer's ``base_layer``), and an
adapter's low-rank term is added after it, on the rows of that adapter only, as
two more tiled products: a row with no adapter, or with an adapter whose ``B`` is
zero, gets exactly the base model's result. Rows are grouped by adapter
(contiguous ``segments``), so a term is a slice, not a gather.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from persona_space.engine._packing import _packed_linear, _reorder

TILE = 16
"""Rows per product call: every product runs on tiles of exactly this many rows."""

Segment = tuple[str | None, int, int]  # (adapter or None for the base model, first row, end row)


@dataclass(frozen=True)
class Weight:
    """A product's weight: a oneDNN-prepacked copy (``packed``) or the plain ``[out, in]`` tensor."""

    tensor: torch.Tensor
    bias: torch.Tensor | None
    packed: bool
    shape: tuple[int, int]  # (out, in)

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None, *, pack: bool) -> Weight:
        weight = weight.detach()
        shape = (int(weight.shape[0]), int(weight.shape[1]))
        if pack:
            return cls(_reorder(weight), None if bias is None else bias.detach(), True, shape)
        return cls(weight, None if bias is None else bias.detach(), False, shape)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """One product call (any number of rows)."""
        if self.packed:
            return _packed_linear(x, (self.tensor, self.bias))
        return F.linear(x, self.tensor, self.bias)

    def tiled(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T (+ b)`` computed :data:`TILE` rows per call, the last tile padded with zero rows."""
        n = int(x.shape[0])
        if n == 0:
            return x.new_empty((0, self.shape[0]))
        x = x.contiguous()
        full = n - n % TILE
        parts = [self.call(x[i : i + TILE]) for i in range(0, full, TILE)]
        if full < n:
            pad = x.new_zeros((TILE, x.shape[1]))
            pad[: n - full] = x[full:]
            parts.append(self.call(pad)[: n - full])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass(frozen=True)
class LoraTerm:
    """One adapter's low-rank term on output columns ``start:end`` of a product: ``B(A(x)) * scaling``."""

    a: Weight
    b: Weight
    scaling: float
    start: int
    end: int
    dtype: torch.dtype  # the adapter's weights' (PEFT may keep them in float32 under a bfloat16 model)


@dataclass
class Product:
    """The projections of one input (one, or q/k/v or gate/up fused) and every adapter's terms on them."""

    base: Weight
    sizes: tuple[int, ...]
    terms: dict[str, list[LoraTerm]] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, segments: Sequence[Segment]) -> torch.Tensor:
        out = self.base.tiled(x)
        for adapter, first, end in segments:
            for term in self.terms.get(adapter, ()) if adapter is not None else ():
                low = term.b.tiled(term.a.tiled(x[first:end].to(term.dtype)))
                block = out[first:end, term.start : term.end]
                if low.dtype == block.dtype:
                    block += low * term.scaling
                else:  # PEFT's order: the term in the adapter's dtype, the sum rounded to the output's
                    block.copy_((block.to(low.dtype) + low * term.scaling).to(block.dtype))
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


def build(modules: Sequence[Any], *, pack: bool, fuse: bool) -> Product | None:
    """One product for ``modules`` (projections of one input), or ``None`` where a module is unsupported.

    ``fuse`` stacks their base weights into one product (with ``pack`` only: unpacked,
    stacking would hold a second copy of the weights and gain nothing).
    """
    parts = [lora_parts(m) for m in modules]
    if any(p is None for p in parts):
        return None
    bases = [p[0] for p in parts if p is not None]
    if len(bases) > 1 and not (pack and fuse):
        raise ValueError("unfused projections are separate products")
    with torch.no_grad():
        weight = torch.cat([b.weight for b in bases]) if len(bases) > 1 else bases[0].weight
        biases = [b.bias for b in bases]
        bias = None
        if any(x is not None for x in biases):
            bias = torch.cat([b.weight.new_zeros(b.out_features) if b.bias is None else b.bias for b in bases])
        product = Product(Weight.of(weight, bias, pack=pack), tuple(int(b.out_features) for b in bases))
        start = 0
        for (_, adapters), size in zip([p for p in parts if p is not None], product.sizes, strict=True):
            for name, (a, b, scaling) in adapters.items():
                packable = pack and a.weight.dtype in (torch.float32, torch.bfloat16)
                term = LoraTerm(Weight.of(a.weight, None, pack=packable), Weight.of(b.weight, None, pack=packable),
                                scaling, start, start + size, a.weight.dtype)  # fmt: skip
                product.terms.setdefault(name, []).append(term)
            start += size
    return product


def tile_invariant(weight: Weight) -> bool:
    """Whether a row's product through ``weight`` is the same whatever the other rows of its tile and its place.

    Checked once per (dtype, shape, packing) on random inputs: the rows of one tile
    against the same rows shuffled among others, and one row alone in a padded tile.
    """
    return _tile_invariant(weight.tensor.dtype, weight.shape, weight.packed, weight.bias is not None)


@functools.cache
def _tile_invariant(dtype: torch.dtype, shape: tuple[int, int], packed: bool, bias: bool) -> bool:
    generator = torch.Generator().manual_seed(0)
    out_features, in_features = shape
    raw = (torch.randn(out_features, in_features, generator=generator) * in_features**-0.5).to(dtype)
    weight = Weight.of(raw, torch.randn(out_features, generator=generator).to(dtype) if bias else None, pack=packed)
    with torch.no_grad():
        x = torch.randn(TILE, in_features, generator=generator).to(dtype)
        want = weight.call(x)
        order = torch.randperm(TILE, generator=generator)
        mixed = torch.randn(TILE, in_features, generator=generator).to(dtype)
        keep = order[: TILE // 2]
        mixed[keep] = x[torch.arange(TILE // 2)]
        if not torch.equal(weight.call(mixed)[keep], want[: TILE // 2]):
            return False
        alone = x.new_zeros((TILE, in_features))
        alone[TILE - 1] = x[0]
        return bool(torch.equal(weight.call(alone)[TILE - 1], want[0]))


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

    def group(modules: tuple[Any, ...]) -> list[Product] | None:
        if pack:
            fused = build(modules, pack=True, fuse=True)
            return None if fused is None else [fused]
        single = [build((m,), pack=False, fuse=False) for m in modules]
        return None if any(p is None for p in single) else [p for p in single if p is not None]

    layers = []
    for layer in stack.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv, gate_up = group((attn.q_proj, attn.k_proj, attn.v_proj)), group((mlp.gate_proj, mlp.up_proj))
        o, down = build((attn.o_proj,), pack=pack, fuse=False), build((mlp.down_proj,), pack=pack, fuse=False)
        if qkv is None or gate_up is None or o is None or down is None:
            return None
        layers.append(LayerProducts(qkv, o, gate_up, down))
    head = build((stack.lm_head,), pack=pack, fuse=False)
    if head is None:
        return None
    return Plan(layers, head)


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
        parts = [lora_parts(m) for m in modules]
        if any(p is None for p in parts):
            return None
        bases = [p[0] for p in parts if p is not None]
        fused = pack and len(bases) > 1
        for base in [bases[0]] if fused else bases:
            out = sum(int(b.out_features) for b in bases) if fused else int(base.out_features)
            probes.add((base.weight.dtype, (out, int(base.in_features)), pack, base.bias is not None))
        for _, adapters in (p for p in parts if p is not None):
            for a, b, _ in adapters.values():
                packable = pack and a.weight.dtype in (torch.float32, torch.bfloat16)
                probes.add((a.weight.dtype, tuple(a.weight.shape), packable, False))  # type: ignore[arg-type]
                probes.add((b.weight.dtype, tuple(b.weight.shape), packable, False))  # type: ignore[arg-type]
    for dtype, shape, packed, bias in sorted(probes, key=str):
        if not _tile_invariant(dtype, shape, packed, bias):
            kind = "prepacked" if packed else "plain"
            name = str(dtype).removeprefix("torch.")
            return False, f"{kind} {name} products of shape {shape} depend on the other rows of a tile on this CPU"
    return True, f"every product on tiles of {TILE} rows (checked on this CPU)"
