"""Sampling self-descriptions: ``sample()`` and the ``SampleSet`` it returns."""

from persona_space.sampling._api import COLUMNS, SampleSet, SamplingSpec, row_seed, sample

__all__ = ["COLUMNS", "SampleSet", "SamplingSpec", "row_seed", "sample"]
