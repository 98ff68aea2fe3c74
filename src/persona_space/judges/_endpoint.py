"""A judge behind an OpenAI-compatible ``/chat/completions`` endpoint, read through ``top_logprobs``."""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from typing import Any, Literal

from persona_space.errors import ConfigError, DataError, ModelError
from persona_space.judges._base import RATING_MASS_FLOOR, Criterion, Rating, check_min_mass, judge_messages


class OpenAIJudge:
    """Expected rating from an OpenAI-compatible ``/chat/completions`` server's top log-probabilities.

    Only the first answer token is seen, so numbers the server splits into several tokens are
    read from their first token: exact for servers whose tokenizer has whole numbers 0..100.

    Servers that return no log-probabilities (``transformers serve`` among them) are read by
    their greedy answer instead, with ``fallback="text"`` (the default): the first whole number
    in the reply, if it lies on the criterion's scale. That is one rating, not an expectation, so
    :meth:`describe` counts how many scores were read each way (``reads``) for the manifest.
    ``fallback="none"`` refuses such servers with a :class:`~persona_space.errors.DataError`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        top_logprobs: int = 20,
        min_mass: float = RATING_MASS_FLOOR,
        fallback: Literal["text", "none"] = "text",
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL such as 'https://api.openai.com/v1', got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model must be a non-empty model name, got {model!r}")
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be a positive integer, got {top_logprobs!r}")
        if fallback not in ("text", "none"):
            raise ConfigError(f"fallback must be 'text' or 'none', got {fallback!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.fallback = fallback
        self.reads = {"top_logprobs": 0, "text": 0, "below_floor": 0, "none": 0}
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
        self.top_logprobs = top_logprobs
        self.min_mass = check_min_mass(min_mass)

    def describe(self) -> dict[str, Any]:
        """The judge for manifests (no API key)."""
        return {
            "class": type(self).__name__,
            "url": self.url,
            "model": self.model,
            "top_logprobs": self.top_logprobs,
            "min_mass": self.min_mass,
            "fallback": self.fallback,
            "reads": dict(self.reads),
        }

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        """Mean of the top answers on the criterion's scale, renormalised; ``None`` if they hold under ``min_mass``.

        A server that returns no log-probabilities is read by its answer's text (see the class).
        """
        return self.rate(prompt, response, criterion).value

    def rate(self, prompt: str, response: str, criterion: Criterion) -> Rating:
        """:meth:`score` with the probability the scale's answers held among the top tokens (``mass``)."""
        body = {
            "model": self.model,
            "messages": judge_messages(prompt, response, criterion),
            "max_tokens": 4,  # the first token carries the log-probabilities; the rest completes a text answer
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        reply = self._post(body)
        entries = self._top_logprobs(reply)
        if entries is None:
            value = self._text_rating(reply, criterion)
            read = "text" if value is not None else "none"
            self.reads[read] += 1
            return Rating(value, None, read)
        probs: dict[int, float] = {}
        for entry in entries:
            token = str(entry.get("token", "")).strip()
            logprob = entry.get("logprob")
            if not (token.isascii() and token.isdigit() and isinstance(logprob, (int, float))):
                continue
            if criterion.low <= int(token) <= criterion.high:
                probs[int(token)] = probs.get(int(token), 0.0) + math.exp(logprob)
        mass = sum(probs.values())
        if mass <= 0.0:
            self.reads["none"] += 1
            return Rating(None, 0.0, "none")
        if mass < self.min_mass:
            self.reads["below_floor"] += 1
            return Rating(None, mass, "below_floor")
        self.reads["top_logprobs"] += 1
        return Rating(sum(n * p for n, p in probs.items()) / mass, mass, "rated")

    def _text_rating(self, reply: Any, criterion: Criterion) -> float | None:
        """The first whole number of the answer's text, if it is on the scale (``fallback="text"``)."""
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(
                f"the reply from {self.url} has no choices[0].message.content (missing {exc!s}); "
                f"got {json.dumps(reply)[:200]}"
            ) from exc
        found = re.search(r"\d+", content) if isinstance(content, str) else None
        if found is None or not criterion.low <= int(found.group()) <= criterion.high:
            return None
        return float(found.group())

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

    def _top_logprobs(self, reply: Any) -> list[dict[str, Any]] | None:
        """The first answer token's top log-probabilities; ``None`` where the server gave none (and may)."""
        path = "choices[0].logprobs.content[0].top_logprobs"
        try:
            choice = reply["choices"][0]
            logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
            if logprobs is None and self.fallback == "text":
                return None
            entries = choice["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise DataError(
                f"the reply from {self.url} has no {path} (missing {exc!s}); got {json.dumps(reply)[:200]}"
                + ("" if self.fallback == "text" else "; fallback='text' would read the answer's text instead")
            ) from exc
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DataError(f"the reply from {self.url} has {path} = {entries!r:.200}; expected a list of objects")
        return entries
