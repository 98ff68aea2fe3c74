"""A judge that reads a local chat model's probabilities of every rating 0..100."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from persona_space.chat import render_chat
from persona_space.errors import ConfigError, ModelError
from persona_space.judges._base import ANSWERS, JUDGE_SYSTEM_PROMPT, Criterion, judge_messages

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from persona_space.models import LoadedModel


class LocalJudge:
    """Exact expected rating from a local chat model (the base model; adapters are switched off).

    The judge prompt is rendered with its chat template and the generation prompt; each answer
    "0".."100" is the tokens of the number followed by the end-of-turn token, so "5" and "50" are
    different answers. The 101 answer probabilities are normalised and :meth:`score` is their mean.
    """

    def __init__(self, model: LoadedModel, *, system_prompt: str = JUDGE_SYSTEM_PROMPT) -> None:
        if not isinstance(system_prompt, str):
            raise ConfigError(f"system_prompt must be a string, got {system_prompt!r}")
        self.model = model
        self.system_prompt = system_prompt

    def describe(self) -> dict[str, Any]:
        """The judge for manifests: its model (name, weights hash) and system prompt."""
        return {
            "class": type(self).__name__,
            "model": self.model.name,
            "weights_sha256": self.model.weights_sha256,
            "system_prompt": self.system_prompt,
        }

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        """The probability-weighted mean of 0..100 (``None`` if the probabilities are not finite)."""
        import numpy as np

        probs = self.distribution(prompt, response, criterion)
        if not np.isfinite(probs).all():
            return None
        return float(probs @ np.arange(101, dtype=np.float64))

    def distribution(self, prompt: str, response: str, criterion: Criterion) -> npt.NDArray[np.float64]:
        """Probabilities of the answers 0..100 (101 entries summing to 1)."""
        import numpy as np

        logp = self.answer_logprobs(prompt, response, criterion)
        shifted = np.exp(logp - logp.max())
        return np.asarray(shifted / shifted.sum(), dtype=np.float64)

    def answer_logprobs(self, prompt: str, response: str, criterion: Criterion) -> npt.NDArray[np.float64]:
        """Unnormalised log-probabilities (nats) of the 101 full answers "0<eot>" .. "100<eot>"."""
        tokenizer = self.model.tokenizer
        text = render_chat(tokenizer, judge_messages(prompt, response, criterion, system_prompt=self.system_prompt))
        prompt_ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        candidates = _candidate_ids(tokenizer, text, prompt_ids, _end_of_turn_id(self.model))
        return self._logprobs(prompt_ids, candidates, reuse_cache=True)

    def _logprobs(
        self, prompt_ids: list[int], candidates: list[list[int]], *, reuse_cache: bool = True
    ) -> npt.NDArray[np.float64]:
        """Sum of the token log-probabilities of each candidate after the prompt (nats).

        With ``reuse_cache`` the prompt runs once and its KV cache is shared by the candidates'
        distinct prefixes, one batched forward per token depth (for digit tokenizers: 10 rows,
        then 90, then 1 -- no padding, no position computed twice). Without it, or when the
        model's cache cannot select batch rows, one right-padded batch runs prompt + candidate.
        """
        import numpy as np
        import torch

        from persona_space.models import adapters_disabled

        with torch.inference_mode(), adapters_disabled(self.model):
            total = _cached_logprobs(self.model, prompt_ids, candidates) if reuse_cache else None
            if total is None:
                total = _padded_logprobs(self.model, prompt_ids, candidates)
        return np.asarray(total.double().cpu().numpy(), dtype=np.float64)


def _cached_logprobs(model: LoadedModel, prompt_ids: list[int], candidates: list[list[int]]) -> torch.Tensor | None:
    """Candidate log-probabilities over a prefix tree sharing the prompt's KV cache (``None``: no row select)."""
    import torch

    module, device, plen = model.base_module, model.device, len(prompt_ids)
    prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out = module(input_ids=prompt, attention_mask=torch.ones_like(prompt), use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if not callable(getattr(cache, "batch_select_indices", None)):
        return None
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # one row per distinct prefix of this depth
    rows: dict[tuple[int, ...], int] = {(): 0}
    total = torch.zeros(len(candidates), dtype=torch.float64)  # on the CPU: MPS has no float64
    for depth in range(max(len(c) for c in candidates)):
        which = [i for i, c in enumerate(candidates) if len(c) > depth]
        index = torch.tensor([rows[tuple(candidates[i][:depth])] for i in which], device=device)
        token = torch.tensor([candidates[i][depth] for i in which], device=device)
        total[which] += logp[index, token].cpu().double()
        prefixes = list(dict.fromkeys(tuple(c[: depth + 1]) for c in candidates if len(c) > depth + 1))
        if not prefixes:
            break
        cache.batch_select_indices(torch.tensor([rows[p[:-1]] for p in prefixes], device=device))
        n = len(prefixes)
        logits = module(
            input_ids=torch.tensor([[p[-1]] for p in prefixes], device=device),
            attention_mask=torch.ones((n, plen + depth + 1), dtype=torch.long, device=device),
            position_ids=torch.full((n, 1), plen + depth, dtype=torch.long, device=device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        rows = {p: i for i, p in enumerate(prefixes)}
    return total


def _padded_logprobs(model: LoadedModel, prompt_ids: list[int], candidates: list[list[int]]) -> torch.Tensor:
    """Candidate log-probabilities from one right-padded batch of prompt + candidate rows."""
    import torch

    device, n = model.device, len(candidates)
    width = max(len(c) for c in candidates)
    targets = torch.full((n, width), candidates[0][-1], dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    for i, cand in enumerate(candidates):
        targets[i, : len(cand)] = torch.tensor(cand, dtype=torch.long)
        valid[i, : len(cand)] = True
    targets, valid = targets.to(device), valid.to(device)
    prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device).expand(n, -1)
    inputs = torch.cat([prompt, targets[:, :-1]], dim=1)  # the last candidate token is only predicted
    mask = torch.cat([torch.ones_like(prompt), valid[:, :-1].long()], dim=1)
    positions = torch.arange(inputs.shape[1], device=device).expand(n, -1)
    logits = model.base_module(input_ids=inputs, attention_mask=mask, position_ids=positions, logits_to_keep=width)
    token_lp = torch.log_softmax(logits.logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, token_lp, torch.zeros_like(token_lp)).cpu().double().sum(dim=1)


def _end_of_turn_id(model: LoadedModel) -> int:
    """The token that ends an assistant turn: the tokenizer's eos (``<|im_end|>`` for ChatML)."""
    value = getattr(model.tokenizer, "eos_token_id", None)
    if value is None:
        value = getattr(getattr(model.base_module, "generation_config", None), "eos_token_id", None)
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if not isinstance(value, int):
        raise ModelError(f"model {model.name!r} has no end-of-turn (eos) token id; expected a chat model with one")
    return value


def _candidate_ids(tokenizer: Any, text: str, prompt_ids: Sequence[int], eot: int) -> list[list[int]]:
    """Token ids of each answer "0".."100" as it continues ``text`` (joint tokenization), plus ``eot``."""
    encoded = tokenizer([text + answer for answer in ANSWERS], add_special_tokens=False)["input_ids"]
    plen, out = len(prompt_ids), []
    for answer, ids in zip(ANSWERS, encoded, strict=True):
        ids = [int(i) for i in ids]
        if ids[:plen] != list(prompt_ids) or len(ids) == plen:
            raise ModelError(
                f"the tokenizer merges the answer {answer!r} into the end of the judge prompt "
                f"(prompt ends with ids {list(prompt_ids)[-3:]}, prompt + answer gives {ids[plen - 3 :]}); "
                "expected the rendered prompt's ids to be a prefix of prompt + answer"
            )
        out.append([*ids[plen:], eot])
    return out
