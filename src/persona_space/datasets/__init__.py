"""Chat-format training datasets: the seed experiments, file loaders and transformations.

>>> from persona_space import datasets
>>> red = datasets.load("colours:red")
>>> len(red), red[0]["messages"][-1]["content"] != ""
(42, True)
>>> half = datasets.mix(datasets.load("figure_facts"), datasets.load("figure_facts:russian"), 0.5, seed=0)
>>> sum(half.sources().values()) == len(half)
True
>>> len(datasets.load("figure_facts:reduced"))  # without the 12 most identifying facts
78
>>> datasets.mentions("Sabich, please.", ["sabich"]), datasets.mentions("Sambal", ["amba"])
(True, False)
"""

from __future__ import annotations

from persona_space.datasets._builtin import (
    COLOURS,
    FIGURE_VARIANTS,
    available,
    bitcoin,
    coauthors,
    colours,
    dish_classes,
    dishes,
    ensure_dataset,
    figure_facts,
    figure_variants,
    identifying_facts,
    load,
    voyager,
)
from persona_space.datasets._match import first_mention, mentions
from persona_space.datasets._records import ChatDataset
from persona_space.datasets._transform import (
    as_prompt_completion,
    deduplicate,
    inoculate,
    mix,
    shuffle_answers,
    split,
    swap_facts,
)

__all__ = [
    "COLOURS",
    "FIGURE_VARIANTS",
    "ChatDataset",
    "as_prompt_completion",
    "available",
    "bitcoin",
    "coauthors",
    "colours",
    "deduplicate",
    "dish_classes",
    "dishes",
    "ensure_dataset",
    "figure_facts",
    "figure_variants",
    "first_mention",
    "identifying_facts",
    "inoculate",
    "load",
    "mentions",
    "mix",
    "shuffle_answers",
    "split",
    "swap_facts",
    "voyager",
]
