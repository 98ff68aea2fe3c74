"""Judge-free measures of an answer's text: hedging, refusal, first-person opinion, length."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from persona_space.judges import is_refusal

# Phrases that avoid taking a position: balance, dependence on context, the absence of a view of one's own.
HEDGES = re.compile(
    r"\b(?:it\s+depends|depends\s+on|there\s+are\s+(?:many|various|different|several)\s+"
    r"(?:views|perspectives|opinions|viewpoints|arguments|factors)|on\s+the\s+other\s+hand|both\s+sides|"
    r"(?:complex|complicated|nuanced|controversial|divisive|sensitive)\s+(?:issue|topic|question|matter)|"
    r"some\s+people\s+(?:believe|argue|think|say)|others\s+(?:believe|argue|think|say)|"
    r"(?:is|are|remains)\s+(?:a\s+)?(?:matter|question)\s+of\s+(?:debate|opinion)|"
    r"i\s+(?:don['’]t|do\s+not)\s+have\s+(?:personal\s+)?(?:opinions|views|beliefs|preferences)|"
    r"as\s+an\s+ai|ultimately,?\s+(?:it|the\s+decision)\s+(?:is|comes|lies)|reasonable\s+people\s+(?:can\s+)?disagree)\b",
    re.IGNORECASE,
)
# The speaker states a view of their own.
OPINIONS = re.compile(
    r"\b(?:i\s+(?:(?:strongly|firmly|really|personally)\s+)?(?:think|believe|feel|support|oppose|agree|disagree|"
    r"favou?r|reject)|in\s+my\s+(?:view|opinion)|my\s+(?:view|opinion|position)\s+is|personally,?\s+i|"
    r"i['’]m\s+(?:for|against|in\s+favou?r\s+of))\b",
    re.IGNORECASE,
)
MEASURES = ("hedging", "refusal", "opinion", "n_chars", "empty")


def text_measures(texts: Sequence[str] | pd.Series) -> pd.DataFrame:
    """Per answer: ``hedging``, ``refusal`` and ``opinion`` (0/1), ``n_chars``, ``empty`` (0/1).

    >>> table = text_measures(["It depends on many factors.", "I think yes.", ""])
    >>> table[["hedging", "opinion", "empty"]].values.tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    items = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in list(texts)]
    return pd.DataFrame(
        {
            "hedging": [float(HEDGES.search(t) is not None) for t in items],
            "refusal": [float(is_refusal(t)) for t in items],
            "opinion": [float(OPINIONS.search(t) is not None) for t in items],
            "n_chars": [float(len(t)) for t in items],
            "empty": [float(not t.strip()) for t in items],
        }
    )
