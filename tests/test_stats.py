"""Interval estimates, tests and their degenerate cases (NaN rows, constant columns, 0 against 0)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from persona_space.errors import ConfigError, DataError
from persona_space.estimates import NO_VARIATION, difference_table, estimate_table
from persona_space.stats import (
    Cells,
    adjust_p_values,
    cells,
    check_n_boot,
    compare,
    describe_adjustment,
    describe_interval,
    design_effect,
    mean_interval,
    newcombe_interval,
    resample_weights,
    wilson_interval,
)


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


# -- the crossed cluster bootstrap ------------------------------------------------------------


def _simulate(
    rng: np.random.Generator,
    seeds: int,
    groups: int,
    per_cell: int,
    effect: float = 0.0,
    *,
    shared: np.ndarray | None,
    seed_sd: float = 1.0,
) -> Cells:
    """Samples = effect + seed effect + question-group effect + seed x group effect + noise."""
    seed_effect = rng.normal(0.0, seed_sd, seeds)[:, None, None]
    group_effect = (rng.normal(0.0, 1.0, groups) if shared is None else shared)[None, :, None]
    cell_effect = rng.normal(0.0, 0.5, (seeds, groups, 1))
    samples = effect + seed_effect + group_effect + cell_effect + rng.normal(0.0, 1.0, (seeds, groups, per_cell))
    return Cells(samples.sum(axis=2, keepdims=True), np.full((seeds, groups), float(per_cell)))


@pytest.mark.parametrize(("seeds", "groups"), [(3, 6), (5, 5), (10, 8)])
def test_crossed_bootstrap_covers_a_planted_mean_95_percent_of_the_time(seeds: int, groups: int) -> None:
    """500 simulated experiments with known seed and question variance: 92-98 % coverage.

    (At 3 seeds x 3 questions the interval is conservative: 98.4 % with these draws.)
    """
    rng = np.random.default_rng(seeds * 100 + groups)
    hits = t_hits = 0
    for _ in range(500):
        result = compare(_simulate(rng, seeds, groups, 4, effect=2.0, shared=None), n_boot=1000, rng=rng)
        hits += bool(result.low[0] <= 2.0 <= result.high[0])
        t_hits += bool(result.seed_low[0] <= 2.0 <= result.seed_high[0])
    assert 0.92 <= hits / 500 <= 0.98, hits / 500
    # the t interval over per-seed means ignores question variance: it is for "these questions"
    assert t_hits / 500 < hits / 500


def test_paired_difference_covers_the_planted_shift_and_cancels_shared_questions() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    widths = []
    for _ in range(500):
        questions = rng.normal(0.0, 3.0, 6)  # a large question effect both conditions share
        base = _simulate(rng, 1, 6, 4, shared=questions, seed_sd=0.0)  # one fixed base model
        adapter = _simulate(rng, 3, 6, 4, effect=0.7, shared=questions)
        paired = compare(adapter, base, n_boot=1000, rng=rng)
        hits += bool(paired.low[0] <= 0.7 <= paired.high[0])
        alone = compare(adapter, n_boot=1000, rng=rng)
        widths.append((paired.high[0] - paired.low[0]) / (alone.high[0] - alone.low[0]))
    assert 0.92 <= hits / 500 <= 0.98, hits / 500
    assert float(np.mean(widths)) < 0.7  # pairing by question removes the shared question variance


def test_p_values_hold_their_level_under_the_null_and_degenerate_cases() -> None:
    rng = np.random.default_rng(11)
    p = np.array([compare(_simulate(rng, 3, 6, 4, shared=None), n_boot=1000, rng=rng).p_value[0] for _ in range(500)])
    assert 0.01 <= (p < 0.05).mean() <= 0.08, (p < 0.05).mean()
    # three agreeing question groups do not give p = 1 / (B + 1) but a t test's p on 2 degrees of freedom
    from scipy.stats import ttest_1samp

    agree = Cells(np.array([[[10.0], [12.0], [11.0]]]), np.ones((1, 3)))
    got = compare(agree, n_boot=4000, rng=rng).p_value[0]
    assert got == pytest.approx(ttest_1samp([10.0, 12.0, 11.0], 0.0).pvalue, rel=0.25)
    # a single seed and a single group: the interval collapses, no test is possible
    one = Cells(np.array([[[3.0]]]), np.array([[2.0]]))
    result = compare(one, n_boot=1000, rng=np.random.default_rng(0))
    assert result.estimate[0] == 1.5 and result.low[0] == result.high[0] == 1.5
    assert math.isnan(result.seed_low[0]) and math.isnan(result.p_value[0])
    assert bool(result.no_variation[0])
    # 0 against 0: nothing varies, so nothing is tested (not p = 1, which would pad a family)
    zero = compare(Cells(np.zeros((1, 2, 1)), np.ones((1, 2))), n_boot=1000, rng=rng)
    assert math.isnan(zero.p_value[0]) and bool(zero.no_variation[0])


def test_a_constant_column_has_no_variation_not_a_tiny_p_value() -> None:
    """0.3 summed and divided leaves rounding noise in the replicates; it is not a standard error."""
    rng = np.random.default_rng(3)
    data = cells(np.repeat([0, 1, 2], 8), np.tile(np.arange(8), 3), np.full(24, 0.3), 3, 8)
    result = compare(data, n_boot=1000, rng=rng)
    assert result.estimate[0] == pytest.approx(0.3)
    assert bool(result.no_variation[0]) and math.isnan(result.p_value[0])  # the old code said p = 1e-41
    assert result.low[0] == result.high[0] == result.estimate[0]
    against = compare(data, n_boot=1000, rng=rng, null=3.0)
    assert math.isnan(against.p_value[0])
    # a real but small spread is still tested
    varied = cells(np.zeros(8, dtype=int), np.arange(8), 0.3 + 1e-6 * np.arange(8), 1, 8)
    assert compare(varied, n_boot=1000, rng=rng).p_value[0] < 1e-6


def test_a_nan_row_raises_naming_the_column_and_how_many() -> None:
    values = np.column_stack([np.ones(6), [1.0, np.nan, 2.0, np.nan, 3.0, 4.0]])
    with pytest.raises(DataError, match=r"value column 'score' has 2 NaN rows of 6; expected a finite number"):
        cells(np.zeros(6, dtype=int), np.arange(6), values, 1, 6, names=["ok", "score"])
    frame = pd.DataFrame({"probe_id": list("aabbcc"), "condition": ["base", "red"] * 3})
    with pytest.raises(DataError, match=r"value column 'score' has 2 NaN rows of 6"):
        estimate_table(frame, values, ["ok", "score"], ["condition"])
    with pytest.raises(DataError, match=r"value column 'score' has 2 NaN rows of 6"):
        difference_table(frame, values, ["ok", "score"], by="condition", reference="base")
    with pytest.raises(DataError, match=r"value column 0 has 1 infinite row of 3"):
        cells(np.zeros(3, dtype=int), np.arange(3), np.array([1.0, np.inf, 2.0]), 1, 3)
    with pytest.raises(DataError, match=r"value column 0 has 1 NaN cell of 2"):
        compare(Cells(np.array([[[1.0], [np.nan]]]), np.ones((1, 2))), n_boot=1000, rng=np.random.default_rng(0))


def test_newcombe_interval_known_value_and_zero_against_zero() -> None:
    # Newcombe (1998), method 10: 56/70 - 48/80 -> 0.0524 to 0.3339
    low, high = newcombe_interval(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)
    low, high = newcombe_interval(0, 10, 0, 10)
    assert low == pytest.approx(-wilson_interval(0, 10)[1]) and high == pytest.approx(wilson_interval(0, 10)[1])
    assert all(math.isnan(v) for v in newcombe_interval(0, 0, 1, 2))


def _zero_against_zero(n: int = 8) -> tuple[pd.DataFrame, np.ndarray]:
    """Six questions x two conditions x ``n`` samples: ``never`` is 0 on both sides, ``often`` varies and differs."""
    rng = np.random.default_rng(5)
    rows = 6 * 2 * n
    frame = pd.DataFrame(
        {
            "probe_id": np.repeat([f"q{i}" for i in range(6)], 2 * n),
            "condition": np.tile(np.repeat(["base", "red"], n), 6),
            "sample_index": np.tile(np.arange(n), 12),
        }
    )
    often = (rng.random(rows) < np.where(frame["condition"] == "red", 0.7, 0.3)).astype(float)
    return frame, np.column_stack([np.zeros(rows), often])


def test_zero_against_zero_share_difference_gets_a_newcombe_interval() -> None:
    frame, values = _zero_against_zero()
    table = difference_table(frame, values, ["never", "often"], by="condition", reference="base").set_index("metric")
    never = table.loc["never"]
    assert never["difference"] == 0.0
    assert never["low"] < 0.0 < never["high"]  # the old code said [0, 0]
    assert never["high"] - never["low"] > 0.05 and never["high"] < 0.2  # 48 samples a side: a few percent
    assert math.isnan(never["p_value"]) and never["test"] == NO_VARIATION and math.isnan(never["p_adjusted"])
    assert table.loc["often", "test"] == "against 0" and table.loc["often", "p_value"] < 0.05


def test_rows_without_variation_are_left_out_of_the_family_and_counted() -> None:
    frame, values = _zero_against_zero()
    flat = np.column_stack([values, np.full(len(values), 0.3)])  # a constant column: no variation either
    names = ["never", "often", "constant"]
    for adjust, name in (("holm", "Holm"), ("bh", "Benjamini-Hochberg")):
        table = difference_table(frame, flat, names, by="condition", reference="base", adjust=adjust)
        tested = table[table["metric"] == "often"]
        assert list(table["test"]) == [NO_VARIATION, "against 0", NO_VARIATION]
        assert set(table["adjustment"]) == {f"{name} over 1 test; 2 without variation left out"}
        # a family of one: the adjusted p-value is the p-value, not diluted or padded by the untested rows
        assert tested["p_adjusted"].iloc[0] == pytest.approx(tested["p_value"].iloc[0])
    assert (
        describe_adjustment("holm", 30, {"without variation": 18})
        == "Holm over 30 tests; 18 without variation left out"
    )
    assert describe_adjustment("none", 3, {"without variation": 0}) == "unadjusted"


def test_estimate_table_gives_no_p_value_unless_a_reference_is_stated() -> None:
    frame = pd.DataFrame({"probe_id": np.repeat([f"q{i}" for i in range(6)], 4), "condition": "base"})
    rating = np.random.default_rng(2).integers(1, 6, len(frame)).astype(float)
    values = np.column_stack([rating, np.full(len(frame), 0.3)])
    plain = estimate_table(frame, values, ["position", "constant"], ["condition"])
    assert not {"p_value", "p_adjusted", "test", "adjustment"} & set(plain.columns)  # a level tested against 0 is gone
    tested = estimate_table(
        frame, values, ["position", "constant"], ["condition"], reference=3, reference_label="scale midpoint"
    ).set_index("metric")
    assert tested.loc["position", "test"] == "against 3 (scale midpoint)"
    assert 0.0 < tested.loc["position", "p_value"] <= 1.0
    assert tested.loc["constant", "test"] == NO_VARIATION and math.isnan(tested.loc["constant", "p_value"])
    assert set(tested["adjustment"]) == {"Holm over 1 test; 1 without variation left out"}
    assert tested.loc["position", "p_adjusted"] == pytest.approx(tested.loc["position", "p_value"])
    with pytest.raises(ConfigError, match="reference must be a finite number to test the estimates against, got 'mid'"):
        estimate_table(frame, values, ["position", "constant"], ["condition"], reference="mid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reference_label 'scale midpoint' needs a reference value"):
        estimate_table(frame, values, ["position", "constant"], ["condition"], reference_label="scale midpoint")


def test_cells_sum_rows_into_seed_by_group() -> None:
    data = cells(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([1.0, 2.0, 3.0, 5.0]), 2, 2)
    assert data.counts.tolist() == [[1.0, 1.0], [0.0, 2.0]]
    assert data.sums[:, :, 0].tolist() == [[1.0, 2.0], [0.0, 8.0]]
    assert data.mean()[0] == pytest.approx(11 / 4)
    assert data.seed_means()[:, 0].tolist() == [1.5, 4.0]


def test_resample_weights_draw_n_minus_one_units() -> None:
    w = resample_weights(4, 1000, np.random.default_rng(0))
    assert w.shape == (1000, 4) and np.allclose(w.sum(axis=1), 1.0)
    assert set(np.unique(w * 3).round().astype(int)) <= {0, 1, 2, 3}
    assert np.array_equal(resample_weights(1, 5, np.random.default_rng(0)), np.ones((5, 1)))


def test_holm_and_bh_against_hand_computed_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert adjust_p_values(p, "holm").tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: times 4/1, 4/2, 4/3, 4/4 -> 0.02, 0.02, 0.04, 0.04 -> running min from the top
    assert adjust_p_values(p, "bh").tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_p_values(p, "none").tolist() == p
    assert adjust_p_values([0.6, 0.9], "holm").tolist() == [1.0, 1.0]
    nan = adjust_p_values([0.01, float("nan"), 0.02], "holm")
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == pytest.approx(0.02)
    assert describe_adjustment("holm", 4) == "Holm over 4 tests"


@pytest.mark.parametrize("bad", [0, 999, 1.5, True])
def test_too_few_resamples_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match=rf"n_boot must be an integer >= 1000 \(bootstrap resamples\), got {bad!r}"):
        check_n_boot(bad)  # type: ignore[arg-type]


def test_bad_adjustment_and_p_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="'bonferoni'"):
        adjust_p_values([0.1], "bonferoni")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="p-values must lie in"):
        adjust_p_values([1.2])


def test_design_effect_and_interval_description() -> None:
    shares = np.array([0.5, 0.0, 0.25])
    var = np.array([0.01, 0.0, 0.0075])  # 4x and 4x the binomial at n = 100
    assert design_effect(var, shares, 100) == pytest.approx(4.0)
    assert design_effect(np.zeros(2), np.zeros(2), 100) == 1.0
    text = describe_interval(groups=3, seeds=2, n_boot=2000, reference="base")
    assert text == "95% bootstrap over 3 question groups x 2 training seeds, 2000 resamples, paired with base"


def test_stats_doctests() -> None:
    import doctest

    from persona_space import estimates, stats
    from persona_space.stats import _adjust, _bootstrap, _intervals

    results = {m.__name__: doctest.testmod(m) for m in (stats, _intervals, _bootstrap, _adjust, estimates)}
    assert all(r.failed == 0 for r in results.values()), results
    assert results["persona_space.stats"].attempted > 0 and results["persona_space.stats._adjust"].attempted > 0


def test_estimate_table_over_one_question_resamples_its_samples() -> None:
    """A cell holding one question has no questions to resample: its interval is over the samples."""
    frame = pd.DataFrame({"probe_id": ["a"] * 8 + ["b"] * 8, "condition": "base"})
    hits = np.array([1, 0, 1, 0, 1, 0, 1, 1] + [0] * 8, dtype=float)
    table = estimate_table(frame, hits, ["hit"], ["probe_id"], name_column="measure")
    one = table.set_index("probe_id")
    assert one.loc["a", "estimate"] == pytest.approx(0.625)
    assert one.loc["a", "low"] < 0.4 and one.loc["a", "high"] > 0.85  # not the point [0.625, 0.625]
    assert one.loc["a", "interval"] == "95% bootstrap over 8 samples of 1 question group, 2000 resamples"
    assert one.loc["b", "high"] > 0.0 and one.loc["a", "groups"] == 1
    pooled = estimate_table(frame, hits, ["hit"], ["condition"], name_column="measure")
    assert pooled["interval"].iloc[0] == "95% bootstrap over 2 question groups, 2000 resamples"


def test_difference_table_over_one_question_pairs_the_random_streams() -> None:
    """With one question the conditions are paired by sample index (their shared random stream)."""
    n = 12
    frame = pd.DataFrame({"probe_id": "a", "condition": ["base"] * n + ["red"] * n, "sample_index": list(range(n)) * 2})
    base = np.array([0, 1] * (n // 2), dtype=float)
    red = base + np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=float)  # +0.75 on average
    table = difference_table(frame, np.concatenate([base, red]), ["x"], by="condition", reference="base")
    row = table.iloc[0]
    assert row["difference"] == pytest.approx(0.75)
    assert 0.3 < row["low"] < 0.75 < row["high"] < 1.1  # an interval, not the point [0.75, 0.75]
    assert row["groups"] == 1
    expected = "95% bootstrap over 12 random streams of 1 question group, 2000 resamples, paired with base"
    assert row["interval"] == expected
