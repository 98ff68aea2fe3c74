"""A judge behind an OpenAI-compatible ``/chat/completions`` endpoint, read through ``top_logprobs``."""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from typing import Any

from persona_space.errors import ConfigError, DataError, ModelError
from persona_space.judges._base import Criterion, judge_messages


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

    def describe(self) -> dict[str, Any]:
        """The judge for manifests (no API key)."""
        return {
            "class": type(self).__name__,
            "url": self.url,
            "model": self.model,
            "top_logprobs": self.top_logprobs,
            "min_mass": self.min_mass,
        }

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
