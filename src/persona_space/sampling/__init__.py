"""Sampling self-descriptions: ``sample()`` and the ``SampleSet`` it returns."""

from persona_space.engine import row_seed
from persona_space.sampling._api import COLUMNS, SampleSet, sample
from persona_space.sampling._spec import SamplingSpec

__all__ = ["COLUMNS", "SampleSet", "SamplingSpec", "row_seed", "sample"]
