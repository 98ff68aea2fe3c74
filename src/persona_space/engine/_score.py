"""Exact log-probabilities of many short continuations of a few prompts, under the base model and adapters.

The work is organised in *jobs*: one prompt, one model (the base model or an
attached adapter) and the token ids of every candidate continuation. Two ways to
run them, both exact:

``packed`` (the default where the attention takes a custom mask: ``sdpa``, ``eager``)
    Each job becomes one sequence: the prompt, then the candidates as a prefix
    tree (every distinct candidate prefix once, in depth-first order). A 4-D
    attention mask lets each tree token see the prompt and its own ancestors only,
    and position ids restart after the prompt, so every token sees exactly what it
    would see in prompt + candidate. The prompt is computed once per job, a prefix
    shared by candidates ("Voyager" in "Voyager 1" and "Voyager 2") once, and a
    candidate's last token is never fed at all: its probability is read at its
    parent. Rows of several prompts and models go into one batch; adapters are
    routed per row (PEFT's mixed-adapter batches), so base and adapters share one
    forward pass.

``padded`` (any model)
    One right-padded row per prompt + candidate, the model's own causal mask.

Either way only the positions whose next token is scored go through the vocabulary
head, which runs in float32 from the final hidden states (weights upcast), and the
log-softmax is float32 even when the model runs in bfloat16.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persona_space.engine._requests import ScoreRequest, Scores
from persona_space.engine._routing import AdapterRouter, adapters_off
from persona_space.engine._steering import lora_of, routes_of, steer_of, steering_hooks
from persona_space.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

    from persona_space.engine._host import Host

ScoreMethod = Literal["auto", "packed", "padded"]
SCORE_METHODS = ("auto", "packed", "padded")
_MASKABLE = ("sdpa", "eager")
_HEAD_CHUNK = 512  # scored positions per float32 vocabulary product
DEFAULT_BATCH_TOKENS = 8192  # the most (padded) tokens of one scoring batch: every backend's default
DEFAULT_MAX_ROW_TOKENS = 2048  # the most tokens of one scoring row (a job is split past it): every backend's default


@dataclass
class _Row:
    """One sequence of a batch and what to read from it."""

    job: int
    candidates: list[int]  # indices into the job's candidates
    ids: list[int]
    positions: list[int]
    parents: list[int] | None  # packed: for each tree token its parent's row index (-1: the prompt); padded: None
    prompt_len: int
    heads: list[int]  # row indices whose next-token distribution is read
    reads: list[tuple[int, int, int, int]] = field(default_factory=list)  # (candidate, depth, head slot, token)


def score_jobs(
    model: Host,
    jobs: Sequence[ScoreRequest],
    *,
    method: ScoreMethod = "auto",
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> list[Scores]:
    """Log-probabilities of every job's candidates; see the module docstring for how."""
    import torch

    check_score_options(method, batch_tokens, max_row_tokens)
    routes = routes_of(model)
    for job in jobs:
        if job.adapter is not None and job.adapter not in model.adapters and job.adapter not in routes:
            raise ConfigError(f"adapter {job.adapter!r} is not attached; attached: {sorted(model.adapters)}")
        for cand in job.candidates:
            if not cand:
                raise ConfigError("a candidate has no tokens; expected at least one token per candidate")
    chosen = resolve_method(model, jobs, method)
    rows = [
        r
        for i, job in enumerate(jobs)
        for r in (_packed_rows if chosen == "packed" else _padded_rows)(i, job, max_row_tokens)
    ]
    out = [
        Scores(
            token_logprobs=[np.zeros(len(c), dtype=np.float32) for c in job.candidates],
            token_greedy=[np.zeros(len(c), dtype=bool) for c in job.candidates],
        )
        for job in jobs
    ]
    head = _head(model)
    router = AdapterRouter(model.module, routes)
    needs_routing = any(lora_of(routes, job.adapter) is not None for job in jobs)
    with torch.inference_mode(), contextlib.ExitStack() as stack:
        if needs_routing:
            if not router.active:
                raise ModelError("the model has no LoRA layers to route adapters through")
            stack.enter_context(router.routing())  # steers too, where a row is steered
        else:
            stack.enter_context(adapters_off(model.module))
            if any(steer_of(routes, job.adapter) is not None for job in jobs):
                stack.enter_context(steering_hooks(model.module, lambda: router.steering))
        for batch in _batches(rows, batch_tokens):
            router.set_rows([jobs[r.job].adapter for r in batch])
            hidden = _forward(model, batch, chosen)
            _read(hidden, batch, head, out)
            if progress is not None:
                progress(sum(len(r.candidates) for r in batch))
    return out


def check_score_options(method: object, batch_tokens: object, max_row_tokens: object) -> None:
    """Refuse a scoring method or batch limit the scorer cannot use."""
    if method not in SCORE_METHODS:
        raise ConfigError(f"method must be one of {', '.join(SCORE_METHODS)}, got {method!r}")
    for name, value in (("batch_tokens", batch_tokens), ("max_row_tokens", max_row_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 16:
            raise ConfigError(f"{name} must be an integer >= 16, got {value!r}")


def resolve_method(model: Host, jobs: Sequence[ScoreRequest], method: ScoreMethod) -> Literal["packed", "padded"]:
    """``packed`` where the attention accepts a custom 4-D mask and no sliding window cuts the rows short."""
    config = model.config
    impl = getattr(config, "_attn_implementation", None) or "eager"
    window = getattr(config, "sliding_window", None)
    longest = max((len(j.prompt_ids) + max((len(c) for c in j.candidates), default=0) for j in jobs), default=0)
    maskable = impl in _MASKABLE and (not isinstance(window, int) or window <= 0 or longest <= window)
    if method == "packed" and not maskable:
        raise ConfigError(
            f"method='packed' needs an attention implementation that takes a 4-D mask ({', '.join(_MASKABLE)}) "
            f"and rows within the sliding window; this model uses {impl!r} (window {window}). Use 'padded' or 'auto'"
        )
    if method == "auto":
        return "packed" if maskable else "padded"
    return method


# -- rows ------------------------------------------------------------------------------------


def _packed_rows(job_index: int, job: ScoreRequest, max_row_tokens: int) -> Iterator[_Row]:
    """The job's candidates as prefix trees after the prompt, split into rows of at most ``max_row_tokens``."""
    plen = len(job.prompt_ids)
    budget = max(1, max_row_tokens - plen)
    order = sorted(range(len(job.candidates)), key=lambda i: job.candidates[i])
    chunk: list[int] = []
    nodes: set[tuple[int, ...]] = set()
    for i in order:
        new = {job.candidates[i][:d] for d in range(1, len(job.candidates[i]))} - nodes
        if chunk and len(nodes) + len(new) > budget:
            yield _tree_row(job_index, job, chunk)
            chunk, nodes = [], set()
            new = {job.candidates[i][:d] for d in range(1, len(job.candidates[i]))}
        chunk.append(i)
        nodes |= new
    if chunk:
        yield _tree_row(job_index, job, chunk)


def _tree_row(job_index: int, job: ScoreRequest, chunk: list[int]) -> _Row:
    plen = len(job.prompt_ids)
    prefixes = sorted({job.candidates[i][:d] for i in chunk for d in range(1, len(job.candidates[i]))})
    where = {p: plen + k for k, p in enumerate(prefixes)}
    where[()] = plen - 1
    heads = sorted({where[job.candidates[i][:d]] for i in chunk for d in range(len(job.candidates[i]))})
    slot = {h: s for s, h in enumerate(heads)}
    row = _Row(
        job=job_index,
        candidates=chunk,
        ids=[*job.prompt_ids, *(p[-1] for p in prefixes)],
        positions=[*range(plen), *(plen + len(p) - 1 for p in prefixes)],
        parents=[where[p[:-1]] if len(p) > 1 else -1 for p in prefixes],
        prompt_len=plen,
        heads=heads,
    )
    for i in chunk:
        cand = job.candidates[i]
        row.reads += [(i, d, slot[where[cand[:d]]], cand[d]) for d in range(len(cand))]
    return row


def _padded_rows(job_index: int, job: ScoreRequest, max_row_tokens: int) -> Iterator[_Row]:
    """One row per candidate: the prompt and every candidate token but the last."""
    plen = len(job.prompt_ids)
    for i, cand in enumerate(job.candidates):
        ids = [*job.prompt_ids, *cand[:-1]]
        row = _Row(
            job=job_index,
            candidates=[i],
            ids=ids,
            positions=list(range(len(ids))),
            parents=None,
            prompt_len=plen,
            heads=list(range(plen - 1, len(ids))),
        )
        row.reads = [(i, d, d, cand[d]) for d in range(len(cand))]
        yield row


def _batches(rows: list[_Row], batch_tokens: int) -> Iterator[list[_Row]]:
    """Rows of similar length together, at most ``batch_tokens`` (padded) per batch."""
    ordered = sorted(rows, key=lambda r: len(r.ids))
    batch: list[_Row] = []
    for row in ordered:
        if batch and (len(batch) + 1) * len(row.ids) > batch_tokens:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


# -- the forward pass -------------------------------------------------------------------------


def _forward(model: Host, batch: list[_Row], method: str) -> torch.Tensor:
    """Final hidden states (batch, length, hidden) of the decoder for the batch's rows."""
    import torch

    device = model.device
    width = max(len(r.ids) for r in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    for b, row in enumerate(batch):
        ids[b, : len(row.ids)] = torch.tensor(row.ids)
        positions[b, : len(row.ids)] = torch.tensor(row.positions)
    decoder = _decoder(model)
    if method == "packed":
        allowed = torch.from_numpy(np.stack([_tree_mask(r, width) for r in batch]))
        mask = torch.zeros(allowed.shape, dtype=model.dtype)
        mask.masked_fill_(~allowed, torch.finfo(model.dtype).min)
        attention: torch.Tensor = mask[:, None].to(device)
    else:
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for b, row in enumerate(batch):
            attention[b, : len(row.ids)] = 1
        attention = attention.to(device)
    out = decoder(
        input_ids=ids.to(device), attention_mask=attention, position_ids=positions.to(device), use_cache=False
    )
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden  # type: ignore[no-any-return]


def _tree_mask(row: _Row, width: int) -> np.ndarray:
    """Who may attend to whom in a packed row: causal over the prompt, ancestors in the tree, self for padding."""
    allowed = np.zeros((width, width), dtype=bool)
    plen = row.prompt_len
    allowed[:plen, :plen] = np.tril(np.ones((plen, plen), dtype=bool))
    parents = row.parents or []
    allowed[plen : plen + len(parents), :plen] = True
    for k, parent in enumerate(parents):
        node = plen + k
        if parent >= plen:
            allowed[node, plen:node] = allowed[parent, plen:node]  # parents precede children
        allowed[node, node] = True
    for pad in range(len(row.ids), width):
        allowed[pad, pad] = True  # padding sees only itself: no empty softmax, nothing reads it
    return allowed


def _decoder(model: Host) -> Any:
    base = model.base_module
    get = getattr(base, "get_decoder", None)
    decoder = get() if callable(get) else None
    if decoder is None or decoder is base:
        raise ModelError(
            f"model {model.name!r} ({type(base).__name__}) does not expose its decoder; "
            "expected a transformers causal LM with get_decoder()"
        )
    return decoder


# -- the vocabulary head ----------------------------------------------------------------------


@dataclass
class _Head:
    """The output layer in float32, with the logit transforms some architectures add after it."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    softcap: float | None
    scale: float

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        out = hidden.float() @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        if self.scale != 1.0:
            out = out * self.scale
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


_HEADS: weakref.WeakKeyDictionary[Any, _Head] = weakref.WeakKeyDictionary()


def _head(model: Host) -> _Head:
    """The model's vocabulary head in float32, checked once against the model's own logits."""
    import torch

    base = model.base_module
    cached = _HEADS.get(base)
    if cached is not None and cached.weight.device == model.device:
        return cached
    layer = base.get_output_embeddings()
    if layer is None or not hasattr(layer, "weight"):
        raise ModelError(f"model {model.name!r} has no output embedding layer to score tokens with")
    config = model.config
    text_config = getattr(config, "get_text_config", lambda: config)()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    scale = float(getattr(text_config, "logit_scale", None) or 1.0)
    scaling = getattr(text_config, "logits_scaling", None)
    if scaling:
        scale /= float(scaling)
    bias = getattr(layer, "bias", None)
    head = _Head(
        weight=layer.weight.detach().float(),
        bias=None if bias is None else bias.detach().float(),
        softcap=float(softcap) if softcap else None,
        scale=scale,
    )
    ids = torch.tensor([[1, 2, 3, 4]], device=model.device) % int(head.weight.shape[0])
    with torch.inference_mode(), adapters_off(model.module):
        want = base(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
        got = head.logits(_decoder(model)(input_ids=ids).last_hidden_state[0, -1])
    tolerance = 1e-3 if model.dtype == torch.float32 else 0.05
    error = float((want - got).abs().max()) / max(1.0, float(want.abs().max()))
    if not math.isfinite(error) or error > tolerance:
        raise ModelError(
            f"model {model.name!r}: the float32 vocabulary head does not reproduce the model's logits "
            f"(relative error {error:.2g}, expected <= {tolerance}); its architecture transforms logits in a way "
            "this scorer does not know"
        )
    _HEADS[base] = head
    return head


def _read(hidden: torch.Tensor, batch: list[_Row], head: _Head, out: list[Scores]) -> None:
    """Token log-probabilities and greedy flags at each row's scored positions."""
    import torch

    width = hidden.shape[1]
    flat = torch.tensor([b * width + h for b, row in enumerate(batch) for h in row.heads], device=hidden.device)
    offsets = np.cumsum([0, *(len(r.heads) for r in batch)])
    states = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)
    # (candidate, depth) reads per scored position
    slots = np.array([offsets[b] + s for b, row in enumerate(batch) for (_, _, s, _) in row.reads], dtype=np.int64)
    tokens = np.array([t for row in batch for (_, _, _, t) in row.reads], dtype=np.int64)
    targets = [(row.job, c, d) for row in batch for (c, d, _, _) in row.reads]
    values = np.empty(len(slots), dtype=np.float32)
    greedy = np.empty(len(slots), dtype=bool)
    for start in range(0, len(states), _HEAD_CHUNK):
        stop = min(start + _HEAD_CHUNK, len(states))
        logp = torch.log_softmax(head.logits(states[start:stop]), dim=-1)
        picked = np.flatnonzero((slots >= start) & (slots < stop))
        if not len(picked):
            continue
        local = torch.from_numpy(slots[picked] - start).to(logp.device)
        toks = torch.from_numpy(tokens[picked]).to(logp.device)
        values[picked] = logp[local, toks].cpu().numpy()
        greedy[picked] = (logp.argmax(dim=-1)[local] == toks).cpu().numpy()
    for k, (job, cand, depth) in enumerate(targets):
        out[job].token_logprobs[cand][depth] = values[k]
        out[job].token_greedy[cand][depth] = greedy[k]
