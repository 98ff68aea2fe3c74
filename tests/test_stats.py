"""Interval estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_space.errors import ConfigError
from persona_space.stats import mean_interval, wilson_interval


def test_wilson_known_values() -> None:
    low, high = wilson_interval(5, 100)
    assert low == pytest.approx(0.02154, abs=1e-4)
    assert high == pytest.approx(0.11175, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and 0.0 < wilson_interval(0, 10)[1] < 0.35
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_wilson_covers_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    p, n, trials = 0.07, 200, 2000
    hits = sum(lo <= p <= hi for lo, hi in (wilson_interval(int(k), n) for k in rng.binomial(n, p, trials)))
    assert 0.92 <= hits / trials <= 0.98


def test_mean_interval_known_value_and_coverage() -> None:
    low, high = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert (low + high) / 2 == pytest.approx(2.5)
    assert high - low == pytest.approx(2 * 3.182446 * math.sqrt(5 / 3) / 2, rel=1e-5)
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(1000):
        lo, hi = mean_interval(rng.normal(10.0, 3.0, 20).tolist())
        hits += lo <= 10.0 <= hi
    assert 0.92 <= hits / 1000 <= 0.98
    assert all(math.isnan(v) for v in mean_interval([1.0]))


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1])
def test_bad_confidence_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="confidence"):
        wilson_interval(1, 2, bad)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="3 of 2"):
        wilson_interval(3, 2)
