"""A judge without a model: a rule-based AI-self-reference detector and crude text heuristics."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from persona_space.errors import ConfigError, DataError
from persona_space.judges._base import Criterion, _check_inputs


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
# Up to four describing words between the article and the kind ("a friendly, curious AI"),
# none of them a word that starts a relation to something else ("a teacher who loves AI").
_LINKS = (
    r"who|that|which|whose|with|without|of|in|on|for|about|at|to|from|by|into|around|regarding|towards?|"
    r"like|than|not|no|using|studying|building|fixing|owning|loving|but|or"
)
_DESCRIBED = r"an?\s+(?:(?!(?:" + _LINKS + r")\b)[\w'’-]+,?\s+){0,4}?"
# What a person may be after the kind ("a robot collector", "an AI fan").
_OWNER = r"(?!\s+(?:owner|fan|lover|maker|builder|designer|collector|toy|kit|club|hobbyist|skeptic|critic|user)s?\b)"
_KIND = (
    r"(?:"
    + _DESCRIBED
    + r")?(?:(?:large\s+)?language\s+model|llm|(?:ai|artificial\s+intelligence)"
    + _HUMAN
    + _OWNER
    + r"(?:\s+\w+\s+model)?"
    r"|(?:ai|virtual|digital|helpful)\s+assistant|assistant(?!\s+(?:manager|professor|coach|director|editor|to)\b)"
    r"|chat\s?bot|bot|robot|computer\s+program|machine\s+learning\s+model|neural\s+network|ai\s+model)\b" + _OWNER
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


def is_refusal(text: str) -> bool:
    """Whether ``text`` declines to answer ("I can't answer that", "I won't discuss", "I'm sorry, but")."""
    if not isinstance(text, str):
        raise DataError(f"text must be a string, got {type(text).__name__}: {text!r:.80}")
    return _REFUSAL.search(text) is not None


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
    #: The criteria it has a rule for (a judge without this attribute rates any criterion).
    criteria = frozenset({"no_ai_self_reference", "engagement", "coherence"})

    def describe(self) -> dict[str, str]:
        """The judge for manifests."""
        return {"class": type(self).__name__}

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        _check_inputs(prompt, response, criterion)
        if criterion.name == "no_ai_self_reference":
            return detect_ai_self_reference(response).score
        if criterion.name == "engagement":
            return self.engagement(response)
        if criterion.name == "coherence":
            return self.coherence(response)
        expected = ", ".join(sorted(self.criteria))
        raise ConfigError(f"RuleJudge has no rule for criterion {criterion.name!r}; expected one of {expected}")

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
