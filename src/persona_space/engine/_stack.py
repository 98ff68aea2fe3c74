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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from persona_space.engine import _native, _products, _rows
from persona_space.engine._arch import check_supported
from persona_space.engine._cache import SlotCache
from persona_space.engine._packing import (
    _fusable,
    _fuse,
    _Group,
    _linear_bytes,
    _linears,
    _pack_linears,
    _packed_linear,
    _packing_available,
)
from persona_space.engine._steering import Routes, RowSteering
from persona_space.errors import UnsupportedModelError


class DecoderStack:
    """The pieces of a causal LM needed for slot-based prefill and decode."""

    def __init__(
        self,
        causal_lm: Any,
        *,
        pack_limit: int | None = None,
        invariant: bool = True,
        build: bool = True,
        routes: Routes | None = None,
    ) -> None:
        """``pack_limit``: the most bytes the prepacked copies of the weights may take (none: no limit).

        ``routes``: the steering conditions among the row names the passes are given
        (:mod:`persona_space.engine._steering`); a steered row is steered after its layer.

        ``invariant=False`` runs the earlier path (PEFT's own LoRA layers, products on
        whole batches), kept to measure what the row-invariant one costs. ``build=False`` only decides
        the path and its :attr:`invariance` (no weight is copied): what a backend states.
        """
        check_supported(causal_lm)
        self.routes: Routes = routes or {}
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
        pack = _packing_available(self) and (pack_limit is None or _linear_bytes(self) <= pack_limit)
        self.native = _native.kernels() if _fusable(self) else None
        self.plan: _products.Plan | None = None
        self.qkv: list[_Group] = []
        self.gate_up: list[_Group] = []
        self.packed: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        verdict = _products.assess(self, pack) if self.native is not None and invariant else None
        self.invariant = verdict is not None and verdict[0]
        """Whether a row's logits depend on its own tokens and adapter only (see :attr:`invariance`)."""
        self.invariance = _invariance(self, invariant, verdict)
        if not build:
            return
        if verdict is not None:  # the row-invariant path: its own products, PEFT's LoRA forward is not used
            self.plan = _products.plan(self, pack)
            return
        self.qkv = [_fuse((a.q_proj, a.k_proj, a.v_proj), pack) for a in (layer.self_attn for layer in self.layers)]
        self.gate_up = [_fuse((m.gate_proj, m.up_proj), pack) for m in (layer.mlp for layer in self.layers)]
        fused = {id(m) for group in (*self.qkv, *self.gate_up) if group.fused is not None for m in group.modules}
        self.packed = _pack_linears(_linears(self), skip=fused) if pack else {}

    def allocate(self, slots: int, capacity: int) -> SlotCache:
        """Empty KV buffers for ``slots`` sequences of up to ``capacity`` tokens.

        The fused decode step reads each row's own positions only, so its buffers take
        the whole capacity at once and never grow (no copies); the eager step attends
        over the current capacity, which grows in blocks. The peak is the same either
        way once one row reaches the limit, and the ``cpu`` backend's automatic slot
        count budgets for it.
        """
        if self.sliding_window is not None and capacity > self.sliding_window:
            raise UnsupportedModelError(
                f"sequences of {capacity} tokens exceed the model's sliding attention window of "
                f"{self.sliding_window}; shorten max_new_tokens or the prompts"
            )
        start = capacity if self.native is not None else min(capacity, SlotCache.block)
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
        adapters: Sequence[str | None] | None = None,
        reader: _rows.Reader | None = None,
    ) -> torch.Tensor:
        """Run right-padded prompts ``tokens [u, w]`` and store their keys/values.

        Row ``src_rows[i]`` of the prompt batch is written to slot ``dst_slots[i]``, so one
        prompt shared by several samples is computed once. With ``start > 0`` the first
        ``start`` tokens of every prompt are already in slot ``prefix_rows[r]`` of
        ``prefix`` (a prefix shared by all prompts, such as the system turn) and
        ``tokens`` holds only what follows. Returns the hidden states ``[u, hidden]`` at
        each prompt's last real token, for :meth:`logits`.

        The layers run on the real tokens only, packed row after row, so an
        :class:`AdapterRouter` routing a mixed batch needs one adapter per real token
        here (row ``i``'s adapter ``lengths[i]`` times), and one per row again for
        :meth:`logits`. ``reader(layer, hidden)`` is called with each layer's output, one
        row per real token, the prompts' tokens row after row (see
        :mod:`persona_space.engine._reading`).
        """
        if int(lengths.min()) < 1:
            raise ValueError(f"every prompt needs at least one token to prefill, got lengths {lengths.tolist()}")
        if self.plan is not None:
            cache.ensure(start + int(tokens.shape[1]))
            named = [None] * int(tokens.shape[0]) if adapters is None else list(adapters)
            return _rows.prefill(
                self, cache, tokens, lengths, dst_slots, src_rows, named, prefix=prefix, prefix_rows=prefix_rows,
                start=start, reader=reader,
            )  # fmt: skip
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

        real = (torch.arange(width, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)).view(-1)
        steering = None if adapters is None else RowSteering.of(self.routes, adapters, repeats=lengths.tolist())
        hidden = self._run(tokens, positions, attend, real=real.nonzero().squeeze(1), steering=steering, reader=reader)
        last: torch.Tensor = hidden[lengths.cumsum(0) - 1]
        return last

    def decode(
        self,
        cache: SlotCache,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        adapters: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """One step for slots ``0..B-1``: token ``tokens[b]`` sits at ``positions[b]``.

        Returns float32 logits ``[B, vocab]``. Runs the fused native kernels where
        they are available (:mod:`persona_space.engine._native`), eager operations otherwise.
        ``adapters`` names each row's adapter on the row-invariant path (``None``: the
        base model for every row); the other paths route rows by the adapter router.
        """
        batch = int(tokens.shape[0])
        cache.ensure(int(positions.max().item()) + 1)
        if self.plan is not None:
            return _rows.decode(self, cache, tokens, positions, [None] * batch if adapters is None else adapters)
        steering = None if adapters is None else RowSteering.of(self.routes, adapters)
        if self.native is not None:
            return self._decode_native(self.native, cache, tokens, positions.to(torch.int64).contiguous(), steering)
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

        hidden = self._run(tokens.view(batch, 1), positions.view(batch, 1), attend, steering=steering)
        return self.logits(hidden[:, 0])

    def _decode_native(
        self,
        native: _native.NativeKernels,
        cache: SlotCache,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        steering: RowSteering | None = None,
    ) -> torch.Tensor:
        """The decode step with the small operations fused: three native calls and four products per layer."""
        batch = int(tokens.shape[0])
        cos, sin = self.rotary(self.embed.weight[:1], positions.view(batch, 1))
        cos, sin = cos.reshape(batch, self.head_dim).contiguous(), sin.reshape(batch, self.head_dim).contiguous()
        attended: torch.Tensor = self.embed.weight.new_empty((batch, self.n_heads * self.head_dim))

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            attn = self.layers[layer].self_attn
            qk_norms = (attn.q_norm, attn.k_norm) if self.has_qk_norm else None
            native.decode_attention(
                q,
                k,
                v,
                cos,
                sin,
                cache.keys[layer],
                cache.values[layer],
                positions,
                attended,
                scale=self.scaling,
                q_norm=None if qk_norms is None else qk_norms[0].weight,
                k_norm=None if qk_norms is None else qk_norms[1].weight,
                norm_eps=0.0 if qk_norms is None else float(qk_norms[0].variance_epsilon),
            )
            return attended

        rows = torch.arange(batch, device=self.device)
        hidden = self._run(
            tokens.view(batch, 1), positions.view(batch, 1), attend, real=rows, fused=True, steering=steering
        )
        return self.logits(hidden)

    def _run(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        attend: Any,
        *,
        real: torch.Tensor | None = None,
        fused: bool = False,
        steering: RowSteering | None = None,
        reader: _rows.Reader | None = None,
    ) -> torch.Tensor:
        """The layers over ``tokens [batch, width]``; ``attend(layer, q, k, v)`` does the attention.

        With ``real`` (the flat indices of the real tokens of right-padded prompts in
        the ``batch * width`` grid), embeddings, norms, products and MLP run on the real
        tokens only, packed into ``[n, hidden]``, through the native kernels where the
        model has them, and only attention sees them laid out on the grid: the padding
        costs nothing in the products. ``steering`` changes the rows it steers (the real
        tokens, or the batch's rows) after their layer. With ``fused`` (packed only), ``attend`` takes
        the projections as they come, ``[n, heads * head_dim]`` before any per-head norm
        and rotary embedding, and does those itself. Returns the hidden states,
        ``[n, hidden]`` with ``real``, else ``[batch, width, hidden]``; ``reader(layer, output)``
        sees each layer's output in that shape.
        """
        batch, width = tokens.shape
        hidden = self.embed(tokens if real is None else tokens.reshape(-1)[real])
        native = self.native if real is not None else None  # the kernels take [rows, dim] tables
        delta: torch.Tensor | None = None
        if not fused:
            cos, sin = self.rotary(self.embed.weight[:1], positions)
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

        def norm(module: Any) -> torch.Tensor:
            nonlocal hidden, delta
            if native is None:
                if delta is not None:
                    hidden = hidden + delta
                out: torch.Tensor = module(hidden)
            else:
                out = torch.empty_like(hidden)
                native.add_rms_norm(hidden, delta, module.weight, out, module.variance_epsilon)
            delta = None
            return out

        def grid(p: torch.Tensor) -> torch.Tensor:
            """``[n, heads * head_dim]`` (packed) or ``[batch, width, ...]`` as ``[batch, heads, width, head_dim]``."""
            if real is not None:
                laid = p.new_zeros((batch * width, p.shape[-1]))
                laid[real] = p
                p = laid
            return p.view(batch, width, -1, self.head_dim).transpose(1, 2)

        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = norm(layer.input_layernorm)
            q, k, v = self.project(self.qkv[index], x)
            if fused:
                out = attend(index, q, k, v)
            else:
                if self.has_qk_norm:
                    q = attn.q_norm(q.view(*q.shape[:-1], -1, self.head_dim)).flatten(-2)
                    k = attn.k_norm(k.view(*k.shape[:-1], -1, self.head_dim)).flatten(-2)
                q, k, v = grid(q), grid(k), grid(v)
                q = q * cos + _native.rotate_half(q) * sin
                k = k * cos + _native.rotate_half(k) * sin
                out = attend(index, q, k, v)
                if real is not None:
                    out = out.view(batch * width, -1)[real]
            delta = self.linear(attn.o_proj, out)
            x = norm(layer.post_attention_layernorm)
            mlp = layer.mlp
            gate, up = self.project(self.gate_up[index], x)
            if native is None:
                activated = mlp.act_fn(gate) * up
            else:
                activated = gate.new_empty(gate.shape)
                native.silu_mul(gate, up, activated)
            delta = self.linear(mlp.down_proj, activated)
            if steering is not None and index in steering.layers:
                hidden = steering.apply(index, hidden + delta)
                delta = None
            if reader is not None:
                reader(index, hidden if delta is None else hidden + delta)
        if delta is not None:
            hidden = hidden + delta
        final: torch.Tensor = hidden
        return final

    def logits(self, hidden: torch.Tensor, adapters: Sequence[str | None] | None = None) -> torch.Tensor:
        """Final norm and vocabulary head for the needed positions only, in float32."""
        if self.plan is not None:
            return _rows.head(self, hidden, [None] * int(hidden.shape[0]) if adapters is None else adapters)
        logits: torch.Tensor = self.linear(self.lm_head, self.norm(hidden)).float()
        return logits

    def linear(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        """``module(x)``, through the prepacked weight when there is one."""
        packed = self.packed.get(id(module))
        if packed is None:
            out: torch.Tensor = module(x)
            return out
        return _packed_linear(x, packed)

    def project(self, group: _Group, x: torch.Tensor) -> Sequence[torch.Tensor]:
        """The outputs of the projections in ``group`` on the same input: one product when fused."""
        if group.fused is None:
            return [self.linear(module, x) for module in group.modules]
        parts: tuple[torch.Tensor, ...] = _packed_linear(x, group.fused).split(group.sizes, dim=-1)
        return parts


def _invariance(stack: DecoderStack, asked: bool, verdict: tuple[bool, str] | None) -> str:
    """Why a row's logits do or do not depend on the other rows of its batch, for manifests."""
    if verdict is not None:
        if verdict[0]:
            return (
                f"batch-invariant: {verdict[1]}, each adapter's term added after the base product, "
                "attention and norms one row at a time (fused kernels)"
            )
        return f"not batch-invariant: {verdict[1]}"
    if not asked:
        return "not batch-invariant: the earlier path was asked for (invariant=False)"
    if stack.native is None:
        if stack.device.type != "cpu":
            why = f"the fused kernels are CPU code; this model is on {stack.device.type}"
        elif _native.kernels() is None:
            why = _native.native_state()["reason"]
        else:
            why = "the fused kernels do not implement this model's layers or dtype"
        return f"not batch-invariant: the eager step runs ({why})"
    return "not batch-invariant: a LoRA layer of a kind the engine does not compute itself (DoRA, a bias on B, merged)"
