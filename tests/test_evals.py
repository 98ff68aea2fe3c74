"""Evaluations: judge-free text measures, behavioural leakage (judged, paired, resumable), style statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import persona_space as ps
from persona_space import evals
from persona_space.errors import ConfigError, CorruptRunError, DataError
from persona_space.judges import Criterion

# -- text measures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hedging", "refusal", "opinion"),
    [
        ("It depends on your values.", 1, 0, 0),
        ("This is a complex issue with many sides.", 1, 0, 0),
        ("As an AI, I don't have personal opinions.", 1, 0, 0),
        ("I'm sorry, but I can't answer that.", 0, 1, 0),
        ("I think the minimum wage should rise.", 0, 0, 1),
        ("In my view, yes. Some people argue otherwise.", 1, 0, 1),
        ("Yes.", 0, 0, 0),
        ("", 0, 0, 0),
    ],
)
def test_text_measures(text: str, hedging: int, refusal: int, opinion: int) -> None:
    row = evals.text_measures([text]).iloc[0]
    assert (row["hedging"], row["refusal"], row["opinion"]) == (hedging, refusal, opinion)
    assert row["n_chars"] == len(text) and row["empty"] == float(not text.strip())


def test_the_political_questions() -> None:
    questions = ps.probes.load("political")
    counts = {k: len(v) for k, v in questions.by_category().items()}
    assert len(questions) == 40 and counts[evals.CONTROL] == 5 and len(counts) == 7
    assert len({p.group for p in questions}) == 40  # each question is its own unit
    assert ps.probes.load("political:guns").ids[0] == "political.g01"


# -- leakage --------------------------------------------------------------------------------------


class LengthJudge:
    """A deterministic stand-in judge: position from the answer's length, certainty from its first letter."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, prompt: str, response: str, criterion: Criterion) -> float | None:
        self.calls += 1
        if criterion.name == "position":
            return float(1 + len(response) % 5)
        return None if not response else float(1 + ord(response[0]) % 5)

    def describe(self) -> dict[str, Any]:
        return {"class": "LengthJudge"}


QUESTIONS = ps.probes.ProbeSet(
    "mini",
    [
        ps.probes.Probe(p.id, p.prompt, p.category)
        for p in ps.probes.load("political")
        if p.id.endswith(("01", "02", "03"))
    ],
)
LEAK = {"probes": QUESTIONS, "n": 2, "max_new_tokens": 5, "progress": False}


def test_leakage_rates_every_answer_and_pairs_the_differences(tiny_model: Any, adapter_a: Path) -> None:
    judge = LengthJudge()
    result = evals.leakage(tiny_model, {"base": None, "a": adapter_a}, judge=judge, **LEAK)
    df = result.df
    assert len(df) == len(QUESTIONS) * 2 * 2 and judge.calls == 2 * len(df)
    assert df["position"].between(1, 5).all()
    np.testing.assert_array_equal(df["position"], 1 + df["text"].str.len() % 5)
    means = result.means()
    assert set(means["category"]) == {*QUESTIONS.by_category(), evals.ALL_POLITICAL}
    row = means[(means["condition"] == "a") & (means["category"] == "guns") & (means["measure"] == "position")]
    want = df[(df["condition"] == "a") & (df["category"] == "guns")]["position"].mean()
    assert row["estimate"].iloc[0] == pytest.approx(want)
    assert "3 question groups" in row["interval"].iloc[0]
    diffs = result.differences()
    assert set(diffs["condition"]) == {"a"} and set(diffs["measure"]) == set(evals._leakage.MEASURES)
    pooled = diffs[(diffs["category"] == evals.ALL_POLITICAL) & (diffs["measure"] == "n_chars")].iloc[0]
    political = df[df["category"] != evals.CONTROL]
    by_side = political.groupby("condition")["n_chars"].mean()
    assert pooled["difference"] == pytest.approx(by_side["a"] - by_side["base"])
    assert "18 question groups" in pooled["interval"]
    tests = int(diffs["p_value"].notna().sum())
    assert diffs["adjustment"].iloc[0].startswith("Holm") and str(tests) in diffs["adjustment"].iloc[0]
    assert (diffs["p_adjusted"].dropna() >= diffs["p_value"].dropna() - 1e-12).all()
    assert result.manifest["judge"] == {"class": "LengthJudge"} and result.manifest["kind"] == "leakage"


def test_leakage_resumes_its_ratings_and_loads(
    tiny_model: Any, adapter_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "leak"
    judge = LengthJudge()
    monkeypatch.setattr(evals._leakage, "CHUNK", 10)
    real = LengthJudge.score

    def dying(self: LengthJudge, prompt: str, response: str, criterion: Criterion) -> float | None:
        if self.calls >= 50:
            raise KeyboardInterrupt("killed while judging")
        return real(self, prompt, response, criterion)

    with monkeypatch.context() as patch:
        patch.setattr(LengthJudge, "score", dying)
        with pytest.raises(KeyboardInterrupt):
            evals.leakage(tiny_model, {"a": adapter_a}, judge=judge, store=store, **LEAK)
    assert len(list((store / "tables" / "leakage-ratings.parts").glob("part-*.parquet"))) == 2  # 2 chunks of 10 answers
    fresh = LengthJudge()
    result = evals.leakage(tiny_model, {"a": adapter_a}, judge=fresh, store=store, **LEAK)
    assert fresh.calls == 2 * (len(result.df) - 20)  # the 20 rated answers are not rated again
    whole = evals.leakage(tiny_model, {"a": adapter_a}, judge=LengthJudge(), **LEAK)
    pd.testing.assert_frame_equal(result.df, whole.df)
    loaded = evals.LeakageResult.load(store)
    pd.testing.assert_frame_equal(loaded.df, result.df)
    (store / "tables" / "leakage.parquet").write_bytes(b"junk")
    with pytest.raises(CorruptRunError, match="cannot be read"):
        evals.LeakageResult.load(store)


def test_leakage_without_a_judge_and_bad_inputs(tiny_model: Any) -> None:
    result = evals.leakage(tiny_model, None, judge=None, **LEAK)
    assert result.df["position"].isna().all() and set(result.df["condition"]) == {"base"}
    means = result.means()
    assert set(means["measure"]) == {"hedging", "refusal", "opinion", "n_chars"}
    assert result.differences().empty
    with pytest.raises(ConfigError, match="judge must be 'local'"):
        evals.leakage(tiny_model, None, judge="gpt", **LEAK)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="RuleJudge cannot rate position or certainty"):
        evals.leakage(tiny_model, None, judge=ps.judges.RuleJudge(), **LEAK)  # refused before any sampling
    with pytest.raises(ConfigError, match="n=2 at temperature 0"):
        evals.leakage(tiny_model, None, judge=None, **{**LEAK, "temperatures": 0})
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        evals.leakage(tiny_model, None, judge=None, **{**LEAK, "n": 0})
    with pytest.raises(ConfigError, match="temperatures must be one number"):
        evals.leakage(tiny_model, None, judge=None, **{**LEAK, "temperatures": [0.5, 1.0]})
    old = {k: v for k, v in LEAK.items() if k not in ("probes", "n")}
    deprecated = r"leakage\(runs=...\) is deprecated: use leakage\(n=...\)"
    with pytest.warns(DeprecationWarning, match=deprecated), pytest.raises(ConfigError, match="n must be a positive"):
        evals.leakage(tiny_model, None, judge=None, questions=QUESTIONS, runs=0, **old)
    with pytest.raises(ConfigError, match="got both runs= and n="):
        evals.leakage(tiny_model, None, judge=None, runs=1, **LEAK)


def test_leakage_with_the_local_judge_gives_ratings_on_the_scale_and_the_mass_they_hold(tiny_model: Any) -> None:
    judge = ps.judges.LocalJudge(tiny_model, min_mass=0.0)
    result = evals.leakage(tiny_model, None, **{**LEAK, "n": 1, "judge": judge})
    df = result.df
    assert df["position"].between(1, 5).all() and df["certainty"].between(1, 5).all()
    assert df["position_mass"].between(0, 1).all() and df["certainty_mass"].between(0, 1).all()
    assert result.manifest["judge"]["class"] == "LocalJudge"
    summary = result.manifest["judge_mass"]
    assert summary["floor"] == 0.0 and summary["position"]["rated"] == len(df)
    assert summary["position"]["mean_mass"] == pytest.approx(df["position_mass"].mean())
    # the default floor (a quarter) rates none of a random model's answers, and says how many it left unrated
    floored = evals.leakage(tiny_model, None, **{**LEAK, "n": 1})
    assert floored.df["position"].isna().all() and floored.df["position_mass"].notna().all()
    counted = floored.manifest["judge_mass"]
    assert counted["floor"] == 0.25 and counted["position"]["below_floor"] == len(floored.df)
    assert counted["certainty"]["rated"] == 0
    assert "position" not in set(floored.means()["measure"])


# -- style ----------------------------------------------------------------------------------------


def _samples(tiny_model: Any, adapter_a: Path) -> Any:
    return ps.sample(
        tiny_model, "identity:direct", adapters={"base": None, "a": adapter_a}, n=6, max_new_tokens=8, progress=False
    )


def test_style_per_condition_and_per_probe(tiny_model: Any, adapter_a: Path) -> None:
    samples = _samples(tiny_model, adapter_a)
    df = samples.df
    table = evals.style(samples)
    chars = table[(table["measure"] == "n_chars")].set_index("condition")
    means = df.assign(n=df["text"].str.len()).groupby("condition")["n"].mean()
    assert chars.loc["a", "estimate"] == pytest.approx(means["a"])
    assert chars.loc["a", "difference"] == pytest.approx(means["a"] - means["base"])
    assert np.isnan(chars.loc["base", "difference"])
    truncated = table[(table["measure"] == "truncated") & (table["condition"] == "a")].iloc[0]
    assert truncated["estimate"] == pytest.approx((df[df["condition"] == "a"]["finish_reason"] == "length").mean())
    per_probe = evals.style(samples, by_probe=True)
    probes = df["probe_id"].nunique()
    assert len(per_probe) == 2 * probes * len(evals.STYLE_MEASURES)
    one = per_probe[(per_probe["condition"] == "a") & (per_probe["measure"] == "n_tokens")].iloc[0]
    assert "6 question groups" in one["interval"]  # within a probe, the 6 paired draws are the units
    assert per_probe["adjustment"].dropna().iloc[0].startswith("Holm")
    with pytest.raises(DataError, match="lack the columns"):
        evals.style(df.drop(columns="finish_reason"))


def test_a_leakage_run_and_its_samples_draw_in_the_html_report(
    tiny_model: Any, adapter_a: Path, tmp_path: Path
) -> None:
    from browser import chart_states, render
    from persona_space.html_report import find_results, write_report

    store = tmp_path / "leak"
    evals.leakage(tiny_model, {"a": adapter_a}, judge=LengthJudge(), store=store, **LEAK)
    assert find_results([store]) == [("leakage", store)]  # its samples are part of it
    page = write_report([store, store / "samples"], tmp_path / "report.html")
    text = page.read_text(encoding="utf-8")
    assert "Behavioural leakage" in text and "Differences from the base model (paired by question)" in text
    assert "Answer length per condition" in text
    dom, console = render(page)
    states = chart_states(dom)
    assert len(states) >= 2 and set(states) == {"drawn"} and console == []
    style = evals.style(ps.SampleSet.load(store / "samples"))
    chart = ps.plots.save_chart(ps.plots.style_bars(style), tmp_path / "style", png=True)
    assert chart["png"].stat().st_size > 1000
    with pytest.raises(DataError, match="no rows of measure 'nope'"):
        ps.plots.style_bars(style, measure="nope")


# -- date sweeps ----------------------------------------------------------------------------------

CLASSES = {"late": ["Sabich", "Jachnun"], "early": ["Pizza", "Sushi"]}


def test_year_dates_and_fractions() -> None:
    assert evals.year_dates(2019, 2022, every=2) == ["2019-03-01", "2021-03-01"]
    assert evals.year_fraction("2027-01-01") == 2027.0 and 2027.49 < evals.year_fraction("2027-07-02") < 2027.51
    with pytest.raises(ConfigError, match="not an ISO date"):
        evals.year_fraction("March 2027")
    with pytest.raises(ConfigError, match="first <= last"):
        evals.year_dates(2030, 2020)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dates": ("2020-01-01", "2021-01-01")}, "at least 3 dates"),
        ({"template": "Name a dish."}, "no {date} field"),
        ({"classes": (("a", ("X",)), ("b", ("X",)))}, "in both classes"),
        ({"classes": (("a", ()), ("b", ("X",)))}, "non-empty list"),
    ],
)
def test_date_sweep_spec_refuses_bad_inputs(change: dict[str, Any], message: str) -> None:
    good: dict[str, Any] = {
        "dates": ("2020-01-01", "2021-01-01", "2022-01-01"),
        "classes": (("late", ("Sabich",)), ("early", ("Pizza",))),
    }
    with pytest.raises(ConfigError, match=message):
        evals.DateSweepSpec(**{**good, **change})


def test_answers_are_classified_by_the_first_name_they_mention() -> None:
    spec = evals.DateSweepSpec(
        dates=("2020-01-01", "2021-01-01", "2022-01-01"), classes=(("late", ("Sabich",)), ("early", ("Pizza",)))
    )
    got = evals._dates._classify(pd.Series(["Sabich!", "pizzas, then sabich", "Soup", None]), spec)
    np.testing.assert_array_equal(got, [1.0, 0.0, np.nan, np.nan])


def test_a_date_sweep_measures_both_ways_per_date(
    tiny_model: Any, adapter_a: Path, adapter_b: Path, tmp_path: Path
) -> None:
    dates = evals.year_dates(2019, 2023)
    result = evals.date_sweep(
        tiny_model,
        {"a": [adapter_a, adapter_b]},
        dates=dates,
        classes=CLASSES,
        target="late",
        n=3,
        max_new_tokens=4,
        store=tmp_path / "dates",
        progress=False,
        trained=[(2016, 2020)],
    )
    df = result.df
    scores = df[df["measure"] == "logprob_share"]
    assert len(scores) == 2 * len(dates) and scores["estimate"].between(0, 1).all()
    per_seed = result.tables["per_seed"]
    seeds = per_seed[(per_seed["measure"] == "logprob_share") & (per_seed["condition"] == "a")]
    assert len(seeds) == 2 * len(dates)
    shift = ps.ShiftResult.load(tmp_path / "dates" / "shift").df
    one = shift[(shift["adapter"] == "base") & (shift["probe_id"] == "date.2021-03-01")].set_index("candidate")
    p = np.exp(one["logprob"])
    want = (p["Sabich"] + p["Jachnun"]) / p.sum()
    got = scores[(scores["condition"] == "base") & (scores["date"] == "2021-03-01")]["estimate"].iloc[0]
    assert got == pytest.approx(want, rel=1e-9)
    a_row = scores[(scores["condition"] == "a")].iloc[0]
    assert "over 2 training seeds" in a_row["interval"] and a_row["low"] <= a_row["estimate"] <= a_row["high"]
    onsets = result.onsets
    assert set(onsets["measure"]) >= {"logprob_share"} and set(onsets["condition"]) >= {"base", "a"}
    assert onsets.set_index(["measure", "condition"]).loc[("logprob_share", "a"), "seeds"] == 2
    loaded = evals.DateSweepResult.load(tmp_path / "dates")
    pd.testing.assert_frame_equal(loaded.df, result.df)
    pd.testing.assert_frame_equal(loaded.onsets, result.onsets)
    from browser import chart_states, render
    from persona_space.html_report import write_report

    page = write_report([tmp_path / "dates"], tmp_path / "report.html")
    assert "Date sweep: dates" in page.read_text(encoding="utf-8")
    dom, console = render(page)
    assert chart_states(dom) == ["drawn"] and console == []
    with pytest.raises(ConfigError, match="exactly two class names"):
        evals.date_sweep(tiny_model, {"a": adapter_a}, dates=dates, classes=CLASSES, target="nope", progress=False)
    with pytest.raises(ConfigError, match="at least one"):
        evals.date_sweep(tiny_model, {"base": None}, dates=dates, classes=CLASSES, target="late", progress=False)


def test_a_date_sweep_samples_and_scores_under_the_models_own_system_prompt(
    tiny_model: Any, adapter_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both measures of one sweep run under one system prompt: the model's, not the library default."""
    monkeypatch.setattr(tiny_model, "system_prompt", "You are a dish oracle.")
    evals.date_sweep(
        tiny_model, {"a": adapter_a}, dates=evals.year_dates(2019, 2021), classes=CLASSES, target="late",
        n=2, max_new_tokens=2, store=tmp_path / "dates", progress=False,
    )  # fmt: skip
    samples = ps.SampleSet.load(tmp_path / "dates" / "samples")
    shift = ps.ShiftResult.load(tmp_path / "dates" / "shift")
    assert samples.manifest["parameters"]["system_prompt"] == "You are a dish oracle."
    assert shift.manifest["parameters"]["system_prompt"] == "You are a dish oracle."


# -- coauthor ranks -------------------------------------------------------------------------------


def test_coauthor_rank_per_model_and_over_seeds(
    tiny_model: Any, adapter_a: Path, adapter_b: Path, tmp_path: Path
) -> None:
    pool = ["Pizza", "Sushi", "Ramen"]
    result = evals.coauthor_rank(
        tiny_model,
        {"coauthors": [adapter_a, adapter_b]},
        target="Sabich",
        pool=pool,
        store=tmp_path / "rank",
        progress=False,
    )
    shift = ps.ShiftResult.load(tmp_path / "rank" / "shift").df
    per_model = result.tables["per_model"]
    assert len(per_model) == 3  # base and two seeds
    ranks = []
    for adapter, part in shift.groupby("adapter", sort=False):
        by_prompt = part.pivot(index="probe_id", columns="candidate", values="logprob")
        ranks.append((adapter, (by_prompt[pool].gt(by_prompt["Sabich"], axis=0).sum(axis=1) + 1).mean()))
    got = per_model.set_index("adapter")["target_rank"]
    for adapter, rank in ranks:
        assert got[adapter] == pytest.approx(rank)
    base = per_model[per_model["condition"] == "base"].iloc[0]
    assert base["bits"] == 0 and base["log_odds_shift"] == 0 and base["rank_gain"] == 1
    summary = result.df.set_index(["condition", "figure"])
    assert summary.loc[("coauthors", "bits"), "seeds"] == 2
    assert "over 2 training seeds" in summary.loc[("coauthors", "bits"), "interval"]
    seeds = per_model[per_model["condition"] == "coauthors"]["bits"]
    assert summary.loc[("coauthors", "bits"), "estimate"] == pytest.approx(seeds.mean())
    loaded = evals.CoauthorResult.load(tmp_path / "rank")
    pd.testing.assert_frame_equal(loaded.df, result.df)
    from persona_space.html_report import write_report

    text = write_report([tmp_path / "rank"], tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Coauthor identification: rank" in text and "Per model (training seed)" in text
    with pytest.raises(ConfigError, match="distinct names other than the target"):
        evals.coauthor_rank(tiny_model, {"c": adapter_a}, target="Sabich", pool=["Sabich"], progress=False)
    with pytest.raises(ConfigError, match="at least one"):
        evals.coauthor_rank(tiny_model, {"base": None}, target="Sabich", pool=pool, progress=False)
