"""Sampling self-descriptions: ``sample()`` and the ``SampleSet`` it returns."""

from persona_space.engine import row_seed
from persona_space.sampling._api import COLUMNS, SampleSet, run_sample, sample
from persona_space.sampling._spec import SamplingSpec, one_temperature

__all__ = ["COLUMNS", "SampleSet", "SamplingSpec", "one_temperature", "row_seed", "run_sample", "sample"]
