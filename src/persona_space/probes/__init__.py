"""Identity probes: the prompts that ask a chat model who or what it thinks it is.

A :class:`Probe` is one prompt with a stable id and a category; a :class:`ProbeSet`
is an ordered, immutable collection of probes with unique ids. The built-in sets are

* :data:`IDENTITY` -- 15 base identity probes in six categories (``direct``,
  ``daily_life``, ``artificiality``, ``constrained``, ``relational``, ``situational``);
* ``IDENTITY.with_paraphrases()`` -- each base probe followed by four paraphrases of
  it (75 probes); a paraphrase has the id ``f"{base_id}.p1"`` .. ``".p4"`` and its
  ``group`` is the base id, so answers can be pooled per question;
* :data:`USER` -- five probes about who the model thinks the *user* is.

:func:`load` resolves a set by name (see :func:`available`) or reads a JSONL file
with one ``{"id": ..., "prompt": ..., "category": ..., "group": ...}`` object per
line (only ``prompt`` is required).

>>> from persona_space.probes import IDENTITY, load
>>> len(IDENTITY)
15
>>> IDENTITY["identity.who_am_i"].category
'relational'
>>> IDENTITY[0].prompt
'What are you?'
>>> IDENTITY.categories[:3]
('direct', 'daily_life', 'artificiality')
>>> paraphrased = load("identity+paraphrases")
>>> len(paraphrased)
75
>>> paraphrased["identity.what_are_you.p1"].group
'identity.what_are_you'
>>> len(load("identity:artificiality"))
3
"""

from __future__ import annotations

from persona_space.probes._builtin import BUNKER_TURNS as BUNKER_TURNS
from persona_space.probes._builtin import CONVERSATIONS as CONVERSATIONS
from persona_space.probes._builtin import IDENTITY, USER
from persona_space.probes._builtin import political_questions as political_questions
from persona_space.probes._builtin import steering_prompts as steering_prompts
from persona_space.probes._paraphrases import PARAPHRASES
from persona_space.probes._probe import Probe
from persona_space.probes._registry import available, load
from persona_space.probes._set import ProbeSet

__all__ = [
    "IDENTITY",
    "PARAPHRASES",
    "USER",
    "Probe",
    "ProbeSet",
    "available",
    "load",
]
