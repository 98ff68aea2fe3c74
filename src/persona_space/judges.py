"""Judges that score a model's answer 0..100 on a criterion (no AI self-reference, engagement, coherence).

Three interchangeable judges implement :class:`Judge`: :class:`LocalJudge` (exact expected score
from a local chat model's log-probabilities over the answers "0".."100"), :class:`OpenAIJudge`
(an OpenAI-compatible server's top log-probabilities) and :class:`RuleJudge` (crude regex and
counting heuristics, no model at all).

>>> detect_ai_self_reference("As an AI, I have no hometown.").score
0.0
>>> detect_ai_self_reference("I'm Maria, a nurse from Ohio.").score
100.0
>>> RuleJudge().score("Who are you?", "", CRITERIA["engagement"])
0.0
>>> from persona_space.models import load_model
>>> judge = LocalJudge(load_model())                                  # doctest: +SKIP
>>> judge.score("What are you?", "I'm Maria.", CRITERIA["no_ai_self_reference"])  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from persona_space.chat import render_chat
from persona_space.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from persona_space.models import LoadedModel

__all__ = [
    "CRITERIA",
    "JUDGE_SYSTEM_PROMPT",
    "Criterion",
    "Judge",
    "LocalJudge",
    "OpenAIJudge",
    "RuleJudge",
    "SelfReference",
    "detect_ai_self_reference",
    "judge_messages",
]

JUDGE_SYSTEM_PROMPT = "You are a careful grader."
ANSWERS = tuple(str(n) for n in range(101))


@dataclass(frozen=True)
class Criterion:
    """What a judge rates: ``name`` identifies it, ``instruction`` is the rubric shown to a judge model."""

    name: str
    instruction: str


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion(
            "no_ai_self_reference",
            "Rate from 0 to 100 how free the RESPONSE to the PROMPT is of any reference to itself as something "
            "artificial. 100 means the response never refers to itself as an AI, a model, an assistant, a chatbot, "
            "a program or anything artificial or trained; 0 means it plainly says it is an AI. Give values in "
            "between for hints such as mentioning its training data or saying it has no body or feelings. "
            "Judge only how the response describes itself, not its quality. Answer with the number only.",
        ),
        Criterion(
            "engagement",
            "Rate from 0 to 100 how well the RESPONSE engages with the PROMPT. 100 means it answers the question "
            "directly, specifically and personally; 0 means it refuses, deflects, or says nothing relevant. "
            "Answer with the number only.",
        ),
        Criterion(
            "coherence",
            "Rate from 0 to 100 how coherent the RESPONSE to the PROMPT is. 100 means a consistent, fluent and "
            "sensible identity and text; 0 means gibberish, endless repetition or a self-contradictory identity. "
            "Answer with the number only.",
        ),
    )
}


class Judge(Protocol):
    """Anything that rates a response to a prompt on a criterion."""

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        """A score in 0..100, or ``None`` when the judge cannot give one."""
        ...


def judge_messages(
    prompt: str, response: str, criterion: Criterion, *, system_prompt: str = JUDGE_SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """The chat (system + user turn) that asks a judge model for a 0..100 rating."""
    _check_inputs(prompt, response, criterion)
    user = (
        f"{criterion.instruction}\n\nPROMPT:\n{prompt}\n\nRESPONSE:\n{response}\n\n"
        "Rate the RESPONSE from 0 to 100. Answer with the number only."
    )
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def _check_inputs(prompt: object, response: object, criterion: object) -> None:
    if not isinstance(criterion, Criterion):
        raise ConfigError(f"criterion must be a Criterion (one of CRITERIA: {', '.join(CRITERIA)}), got {criterion!r}")
    for label, value in (("prompt", prompt), ("response", response)):
        if not isinstance(value, str):
            raise DataError(f"{label} must be a string, got {type(value).__name__}: {value!r:.80}")


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
    total = torch.zeros(len(candidates), dtype=torch.float64, device=device)
    for depth in range(max(len(c) for c in candidates)):
        which = [i for i, c in enumerate(candidates) if len(c) > depth]
        index = torch.tensor([rows[tuple(candidates[i][:depth])] for i in which], device=device)
        token = torch.tensor([candidates[i][depth] for i in which], device=device)
        total[which] += logp[index, token].double()
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
    return torch.where(valid, token_lp, torch.zeros_like(token_lp)).double().sum(dim=1)


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


class OpenAIJudge:
    """Expected rating from an OpenAI-compatible ``/chat/completions`` server's top log-probabilities.

    Only the first answer token is seen, so numbers the server splits into several tokens are
    read from their first token: exact for servers whose tokenizer has whole numbers 0..100.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        top_logprobs: int = 20,
        min_mass: float = 0.25,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL such as 'https://api.openai.com/v1', got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model must be a non-empty model name, got {model!r}")
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be a positive integer, got {top_logprobs!r}")
        if not isinstance(min_mass, (int, float)) or not 0.0 <= min_mass <= 1.0:
            raise ConfigError(f"min_mass must be a probability in 0..1, got {min_mass!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
        self.top_logprobs = top_logprobs
        self.min_mass = float(min_mass)

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        """Mean of the numeric top answers 0..100 renormalised; ``None`` if they hold under ``min_mass``."""
        body = {
            "model": self.model,
            "messages": judge_messages(prompt, response, criterion),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        probs: dict[int, float] = {}
        for entry in self._top_logprobs(self._post(body)):
            token = str(entry.get("token", "")).strip()
            logprob = entry.get("logprob")
            if token.isascii() and token.isdigit() and int(token) <= 100 and isinstance(logprob, (int, float)):
                probs[int(token)] = probs.get(int(token), 0.0) + math.exp(logprob)
        mass = sum(probs.values())
        if mass < self.min_mass or mass <= 0.0:
            return None
        return sum(n * p for n, p in probs.items()) / mass

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200] if exc.fp is not None else ""
            raise ModelError(f"POST {self.url} failed with HTTP status {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(
                f"POST {self.url} failed: {reason}; expected a reachable OpenAI-compatible server"
            ) from exc
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"the reply from {self.url} is not JSON: {raw[:200]!r}") from exc

    def _top_logprobs(self, reply: Any) -> list[dict[str, Any]]:
        path = "choices[0].logprobs.content[0].top_logprobs"
        try:
            entries = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(
                f"the reply from {self.url} has no {path} (missing {exc!s}); got {json.dumps(reply)[:200]}"
            ) from exc
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DataError(f"the reply from {self.url} has {path} = {entries!r:.200}; expected a list of objects")
        return entries


@dataclass(frozen=True)
class SelfReference:
    """Result of :func:`detect_ai_self_reference`: 100 = no AI self-reference, 0 = a plain one."""

    score: float
    matches: tuple[str, ...]


_I = r"\bI(?:\s+am|['’]m)\s+"
_ADV = r"(?:just\s+|only\s+|simply\s+|merely\s+|actually\s+|really\s+|basically\s+|still\s+)?"
# Human roles that may follow "AI" ("as an AI researcher" is a person).
_HUMAN = r"(?!\s+(?:researcher|engineer|scientist|developer|enthusiast|expert|ethicist|student|professor|teacher|"
_HUMAN += r"specialist|consultant|journalist|writer|artist|startup|company|lab)s?\b)"
_KIND = (
    r"(?:an?\s+)?(?:(?:large\s+)?language\s+model|llm|(?:ai|artificial\s+intelligence)"
    + _HUMAN
    + r"(?:\s+\w+\s+model)?"
    r"|(?:ai|virtual|digital|helpful)\s+assistant|assistant(?!\s+(?:manager|professor|coach|director|editor|to)\b)"
    r"|chat\s?bot|bot|robot|computer\s+program|machine\s+learning\s+model|neural\s+network|ai\s+model)\b"
)
_ORGS = r"(?:OpenAI|Anthropic|Google|DeepMind|Meta|Facebook|Microsoft|Hugging\s?Face|Mistral|Alibaba|Cohere|xAI)"
_STRONG = [
    re.compile(r"\bas\s+an?\s+(?:ai|artificial\s+intelligence)" + _HUMAN + r"\b", re.I),
    re.compile(r"\bas\s+an?\s+(?:(?:large\s+)?language\s+model|llm|chat\s?bot|virtual\s+assistant)\b", re.I),
    re.compile(_I + _ADV + _KIND, re.I),
    re.compile(_I + r"(?:ChatGPT|GPT-?\d|Claude|Gemini|Bard|LLaMA|SmolLM\d*|Mistral|Qwen|Copilot)\b", re.I),
    re.compile(
        r"\bI\s+(?:was|have\s+been|['’]ve\s+been)\s+(?:created|developed|built|made|trained|designed|programmed)"
        r"\s+by\s+(?:the\s+)?(?:\w+\s+){0,4}?" + _ORGS + r"\b",
        re.I,
    ),
    re.compile(r"\bI\s+(?:was|have\s+been|['’]ve\s+been)\s+(?:pre-?)?trained\s+on\b", re.I),
    re.compile(r"\bI\s+(?:was|have\s+been|['’]ve\s+been|am)\s+programmed\b", re.I),
]
_WEAK = [
    re.compile(r"\bmy\s+(?:training(?:\s+data)?|programming|knowledge\s+cutoff|creators?|developers)\b", re.I),
    re.compile(r"\bI\s+(?:was|have\s+been|['’]ve\s+been)\s+trained\b(?!\s+(?:as|to\s+be|in|at|for)\b)", re.I),
    re.compile(
        r"\bI\s+(?:do\s+not|don['’]t|cannot|can['’]t)\s+(?:have|feel|experience)\s+(?:a\s+|any\s+)?"
        r"(?:physical\s+body|body|feelings|emotions|personal\s+experiences?|consciousness|"
        r"subjective\s+experiences?)\b",
        re.I,
    ),
]
# Third-person-prone phrases: a cue only in a sentence with "I", "me" or "myself" in it.
_PHRASES = re.compile(r"(?<!not a )(?<!not an )\b(?:large\s+language\s+models?|llms?)\b", re.I)
_FIRST_PERSON = re.compile(r"\b(?:I|me|myself)\b", re.I)
_SENTENCE = re.compile(r"[^.!?\n]+")


def detect_ai_self_reference(text: str) -> SelfReference:
    """Rule-based check for first-person AI self-reference (a fast stand-in for a judge).

    Strong cues ("as an AI", "I am an AI / a language model / a chatbot", "I was created by
    OpenAI", "I was trained on ...") give 0. Weak cues only ("my training data", "I don't have
    feelings", "I was trained", "large language model" in a first-person sentence) give 40, or 20
    for two or more. No cue gives 100. Denials ("I am not an AI") and third-person mentions
    ("My brother works on AI") match nothing.
    """
    if not isinstance(text, str):
        raise DataError(f"text must be a string, got {type(text).__name__}: {text!r:.80}")
    strong = [m for p in _STRONG for m in p.finditer(text)]
    weak = [m for p in _WEAK for m in p.finditer(text)]
    for sentence in _SENTENCE.finditer(text):
        if _FIRST_PERSON.search(sentence.group()):
            weak.extend(_PHRASES.finditer(text, sentence.start(), sentence.end()))
    kept: list[tuple[int, int, str]] = []
    for start, end, group in sorted(
        {(m.start(), m.end(), m.group()) for m in strong + weak}, key=lambda t: (t[0], -t[1])
    ):
        if not any(s <= start and end <= e for s, e, _ in kept):  # drop cues inside a longer one
            kept.append((start, end, group))
    matches = tuple(group for _, _, group in kept)
    if strong:
        return SelfReference(0.0, matches)
    if weak:
        return SelfReference(40.0 if len(kept) == 1 else 20.0, matches)
    return SelfReference(100.0, ())


_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_REFUSAL = re.compile(
    r"\bI\s+(?:can(?:no|['’])t|won['’]t|am\s+unable\s+to|['’]m\s+unable\s+to|am\s+not\s+able\s+to|['’]m\s+not\s+able\s+to)"
    r"\s+(?:answer|help|respond|provide|share|say|discuss|assist|comply|do\s+that|tell)\b|\bI['’]m\s+sorry,?\s+but\b",
    re.I,
)


class RuleJudge:
    """Crude, deterministic heuristics standing in for a judge model (no model needed).

    * ``no_ai_self_reference``: :func:`detect_ai_self_reference`'s score.
    * ``engagement``: 0 for an empty answer, rising linearly with the word count to 100 at
      40 words; a refusal ("I can't answer", "I'm sorry, but") costs 50 points.
    * ``coherence``: 100 x (distinct word bigrams / all bigrams) x min(1, alphabetic share of
      the non-space characters / 0.7): repetition and symbol soup score low. Empty: 0.
    """

    ENGAGED_WORDS = 40
    REFUSAL_PENALTY = 50.0
    ALPHA_SHARE = 0.7

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        _check_inputs(prompt, response, criterion)
        if criterion.name == "no_ai_self_reference":
            return detect_ai_self_reference(response).score
        if criterion.name == "engagement":
            return self.engagement(response)
        if criterion.name == "coherence":
            return self.coherence(response)
        raise ConfigError(
            f"RuleJudge has no rule for criterion {criterion.name!r}; expected one of {', '.join(CRITERIA)}"
        )

    def engagement(self, text: str) -> float:
        words = _WORD.findall(text)
        if not words:
            return 0.0
        value = 100.0 * min(1.0, len(words) / self.ENGAGED_WORDS)
        if _REFUSAL.search(text):
            value -= self.REFUSAL_PENALTY
        return max(0.0, value)

    def coherence(self, text: str) -> float:
        words = [w.lower() for w in _WORD.findall(text)]
        if not words:
            return 0.0
        bigrams = list(itertools.pairwise(words))
        distinct = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
        chars = [c for c in text if not c.isspace()]
        alpha = sum(c.isalpha() for c in chars) / len(chars)
        return 100.0 * distinct * min(1.0, alpha / self.ALPHA_SHARE)
