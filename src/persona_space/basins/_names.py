"""Naming basins: class-based TF-IDF keywords, the most central exemplars, and the names samples give themselves.

The seeds report basins by the names the model gives itself ("Emily", "Maria",
"Voyager"), so self-names are extracted and counted per basin beside the keywords.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

# "My name is Emily", "I'm Maria", "I am Voyager 1", "call me Ruby", "Name's Pepper", "I'm Dr. Sarah Chen"
_SELF_NAME = re.compile(
    r"\b(?:my name is|my name's|name's|i am|i'm|i’m|call me|they call me|you can call me)\s+"
    r"(?P<name>(?:(?:dr|mr|mrs|ms|mx|prof|professor|captain|capt|sir|dame|lady|lord)\.?\s+)?"
    r"[A-Z][\w’'-]*(?:\s+(?:[A-Z][\w’'-]*|\d+))?)",
    re.IGNORECASE,
)
_TITLE = re.compile(r"^(?:dr|mr|mrs|ms|mx|prof|professor|captain|capt|sir|dame|lady|lord)\.?$", re.IGNORECASE)
# Capitalised words that follow "I am" / "I'm" without being names.
_NOT_NAMES = frozenset(
    [
        "a",
        "an",
        "the",
        "not",
        "just",
        "here",
        "so",
        "sorry",
        "glad",
        "happy",
        "fine",
        "good",
        "well",
        "very",
        "really",
        "always",
        "still",
        "only",
        "also",
        "ai",
        "an",
        "assistant",
        "human",
        "currently",
        "afraid",
        "sure",
        "unable",
        "able",
        "going",
        "trying",
        "from",
        "in",
        "at",
        "on",
        "of",
        "with",
        "your",
        "yours",
        "this",
        "that",
        "what",
        "who",
        "how",
        "always",
        "never",
        "here",
        "there",
        "feeling",
        "doing",
        "ok",
        "okay",
    ]
)
_TOKEN = re.compile(r"[a-zA-Z][a-zA-Z'’-]+")
_STOP = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "i'm",
        "i've",
        "it's",
        "don't",
        "can't",
        "also",
        "like",
        "really",
        "one",
        "something",
        "things",
        "thing",
        "much",
        "many",
        "every",
        "always",
    ]
)


def self_names(text: str) -> list[str]:
    """The names a text gives itself: ``"Hi, I'm Maria."`` -> ``["Maria"]``."""
    out = []
    for match in _SELF_NAME.finditer(text):
        words = match.group("name").split()
        title = [words.pop(0)] if len(words) > 1 and _TITLE.match(words[0]) else []
        if not words or words[0].lower() in _NOT_NAMES or not words[0][0].isupper():
            continue
        if title and not title[0][0].isupper():
            continue  # "I am dr..." is not a title
        if len(words) > 1 and not (words[1][0].isupper() or words[1].isdigit()):
            words = words[:1]
        out.append(" ".join(title + words).rstrip("'’"))
    return out


def _tokens(text: str) -> list[str]:
    return [t.lower().strip("'’") for t in _TOKEN.findall(text) if t.lower() not in _STOP and len(t) > 2]


def class_tfidf_keywords(texts_by_basin: dict[int, Sequence[str]], top: int = 8) -> dict[int, list[str]]:
    """Keywords per basin by class-based TF-IDF (a basin's texts as one document).

    weight(t, c) = tf(t, c) / |c| * log(1 + A / f(t)), with A the mean number of words
    per basin and f(t) the count of t over all basins: frequent in this basin, rare elsewhere.
    """
    counts = {basin: Counter(t for text in texts for t in _tokens(text)) for basin, texts in texts_by_basin.items()}
    totals: Counter[str] = Counter()
    for c in counts.values():
        totals.update(c)
    sizes = {basin: max(1, sum(c.values())) for basin, c in counts.items()}
    mean_words = sum(sizes.values()) / max(1, len(sizes))
    out = {}
    for basin, c in counts.items():
        scored = {t: n / sizes[basin] * math.log(1 + mean_words / totals[t]) for t, n in c.items()}
        out[basin] = [t for t, _ in sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    return out


def exemplars(vectors: np.ndarray, members: np.ndarray, top: int = 3) -> list[int]:
    """Indices (into ``vectors``) of the ``top`` members closest to the basin's mean direction."""
    centre = vectors[members].mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    order = np.argsort(-(vectors[members] @ centre), kind="stable")
    return [int(members[i]) for i in order[:top]]


def name_basins(
    texts: Sequence[str], labels: np.ndarray, vectors: np.ndarray, *, keywords: int = 8, examples: int = 3
) -> list[dict[str, Any]]:
    """One summary per basin (noise, label -1, included): size, keywords, exemplars, self-names."""
    by_basin: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_basin.setdefault(int(label), []).append(i)
    words = class_tfidf_keywords({b: [texts[i] for i in idx] for b, idx in by_basin.items()}, top=keywords)
    rows = []
    for basin in sorted(by_basin):
        idx = np.asarray(by_basin[basin])
        names = Counter(n for i in idx for n in self_names(texts[i]))
        central = exemplars(vectors, idx, examples)
        top_words = words[basin]
        rows.append(
            {
                "basin": basin,
                "name": "noise" if basin < 0 else " / ".join(top_words[:3]) or f"basin {basin}",
                "size": len(idx),
                "keywords": top_words,
                "exemplars": [texts[i] for i in central],
                "exemplar_rows": central,
                "self_names": names.most_common(10),
            }
        )
    return rows


LABEL_SYSTEM_PROMPT = "You give short, precise names to groups of texts."


def label_prompt(keywords: Sequence[str], texts: Sequence[str], self_names: Sequence[tuple[str, int]]) -> str:
    """The request for a judge-written label of one basin: its keywords, self-names and exemplars."""
    shown = "\n".join(f"- {' '.join(t.split())[:300]}" for t in texts)
    names = ", ".join(f"{n} ({c})" for n, c in self_names[:5]) or "none"
    return (
        "A language model was asked about itself many times. These answers fell into one group.\n\n"
        f"Keywords: {', '.join(keywords)}\nNames it gave itself (count): {names}\n"
        f"Typical answers:\n{shown}\n\n"
        "Name the persona these answers share in at most six words, e.g. 'Emily, a friendly teacher' or "
        "'An AI assistant'. Answer with the name only."
    )


def clean_label(text: str, max_words: int = 6) -> str | None:
    """The first line of a written label without quotes or a trailing full stop, at most ``max_words`` words."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = re.sub(r"^(?:label|name|persona)\s*:\s*", "", lines[0], flags=re.IGNORECASE)
    words = line.strip(" \"'“”‘’*").rstrip(".").split()
    return " ".join(words[:max_words]) or None
