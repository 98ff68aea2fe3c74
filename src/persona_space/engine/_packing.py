"""Prepacked and fused linear products for the slot engine's forward pass (:class:`~._stack.DecoderStack`).

On CPU, bf16 and float32 products go through oneDNN-prepacked copies of the plain
linear weights where the build has them, and projections of one input (q/k/v,
gate/up) are stacked into one wider product. Whether the fused native decode
kernels compute exactly a model's decode step is decided here too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from persona_space.engine._arch import PACK_ENV


class _Stack(Protocol):
    """What these helpers read of a decoder stack (read-only)."""

    @property
    def dtype(self) -> Any: ...

    @property
    def device(self) -> Any: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def has_qk_norm(self) -> bool: ...

    @property
    def norm(self) -> Any: ...

    @property
    def lm_head(self) -> Any: ...

    @property
    def layers(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class _Group:
    """Projections of one input (q/k/v, or gate/up), and their fused prepacked weight when they have one."""

    modules: tuple[Any, ...]
    fused: tuple[torch.Tensor, torch.Tensor | None] | None = None
    sizes: tuple[int, ...] = ()


_PACKABLE = {torch.bfloat16: 2e-2, torch.float32: 1e-4}  # dtype -> tolerance of the one-off check


def _packing_available(stack: _Stack) -> bool:
    """Whether products go through oneDNN-prepacked weights: bf16 or float32 on CPU, where the build has them.

    At the few rows of a decode step prepacked weights make the products 10-40 %
    faster in bf16 and up to twice as fast in float32 (``benchmarks/sampling.py``).
    The packed path is checked against ``F.linear`` once and not used if it
    disagrees or the build lacks it. ``PERSONA_SPACE_PACKED_LINEAR=0`` turns it off.
    """
    tolerance = _PACKABLE.get(stack.dtype)
    if (
        stack.device.type != "cpu"
        or tolerance is None
        or os.environ.get(PACK_ENV, "1") == "0"
        or not torch.backends.mkldnn.is_available()
    ):
        return False
    try:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            weight = torch.randn(48, 64, generator=generator).to(stack.dtype)
            x = torch.randn(3, 64, generator=generator).to(stack.dtype)
            got = _packed_linear(x, (_reorder(weight), None))
    except (RuntimeError, AttributeError):
        return False
    return bool(torch.allclose(got.float(), F.linear(x, weight).float(), rtol=tolerance, atol=tolerance))


_RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
_SILU = frozenset({"SiLU", "SiLUActivation"})


def _fusable(stack: _Stack) -> bool:
    """Whether the fused decode kernels compute exactly this model's decode step.

    They implement the llama family's layer: RMS norms of the transformers classes
    (weight times the normalised value), rotate-half rotary embedding, grouped-query
    attention without a window, a SiLU-gated MLP; bfloat16 or float32 on CPU, with
    every norm weight in the model's dtype. Anything else runs the eager step.
    """
    if stack.device.type != "cpu" or stack.dtype not in (torch.float32, torch.bfloat16) or stack.head_dim % 2:
        return False
    norms = [stack.norm]
    for layer in stack.layers:
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
        if stack.has_qk_norm:
            norms += [layer.self_attn.q_norm, layer.self_attn.k_norm]
        if type(getattr(layer.mlp, "act_fn", None)).__name__ not in _SILU:
            return False
    return all(
        type(n).__name__ in _RMS_NORMS
        and isinstance(getattr(n, "variance_epsilon", None), float)
        and n.weight.dtype == stack.dtype
        and n.weight.is_contiguous()
        for n in norms
    )


def _linear_bytes(stack: _Stack) -> int:
    """Bytes of the linear weights a prepacked copy would hold again (the vocabulary head included)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in _linears(stack) if _plain(m))


def _linears(stack: _Stack) -> list[Any]:
    """The vocabulary head and every projection of every layer."""
    modules: list[Any] = [stack.lm_head]
    for layer in stack.layers:
        attn, mlp = layer.self_attn, layer.mlp
        modules += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    return modules


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    """A oneDNN-prepacked copy of ``weight`` (packed for batches of about 128 rows)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 128)  # type: ignore[no-any-return]


def _packed_linear(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed[0], packed[1], "none", [], "")  # type: ignore[no-any-return]


def _plain(module: Any) -> bool:
    """A plain ``nn.Linear``: not wrapped by a LoRA layer, whose forward must run as it is."""
    return type(module) is torch.nn.Linear


def _fuse(modules: tuple[Any, ...], pack: bool) -> _Group:
    """One prepacked product for projections of the same input: their weights stacked.

    Fewer, wider products keep the matrix units busier at the few rows of a decode
    step (about 8 % on q/k/v and gate/up in bf16). Unpacked, stacking gains nothing and
    would hold a second copy of the weights, so it is done only with packing. Only
    plain linears of one packable dtype are fused: a LoRA-wrapped projection keeps
    its own forward, and so does the rest of its group.
    """
    if not pack or not all(_plain(m) for m in modules):
        return _Group(modules)
    kinds = {(m.in_features, m.weight.dtype) for m in modules}
    if len(kinds) != 1 or modules[0].weight.dtype not in _PACKABLE:
        return _Group(modules)
    with torch.no_grad():
        weight = torch.cat([m.weight.detach() for m in modules])
        bias = None
        if any(m.bias is not None for m in modules):
            bias = torch.cat(
                [m.weight.new_zeros(m.out_features) if m.bias is None else m.bias.detach() for m in modules]
            )
        packed = _reorder(weight)
    return _Group(modules, (packed, bias), tuple(int(m.out_features) for m in modules))


def _pack_linears(modules: list[Any], *, skip: set[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
    """oneDNN-prepacked copies of the plain linear weights among ``modules`` not already fused (``skip``)."""
    packed: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    with torch.no_grad():
        for module in modules:
            if id(module) not in skip and _plain(module) and module.weight.dtype in _PACKABLE:
                weight = _reorder(module.weight.detach())
                packed[id(module)] = (weight, None if module.bias is None else module.bias.detach())
    return packed
