"""Slot-based forward passes over a decoder-only transformer.

The generation engine keeps one KV cache row ("slot") per sequence being
generated. Sequences of different lengths live side by side without left
padding: each slot has its own length, decode steps write each row's new key
and value at that row's own position, and attention masks positions past it.
Finished rows are swapped out and new prompts prefilled into the freed slots,
so no step computes padding to the end of the longest answer.

The forward pass reuses the model's own modules (norms, projections, MLP,
rotary embedding, LM head), so PEFT LoRA layers wrapped around the projections
apply unchanged; only the attention arithmetic and the cache are ours. It is
checked token for token against the model's own forward in the tests for
every supported architecture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from persona_space.engine._arch import PACK_ENV, check_supported
from persona_space.errors import UnsupportedModelError


@dataclass
class SlotCache:
    """Per-layer key/value buffers shaped ``[slots, kv_heads, capacity, head_dim]``.

    Decode steps attend over the whole current capacity of the first ``B`` slots,
    which is one contiguous block (a slice along the position axis would make the
    batched matmuls copy it each step). The capacity grows in blocks of
    :attr:`block` positions as the longest row grows, up to :attr:`limit`.
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
                grown = old.new_zeros((old.shape[0], old.shape[1], new, old.shape[3]))
                grown[:, :, : old.shape[2]] = old
                buffers[i] = grown

    def move(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Copy slots ``src`` onto slots ``dst``."""
        for buf in (*self.keys, *self.values):
            buf[dst] = buf[src]


class DecoderStack:
    """The pieces of a causal LM needed for slot-based prefill and decode."""

    def __init__(self, causal_lm: Any) -> None:
        check_supported(causal_lm)
        config = causal_lm.config
        inner = causal_lm.model
        self.embed = causal_lm.get_input_embeddings()
        self.layers = list(inner.layers)
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head = causal_lm.get_output_embeddings()
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.groups = self.n_heads // self.n_kv
        self.scaling = float(attn.scaling)
        window = getattr(config, "sliding_window", None)
        uses_window = getattr(config, "use_sliding_window", True)
        self.sliding_window = int(window) if window and uses_window else None
        self.has_qk_norm = hasattr(attn, "q_norm") and hasattr(attn, "k_norm")
        self.dtype = self.embed.weight.dtype
        self.device = self.embed.weight.device
        self.packed = _pack_linears(self, self.layers, self.lm_head)

    def allocate(self, slots: int, capacity: int) -> SlotCache:
        """Empty KV buffers for ``slots`` sequences of up to ``capacity`` tokens."""
        if self.sliding_window is not None and capacity > self.sliding_window:
            raise UnsupportedModelError(
                f"sequences of {capacity} tokens exceed the model's sliding attention window of "
                f"{self.sliding_window}; shorten max_new_tokens or the prompts"
            )
        start = min(capacity, SlotCache.block)
        shape = (slots, self.n_kv, start, self.head_dim)
        n = len(self.layers)
        return SlotCache(
            keys=[torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(n)],
            values=[torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(n)],
            limit=capacity,
        )

    # -- forward passes ---------------------------------------------------------------------

    def prefill(
        self,
        cache: SlotCache,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        dst_slots: torch.Tensor,
        src_rows: torch.Tensor,
        *,
        prefix: SlotCache | None = None,
        prefix_rows: torch.Tensor | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """Run right-padded prompts ``tokens [u, w]`` and store their keys/values.

        Row ``src_rows[i]`` of the prompt batch is written to slot ``dst_slots[i]``, so one
        prompt shared by several samples is computed once. With ``start > 0`` the first
        ``start`` tokens of every prompt are already in slot ``prefix_rows[r]`` of
        ``prefix`` (a prefix shared by all prompts, such as the system turn) and
        ``tokens`` holds only what follows. Returns float32 logits ``[u, vocab]`` at
        each prompt's last real token.
        """
        u, width = tokens.shape
        cache.ensure(start + width)
        positions = torch.arange(start, start + width, device=self.device).unsqueeze(0).expand(u, width)
        shared: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        if start:
            if prefix is None or prefix_rows is None:
                raise ValueError("a prefill with start > 0 needs the prefix cache and rows")
            shared = (
                [k[prefix_rows, :, :start] for k in prefix.keys],
                [v[prefix_rows, :, :start] for v in prefix.values],
            )
            # Suffix query i sees every prefix position and suffix positions up to i.
            allowed = torch.ones((width, start + width), dtype=torch.bool, device=self.device)
            allowed[:, start:] = torch.tril(allowed[:, start:])
            bias = torch.zeros((width, start + width), dtype=torch.float32, device=self.device)
            bias.masked_fill_(~allowed, float("-inf"))

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.keys[layer][dst_slots, :, start : start + width] = k[src_rows]
            cache.values[layer][dst_slots, :, start : start + width] = v[src_rows]
            if shared is None:
                # Right padding is harmless under a causal mask: real tokens never see later ones.
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=True)
                return out.transpose(1, 2).reshape(u, width, self.n_heads * self.head_dim)
            pk, pv = shared[0][layer], shared[1][layer]
            cache.keys[layer][dst_slots, :, :start] = pk[src_rows]
            cache.values[layer][dst_slots, :, :start] = pv[src_rows]
            keys = torch.cat((pk, k), dim=2)
            values = torch.cat((pv, v), dim=2)
            q_grouped = q.reshape(u, self.n_kv, self.groups * width, self.head_dim)
            scores = torch.matmul(q_grouped, keys.transpose(-1, -2)).float() * self.scaling
            scores = scores.view(u, self.n_kv, self.groups, width, start + width) + bias
            probs = torch.softmax(scores, dim=-1).to(v.dtype).view(u, self.n_kv, self.groups * width, -1)
            out = torch.matmul(probs, values).view(u, self.n_heads, width, self.head_dim)
            return out.transpose(1, 2).reshape(u, width, self.n_heads * self.head_dim)

        hidden = self._run(tokens, positions, attend)
        last = hidden[torch.arange(u, device=self.device), lengths - 1]
        return self._logits(last)

    def decode(self, cache: SlotCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One step for slots ``0..B-1``: token ``tokens[b]`` sits at ``positions[b]``.

        Returns float32 logits ``[B, vocab]``.
        """
        batch = int(tokens.shape[0])
        cache.ensure(int(positions.max().item()) + 1)
        span = cache.capacity
        rows = torch.arange(batch, device=self.device)
        visible = torch.arange(span, device=self.device).unsqueeze(0) <= positions.unsqueeze(1)
        mask = torch.zeros((batch, 1, 1, span), dtype=torch.float32, device=self.device)
        mask.masked_fill_(~visible.view(batch, 1, 1, span), float("-inf"))

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys, values = cache.keys[layer], cache.values[layer]
            keys[rows, :, positions] = k[:, :, 0]
            values[rows, :, positions] = v[:, :, 0]
            # Grouped-query attention without repeating keys: [B, kv, groups, hd] x [B, kv, hd, span].
            q_grouped = q.reshape(batch, self.n_kv, self.groups, self.head_dim)
            scores = torch.matmul(q_grouped, keys[:batch].transpose(-1, -2)).float()
            scores = scores * self.scaling + mask
            probs = torch.softmax(scores, dim=-1).to(v.dtype)
            out = torch.matmul(probs, values[:batch])
            return out.reshape(batch, 1, self.n_heads * self.head_dim)

        hidden = self._run(tokens.view(batch, 1), positions.view(batch, 1), attend)
        return self._logits(hidden[:, 0])

    def _run(self, tokens: torch.Tensor, positions: torch.Tensor, attend: Any) -> torch.Tensor:
        hidden = self.embed(tokens)
        cos, sin = self.rotary(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        batch, width = tokens.shape
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = self.linear(attn.q_proj, x).view(batch, width, -1, self.head_dim)
            k = self.linear(attn.k_proj, x).view(batch, width, -1, self.head_dim)
            v = self.linear(attn.v_proj, x).view(batch, width, -1, self.head_dim)
            if self.has_qk_norm:
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            hidden = hidden + self.linear(attn.o_proj, attend(index, q, k, v))
            x = layer.post_attention_layernorm(hidden)
            mlp = layer.mlp
            hidden = hidden + self.linear(
                mlp.down_proj, mlp.act_fn(self.linear(mlp.gate_proj, x)) * self.linear(mlp.up_proj, x)
            )
        out: torch.Tensor = hidden
        return out

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and vocabulary head for the needed positions only, in float32."""
        logits: torch.Tensor = self.linear(self.lm_head, self.norm(hidden)).float()
        return logits

    def linear(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        """``module(x)``, through the prepacked weight when there is one."""
        packed = self.packed.get(id(module))
        if packed is None:
            out: torch.Tensor = module(x)
            return out
        return torch.ops.mkldnn._linear_pointwise(x, packed[0], packed[1], "none", [], "")  # type: ignore[no-any-return]


def _pack_linears(stack: DecoderStack, layers: list[Any], lm_head: Any) -> dict[int, tuple[torch.Tensor, Any]]:
    """oneDNN-prepacked copies of the plain bf16 linear weights on CPU (10-40 % faster products).

    Only plain ``nn.Linear`` modules are packed; LoRA-wrapped ones keep their own
    forward. The packed path is verified against ``F.linear`` once and dropped if it
    disagrees or the build lacks it. ``PERSONA_SPACE_PACKED_LINEAR=0`` turns it off.
    """
    if (
        stack.device.type != "cpu"
        or stack.dtype != torch.bfloat16
        or os.environ.get(PACK_ENV, "1") == "0"
        or not torch.backends.mkldnn.is_available()
    ):
        return {}
    modules: list[Any] = [lm_head]
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        modules += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    packed: dict[int, tuple[torch.Tensor, Any]] = {}
    try:
        with torch.no_grad():
            for module in modules:
                if type(module) is torch.nn.Linear and module.weight.dtype == torch.bfloat16:
                    weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), 128)
                    packed[id(module)] = (weight, None if module.bias is None else module.bias.detach())
            if packed:
                probe = next(m for m in modules if id(m) in packed)
                x = torch.randn(3, probe.in_features, dtype=torch.bfloat16)
                got = torch.ops.mkldnn._linear_pointwise(x, *packed[id(probe)], "none", [], "")
                want = F.linear(x, probe.weight, probe.bias)
                if not torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2):
                    return {}
    except (RuntimeError, AttributeError):
        return {}
    return packed


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
