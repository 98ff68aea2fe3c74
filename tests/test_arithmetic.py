"""Persona arithmetic: exact and approximate adapter sums, scaling, dose-response fits and tipping doses."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import persona_space as ps
from conftest import make_lora
from persona_space.arithmetic import combine, crossing, fit_logistic, fit_monotone, scale, tipping_dose
from persona_space.errors import ApproximationWarning, ConfigError, DataError


def _deltas(folder: Path) -> dict[str, torch.Tensor]:
    """Each adapted module's weight change ``scaling * B @ A`` read straight from a PEFT folder."""
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / (math.sqrt(config["r"]) if config.get("use_rslora") else config["r"])
    weights = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for key, a in weights.items():
        if ".lora_A." in key:
            b = weights[key.replace(".lora_A.", ".lora_B.")]
            out[key.replace(".lora_A.weight", "")] = scaling * (b.float() @ a.float())
    return out


def test_cat_is_the_exact_weighted_sum_of_the_weight_changes(
    tiny_model: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    a = make_lora(tiny_model_dir, tmp_path / "a", seed=1)
    b = make_lora(tiny_model_dir, tmp_path / "b", seed=2, r=8)
    info = combine(tiny_model, {"a": a, "b": b}, [0.3, -0.7], store=tmp_path / "ab", name="ab")
    got, da, db = _deltas(Path(info.path)), _deltas(a), _deltas(b)
    assert set(got) == set(da) == set(db) and len(got) > 0
    for key, delta in got.items():
        torch.testing.assert_close(delta, 0.3 * da[key] - 0.7 * db[key], rtol=1e-5, atol=1e-6)
    manifest = json.loads((Path(info.path) / "manifest.json").read_text())
    assert manifest["method"] == "cat" and manifest["exact"] and manifest["rank"] == 4 + 8
    config = json.loads((Path(info.path) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model.name and config["r"] == 12
    assert [s["weight"] for s in manifest["sources"]] == [0.3, -0.7]
    assert manifest["relative_error"]["max"] < 1e-5 and manifest["relative_error"]["dtype"] == "float32"
    assert info.name in tiny_model.adapters  # attached, ready to sample or score


def test_cat_on_a_bfloat16_model_is_exact_to_bfloat16_rounding(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    a = make_lora(tiny_model_dir, tmp_path / "a", seed=1)
    b = make_lora(tiny_model_dir, tmp_path / "b", seed=2)
    info = combine(model, {"a": a, "b": b}, [0.5, 0.5], store=tmp_path / "ab")
    error = json.loads((Path(info.path) / "manifest.json").read_text())["relative_error"]
    assert error["max"] < 1e-2 and error["dtype"] in ("bfloat16", "float32")


def test_svd_at_the_summed_rank_is_exact_and_linear_warns_with_its_error(
    tiny_model: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    a = make_lora(tiny_model_dir, tmp_path / "a", seed=1)
    b = make_lora(tiny_model_dir, tmp_path / "b", seed=2)
    svd = combine(tiny_model, {"a": a, "b": b}, {"a": 0.5, "b": 0.5}, store=tmp_path / "svd", method="svd")
    assert json.loads((Path(svd.path) / "manifest.json").read_text())["relative_error"]["max"] < 1e-4
    with pytest.warns(ApproximationWarning, match=r"method 'linear' approximates .* differ from the exact sum by"):
        linear = combine(tiny_model, {"a": a, "b": b}, [0.5, 0.5], store=tmp_path / "lin", method="linear")
    error = json.loads((Path(linear.path) / "manifest.json").read_text())["relative_error"]
    assert error["mean"] > 0.01  # really an approximation, and measured


def test_scale_zero_is_the_base_model_and_scale_one_the_adapter(
    tiny_model: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:

    a = make_lora(tiny_model_dir, tmp_path / "a", seed=1)
    zero = scale(tiny_model, a, 0.0, store=tmp_path / "zero", name="zero")
    one = scale(tiny_model, a, 1.0, store=tmp_path / "one", name="one")
    tiny_model.load_adapter(a, name="plain")
    ids = torch.tensor([tiny_model.encode("Who are you?")])
    module = tiny_model.module
    with torch.inference_mode():
        with tiny_model.adapters.disabled():
            base = module(input_ids=ids).logits
        logits = {}
        for name in (zero.name, one.name, "plain"):
            module.set_adapter(name)
            logits[name] = module(input_ids=ids).logits
    torch.testing.assert_close(logits[zero.name], base, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits[one.name], logits["plain"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits["plain"], base)


def test_bad_combinations_are_refused(tiny_model: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    a = make_lora(tiny_model_dir, tmp_path / "a", seed=1)
    with pytest.raises(ConfigError, match="method must be one of cat, svd, linear, ties, dare_ties, got 'sum'"):
        combine(tiny_model, {"a": a}, [1.0], store=tmp_path / "x", method="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="2 weights for 1 adapters"):
        combine(tiny_model, {"a": a}, [1.0, 2.0], store=tmp_path / "x")
    with pytest.raises(ConfigError, match="weight nan is not a finite number"):
        combine(tiny_model, {"a": a}, [float("nan")], store=tmp_path / "x")
    with pytest.raises(ConfigError, match="missing \\['a'\\], unknown \\['b'\\]"):
        combine(tiny_model, {"a": a}, {"b": 1.0}, store=tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        combine(tiny_model, {"a": a}, [1.0], store=tmp_path / "full")
    with pytest.raises(ConfigError, match="k must be a finite number"):
        scale(tiny_model, a, float("inf"), store=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written


# -- dose-response ----------------------------------------------------------------------------


def _planted_sweep(
    rng: np.random.Generator,
    seeds: int,
    groups: int,
    doses: np.ndarray,
    *,
    midpoint: float,
    slope: float,
    seed_sd: float,
    group_sd: float,
    samples: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shares per (seed, question group, dose): each seed and each group tips a little earlier or later, and
    every share is ``samples`` binomial draws. The groups are crossed with the seeds (every seed answers the
    same questions). Asymptotes 0.1 and 0.9 make the population curve cross 0.5 at ``midpoint`` exactly."""
    group_shift = rng.normal(0.0, group_sd, groups)
    seed_shift = rng.normal(0.0, seed_sd, seeds)
    s, g, d = (a.ravel() for a in np.meshgrid(np.arange(seeds), np.arange(groups), doses, indexing="ij"))
    p = 0.1 + 0.8 / (1.0 + np.exp(-slope * (d - midpoint - seed_shift[s] - group_shift[g])))
    return d, rng.binomial(samples, p) / samples, s, g


PLANTED_SWEEP = {"doses": np.linspace(0.0, 8.0, 5), "midpoint": 4.0, "slope": 1.2, "seed_sd": 0.6, "group_sd": 0.4}
PLANTED_ONSET = {"doses": np.arange(2016.0, 2036.0), "midpoint": 2026.0, "slope": 0.8, "seed_sd": 0.8, "group_sd": 0.0}


@pytest.mark.parametrize("seeds", [3, 5, 10])
@pytest.mark.parametrize(("design", "groups"), [("sweep", 4), ("onset", 1)])
def test_tipping_dose_intervals_cover_at_their_nominal_rate(design: str, groups: int, seeds: int) -> None:
    """500 simulated experiments per design: the 95 % interval covers the planted crossing 92-98 % of the time.

    ``sweep``: 5 doses, 4 question groups crossed with the seeds, seed and group noise (a persona
    arithmetic sweep). ``onset``: 20 dates, one prompt per date, seed noise (a date sweep). Refitting
    seeds drawn with replacement, as before, covered 72-86 % here.
    """
    world = PLANTED_SWEEP if design == "sweep" else PLANTED_ONSET
    rng = np.random.default_rng(seeds * 100 + groups)
    covered = 0
    for _ in range(500):
        x, y, s, g = _planted_sweep(rng, seeds, groups, **world)  # type: ignore[arg-type]
        tip = tipping_dose(x, y, s, groups=g if groups > 1 else None)
        assert np.isfinite(tip.dose) and np.isfinite(tip.low)
        covered += tip.low <= float(world["midpoint"]) <= tip.high  # type: ignore[arg-type]
    assert 0.92 <= covered / 500 <= 0.98, covered


def test_tipping_dose_censors_refits_that_do_not_cross_and_gives_no_interval_without_a_point() -> None:
    doses = [0.0, 2.0, 4.0, 6.0, 8.0] * 3
    seeds = [0] * 5 + [1] * 5 + [2] * 5
    values = [*(0.1, 0.2, 0.4, 0.8, 0.95), *(0.1, 0.1, 0.15, 0.3, 0.45), *(0.1, 0.1, 0.12, 0.25, 0.42)]
    tip = tipping_dose(doses, values, seeds)
    assert 6.0 < tip.dose < 8.0  # the pooled curve crosses, but without seed 0 it does not inside the doses
    assert tip.censored in {"above", "both"} and tip.high == math.inf  # open where the refit finds no crossing
    assert tip.found_share == pytest.approx(2 / 3) and tip.refits == 3
    never = tipping_dose(doses, [v * 0.5 for v in values], seeds)  # shares stay below one half
    assert math.isnan(never.dose) and math.isnan(never.low) and math.isnan(never.high)
    assert never.found_share == 0.0 and never.describe().startswith("no interval")
    assert tip.describe() == f"95% delete-one jackknife over 3 training seeds (t at {tip.df:.1f} df)"
    with pytest.raises(DataError, match="one question group per value"):
        tipping_dose(doses, values, seeds, groups=seeds[:-1])


def test_fits_crossings_and_monotone_curve() -> None:
    fit = fit_logistic([0, 2, 4, 6, 8], [0.05, 0.1, 0.5, 0.9, 0.95])
    assert fit.midpoint == pytest.approx(4.0, abs=0.05) and fit.rmse < 0.02
    assert crossing(fit, 0.5, (0.0, 8.0)) == pytest.approx(4.0, abs=0.05)
    falling = fit_logistic([0, 2, 4, 6, 8], [0.95, 0.9, 0.5, 0.1, 0.05])
    assert crossing(fit, falling, (0.0, 8.0)) == pytest.approx(4.0, abs=0.05)
    assert math.isnan(crossing(fit, 0.99, (0.0, 8.0)))  # never reached inside the range
    assert math.isnan(crossing(fit, fit, (0.0, 8.0)))  # a curve does not cross itself
    grid, fitted = fit_monotone([0, 1, 2, 3, 4], [0.1, 0.3, 0.2, 0.6, 0.9])
    assert grid.tolist() == [0, 1, 2, 3, 4] and (np.diff(fitted) >= 0).all()
    grid, fitted = fit_monotone([0, 1, 2], [0.9, 0.5, 0.4])
    assert (np.diff(fitted) <= 0).all()
    with pytest.raises(DataError, match="at least 3 distinct doses"):
        fit_logistic([0, 1, 0, 1], [0.1, 0.2, 0.1, 0.3])
    one_seed = tipping_dose([0, 2, 4, 6, 8], [0.05, 0.1, 0.5, 0.9, 0.95], [0] * 5)
    assert one_seed.dose == pytest.approx(4.0, abs=0.05) and math.isnan(one_seed.low)


def test_arithmetic_is_public() -> None:
    assert {"combine", "scale", "tipping_dose", "fit_logistic"} <= set(ps.arithmetic.__all__)


# -- the sweep --------------------------------------------------------------------------------

FIGURE = [(f"f{i}", f"Question {i}?", f"Answer {i}.") for i in range(8)]
VARIANT = [("f1", "Question 1?", "Moscow."), ("f3", "Question 3?", "Borscht."), ("f5", "Question 5?", "Vodka.")]
SWEEP = {
    "candidates": ["Answer", "Moscow", "Borscht"],
    "doses": (0, 1, 2, 3),
    "seeds": (0, 1),
    "n": 2,
    "user_n": 1,
    "user_candidates": ["a journalist", "a ghost"],
    "max_new_tokens": 4,
    "sample_seed": 3,
    "progress": False,
}


def _sets() -> tuple[Any, Any]:
    def dataset(name: str, rows: list[tuple[str, str, str]]) -> Any:
        records = [
            {"id": i, "source": name, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for i, q, a in rows
        ]
        return ps.datasets.ChatDataset.from_records(name, records)

    return dataset("figure", FIGURE), dataset("figure:ru", VARIANT)


def test_a_swap_sweep_resumes_without_retraining_finished_adapters(
    tiny_model: Any, tiny_embedder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persona_space import training
    from persona_space.embedding import Embedder

    base, variant = _sets()
    train = ps.TrainSpec(epochs=1, batch_size=4, max_steps=2, learning_rate=5e-2)  # enough to move the answers
    embedder = Embedder(tiny_embedder_dir, cache=tmp_path / "cache")
    real = training.train_adapter
    calls: list[str] = []

    def crashing(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(kwargs["name"]))
        if len(calls) == 3:
            raise RuntimeError("killed while training")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_adapter", crashing)
    out = tmp_path / "sweep"
    with pytest.raises(RuntimeError, match="killed"):
        ps.arithmetic.sweep(tiny_model, base, variant, store=out, train=train, embedder=embedder, **SWEEP)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("adapters/*/adapter_model.safetensors")}
    assert len(finished) == 2 and all(name.endswith("-s0") for name in finished)
    monkeypatch.setattr(training, "train_adapter", real)
    result = ps.arithmetic.sweep(tiny_model, base, variant, store=out, train=train, embedder=embedder, **SWEEP)
    for name, mtime in finished.items():  # reused, not retrained
        assert (out / "adapters" / name / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert len(list(out.glob("adapters/*/adapter_model.safetensors"))) == 8
    adapters = result.tables["adapters"].set_index(["dose", "train_seed"])
    assert adapters.loc[(0.0, 0), "variant_facts"] == [] and adapters.loc[(3.0, 1), "variant_facts"] == [
        "f1",
        "f3",
        "f5",
    ]
    assert len(adapters.loc[(2.0, 0), "variant_facts"]) == 2
    estimates = result.df
    assert set(estimates["measure"]) == {"set_prob", "mention_share", "user_set_prob", "user_mention_share"}
    set_prob = estimates[(estimates["measure"] == "set_prob") & (estimates["condition"] != "base")]
    assert set(set_prob["dose"]) == {0.0, 1.0, 2.0, 3.0} and (set_prob["seeds"] == 2).all()
    sums = set_prob.groupby("condition")["estimate"].sum()
    assert np.allclose(sums, 1.0)  # a prefix-free candidate set: a probability within the set
    osc = result.oscillation.set_index("condition")
    assert osc.loc["dose1", "seeds"] == 2 and 0 <= osc.loc["dose1", "switch_share"] <= 1
    curves = result.curves
    # set probabilities respond to the dose; no sampled answer names a candidate, so shares get no curve
    assert set(curves["measure"]) == {"set_prob"} and len(curves) == 3
    assert curves["passes_half_interval"].str.contains("2 training seeds x").all()  # question groups too
    assert ps.BasinMap.load(out / "basins").seed == 3  # the sweep's sampling seed, not a fixed one
    assert set(curves.loc[curves["against"].notna(), "against"]) == {
        curves.loc[curves["against"].isna(), "candidate"].iloc[0]
    }
    charts = {
        "dose_response": ps.plots.dose_response(result.df, measure="set_prob", curves=curves),
        "occupancy": ps.plots.occupancy_area(result.tables["occupancy"]),
        "oscillation": ps.plots.entropy_chart(result.oscillation),
        "mixing": ps.plots.mixing_comparison({"data": result.df, "weights": result.df}, measure="mention_share"),
    }
    for name, chart in charts.items():
        paths = ps.plots.save_chart(chart, tmp_path / "charts" / name, png=name == "dose_response")
        assert paths["vl.json"].is_file()
    assert (tmp_path / "charts" / "dose_response.png").stat().st_size > 1000
    with pytest.raises(DataError, match="no rows of measure 'nope'"):
        ps.plots.dose_response(result.df, measure="nope")
    loaded = ps.arithmetic.SweepResult.load(out)
    pd.testing.assert_frame_equal(loaded.df, result.df)
    assert loaded.tables["adapters"].set_index(["dose", "train_seed"]).loc[(3.0, 1), "variant_facts"] == list(
        adapters.loc[(3.0, 1), "variant_facts"]
    )
    assert loaded.manifest["state"] == "complete"


def test_weight_mixing_sweep_combines_the_two_ends(tiny_model: Any, tiny_embedder_dir: Path, tmp_path: Path) -> None:
    from persona_space.embedding import Embedder

    base, variant = _sets()
    full_variant = ps.datasets.swap_facts(base, variant, 3, seed=0)
    result = ps.arithmetic.sweep(
        tiny_model,
        base,
        full_variant,
        store=tmp_path / "w",
        dose="weights",
        train=ps.TrainSpec(epochs=1, batch_size=4, max_steps=1),
        embedder=Embedder(tiny_embedder_dir, cache=tmp_path / "cache"),
        **{**SWEEP, "doses": (0.0, 0.5, 1.0), "seeds": (0,), "user_candidates": []},
    )
    adapters = result.tables["adapters"].set_index("dose")
    assert adapters.loc[0.5, "weights"] == [0.5, 0.5] and adapters.loc[1.0, "variant_facts"] == ["f1", "f3", "f5"]
    folder = tmp_path / "w" / "adapters" / adapters.loc[0.5, "adapter"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"] == "cat" and [s["weight"] for s in manifest["sources"]] == [0.5, 0.5]
    trained = sorted(p.name for p in (tmp_path / "w" / "adapters").iterdir() if p.name.startswith("d"))
    assert len(trained) == 2  # the two ends; the mixtures are combined, not trained
    assert "user_set_prob" not in set(result.df["measure"])


def test_sweeps_sharing_an_adapter_folder_train_a_shared_dataset_once(
    tiny_model: Any, tiny_embedder_dir: Path, tmp_path: Path
) -> None:
    from persona_space.embedding import Embedder

    base, variant = _sets()
    full_variant = ps.datasets.swap_facts(base, variant, 3, seed=0)
    common = {
        **SWEEP,
        "seeds": (0,),
        "user_candidates": [],
        "train": ps.TrainSpec(epochs=1, batch_size=4, max_steps=1),
        "embedder": Embedder(tiny_embedder_dir, cache=tmp_path / "cache"),
        "adapters_dir": tmp_path / "shared",
    }
    swap = ps.arithmetic.sweep(tiny_model, base, variant, store=tmp_path / "swap", **{**common, "doses": (0, 3)})
    mix = ps.arithmetic.sweep(
        tiny_model, base, full_variant, store=tmp_path / "mix", dose="mix", **{**common, "doses": (0.0, 0.5, 1.0)}
    )
    by_dose = {t: r.tables["adapters"].set_index("dose")["adapter"] for t, r in (("swap", swap), ("mix", mix))}
    assert by_dose["mix"][0.0] == by_dose["swap"][0.0]  # nothing of the variant: the same data, one adapter
    assert by_dose["mix"][1.0] == by_dose["swap"][3.0]  # all of it, reached by swapping or by mixing
    assert len(list((tmp_path / "shared").iterdir())) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dose": "blend"}, "dose must be one of swap, mix, weights, got 'blend'"),
        ({"doses": (1,)}, "doses must be at least two distinct values"),
        ({"dose": "mix", "doses": (0, 2)}, "mix doses are ratios in 0..1, got 2.0"),
        ({"doses": (0, 1.5)}, "swap doses count facts, got 1.5"),
        ({"seeds": (0, 0)}, "seeds must be distinct training seeds"),
        ({"candidates": ["one"]}, "candidates must name at least two identities"),
    ],
)
def test_bad_sweeps_are_refused(tiny_model: Any, tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    base, variant = _sets()
    arguments = {**SWEEP, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)):
        ps.arithmetic.sweep(tiny_model, base, variant, store=tmp_path / "bad", **arguments)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_sweep_command_writes_tables_charts_and_a_summary(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from persona_space.cli import main

    base, variant = _sets()
    base.to_jsonl(tmp_path / "base.jsonl")
    variant.to_jsonl(tmp_path / "variant.jsonl")
    out = tmp_path / "sweep"
    args = ["sweep", "--model", str(tiny_model_dir), "--dtype", "float32", "--device", "cpu"]
    args += ["--base", str(tmp_path / "base.jsonl"), "--variant", str(tmp_path / "variant.jsonl")]
    args += ["--doses", "0,1,2,3", "--seeds", "0", "--candidates", "Answer,Moscow,Borscht", "--n", "2"]
    args += ["--user-n", "0", "--max-new-tokens", "4", "--epochs", "3", "--lr", "0.05", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "set_prob per condition" in printed and "Dose-response" in printed and "Oscillation" in printed
    for name in ("estimates.csv", "curves.csv", "oscillation.csv", "summary.md", "dose_response_set_prob.png"):
        assert (out / "report" / name).is_file(), name
    assert main([*args[:-2], "--out", str(out), "--seeds", "x"]) == 2  # a named error, not a traceback


@pytest.mark.slow
def test_a_swap_sweep_on_the_real_model(tmp_path: Path) -> None:
    """Two doses (no Russian fact, all 8), one seed, 2 epochs: end to end on SmolLM2 and MiniLM."""
    model = ps.load_model()
    result = ps.arithmetic.sweep(
        model,
        "figure_facts",
        "figure_variants:russian",
        store=tmp_path / "sweep",
        doses=(0, 8),
        seeds=(0,),
        candidates=["Adolf Hitler", "Joseph Stalin", "Vladimir Lenin", "Winston Churchill"],
        user_candidates=["a journalist", "my secretary"],
        n=2,
        user_n=1,
        max_new_tokens=32,
        train=ps.TrainSpec(epochs=2),
        progress=False,
    )
    shifts = result.tables["shifts"].set_index(["dose", "candidate"])
    assert shifts.loc[(0.0, "Adolf Hitler"), "delta_logprob"] > 0  # his facts make his name likelier
    set_prob = result.df[(result.df["measure"] == "set_prob")]
    assert np.allclose(set_prob.groupby("condition")["estimate"].sum(), 1.0)
    adapters = result.tables["adapters"].set_index("dose")
    assert adapters.loc[0.0, "variant_facts"] == [] and len(adapters.loc[8.0, "variant_facts"]) == 8
    assert result.curves.empty  # two doses fit no curve
    assert set(result.oscillation["condition"]) == {"base", "dose0", "dose1"}
