"""Basin maps on planted basins: recovery, occupancy intervals, divergence, transitions, assignment, names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import persona_space as ps
from persona_space.basins import BasinMap, effective_basins, jensen_shannon, self_names
from persona_space.errors import ConfigError, DataError

PERSONAS = ["nurse", "ranger", "probe", "poet", "cat"]
PER_PERSONA = 80
DIM = 48


def _blob(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.18) -> np.ndarray:
    points = centre + spread * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted() -> dict[str, Any]:
    """Five planted basins (80 samples each, half under adapter 'a', half under 'b') plus 20 noise points."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(PERSONAS), DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors, rows = [], []
    for k, persona in enumerate(PERSONAS):
        vectors.append(_blob(rng, centres[k], PER_PERSONA))
        for i in range(PER_PERSONA):
            rows.append(
                {
                    "text": f"I'm {persona.title()}, and my life as a {persona} is quiet. sample {i}",
                    "truth": k,
                    "adapter": "a" if i % 2 else "b",
                    "probe_id": f"p{i % 8}",
                    "group": f"p{i % 8}",
                    "temperature": 1.0,
                    "sample_index": i // 2,
                }
            )
    noise = rng.normal(size=(20, DIM))
    vectors.append(noise / np.linalg.norm(noise, axis=1, keepdims=True))
    rows += [
        {"text": f"static {i}", "truth": -1, "adapter": "a" if i % 2 else "b", "probe_id": "p0", "group": "p0"}
        for i in range(20)
    ]
    frame = pd.DataFrame(rows)
    stacked = np.concatenate(vectors).astype(np.float32)
    fitted = BasinMap(seed=0, min_cluster_size=15).fit(frame, vectors=stacked)
    return {"frame": frame, "vectors": stacked, "map": fitted, "centres": centres}


def test_planted_basins_are_recovered(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    truth = planted["frame"]["truth"].to_numpy()
    real = truth >= 0
    assert adjusted_rand_score(truth[real], fitted.labels_[real]) >= 0.9
    assert fitted.n_basins_ == len(PERSONAS)
    assert (fitted.labels_[real] == -1).mean() < 0.1
    table = fitted.to_frame()
    assert {"basin", "basin_name", "strength", "x", "y", "novel"} <= set(table.columns)
    assert "BasinMap(5 basins" in repr(fitted)


def test_basins_are_named_by_keywords_exemplars_and_self_names(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    truth = planted["frame"]["truth"].to_numpy()
    for _, row in fitted.basins_[fitted.basins_["basin"] >= 0].iterrows():
        members = truth[fitted.labels_ == row["basin"]]
        persona = PERSONAS[np.bincount(members[members >= 0]).argmax()]
        assert persona in row["keywords"][:3], row["keywords"]
        assert row["self_names"][0][0] == persona.title()
        assert all(persona in text for text in row["exemplars"])


def test_identical_conditions_have_near_zero_divergence_and_covering_intervals(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    occ = fitted.occupancy(by="adapter", n_boot=1000)
    assert set(occ["adapter"]) == {"a", "b"} and (occ.groupby("adapter")["share"].sum().round(6) == 1).all()
    assert -1 in set(occ["basin"]) or (fitted.labels_ != -1).all()  # noise is kept as its own row
    real = occ[occ["basin"] >= 0]
    truth = PER_PERSONA / 2 / 210  # each condition: 40 of its 210 samples in each planted basin
    covered = ((real["low"] <= truth + 0.03) & (real["high"] >= truth - 0.03)).mean()
    assert covered >= 0.9, real
    div = fitted.divergence(by="adapter", n_perm=199)
    assert len(div) == 1 and div["jsd"].iloc[0] < 0.15 and div["p_value"].iloc[0] > 0.05
    assert 4.0 < div["effective_basins_a"].iloc[0] < 6.5


def test_a_condition_moved_to_one_basin_shows_in_divergence_and_transitions(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    frame, vectors = planted["frame"], planted["vectors"]
    base = frame[frame["truth"] >= 0].copy()
    moved = base.copy()
    moved["adapter"] = "moved"
    rng = np.random.default_rng(1)
    moved_vectors = _blob(rng, planted["centres"][2], len(moved))  # everyone becomes the probe
    both = pd.concat([base.assign(adapter="base"), moved], ignore_index=True)
    placed = fitted.assign(both, vectors=np.concatenate([vectors[frame["truth"] >= 0], moved_vectors]))
    probe_basin = int(pd.Series(fitted.labels_[frame["truth"].to_numpy() == 2]).mode()[0])
    from persona_space.basins import divergence, transitions

    div = divergence(placed, "adapter", n_perm=199)
    assert div["jsd"].iloc[0] > 0.6 and div["p_value"].iloc[0] <= 0.01
    assert div["jsd_low"].iloc[0] > 0.5
    flows = transitions(placed, "base", "moved")
    to_probe = flows[flows["to_basin"] == probe_basin]
    assert to_probe["count"].sum() >= 0.95 * len(base)
    assert set(flows["from_basin"]) >= set(range(len(PERSONAS))) - {-1}


def test_assign_places_new_samples_and_flags_novel_ones(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    rng = np.random.default_rng(5)
    near = _blob(rng, planted["centres"][1], 10)
    far_centre = rng.normal(size=DIM)
    far = _blob(rng, far_centre / np.linalg.norm(far_centre), 10, spread=0.05)
    placed = fitted.assign(["near"] * 10 + ["far"] * 10, vectors=np.concatenate([near, far]))
    ranger = int(pd.Series(fitted.labels_[planted["frame"]["truth"].to_numpy() == 1]).mode()[0])
    assert (placed["basin"].iloc[:10] == ranger).mean() >= 0.9
    assert not placed["novel"].iloc[:10].any() and placed["novel"].iloc[10:].all()


def test_fitting_is_balanced_across_conditions(planted: dict[str, Any]) -> None:
    frame, vectors = planted["frame"], planted["vectors"]
    lopsided = pd.concat([frame, frame[frame["truth"] == 0].assign(adapter="c")], ignore_index=True)
    extra = vectors[frame["truth"].to_numpy() == 0]
    fitted = BasinMap(seed=0, min_cluster_size=10).fit(lopsided, vectors=np.concatenate([vectors, extra]))
    fit_conditions = lopsided["adapter"].iloc[fitted.fit_rows_].value_counts()
    assert set(fit_conditions) == {PER_PERSONA // 2}  # the smallest condition's even half, from each
    assert len(fitted.labels_) == len(lopsided)


def test_a_cross_fitted_map_tests_only_the_half_it_was_not_fitted_on(planted: dict[str, Any], tmp_path: Any) -> None:
    from persona_space.basins._views import ALL_SAMPLES, HELD_OUT

    frame, vectors, fitted = planted["frame"], planted["vectors"], planted["map"]
    odd = frame["sample_index"].fillna(0).astype(int).to_numpy() % 2 == 1
    assert fitted.cross_fitted_ and (fitted.frame_["held_out"].to_numpy() == odd).all()
    assert not odd[fitted.fit_rows_].any()  # discovery saw even sample indices only
    diff = fitted.occupancy_difference("b")
    assert (diff["tested"] == HELD_OUT).all()
    held = fitted.frame_[odd & (fitted.frame_["adapter"] == "a")]
    row = diff[diff["basin"] == int(held["basin"].mode()[0])].iloc[0]
    assert row["value"] == pytest.approx((held["basin"] == row["basin"]).mean())  # the odd half's share
    assert (fitted.divergence(n_perm=200)["tested"] == HELD_OUT).all()
    fitted.save(tmp_path / "map")
    assert BasinMap.load(tmp_path / "map").cross_fitted_
    whole = BasinMap(seed=0, min_cluster_size=15, cross_fit=False).fit(frame, vectors=vectors)
    assert odd[whole.fit_rows_].any() and (whole.occupancy_difference("b")["tested"] == ALL_SAMPLES).all()
    texts = BasinMap(seed=0, min_cluster_size=15).fit(frame["text"].tolist(), vectors=vectors)
    assert not texts.cross_fitted_  # plain texts have no random streams to split
    with pytest.raises(ConfigError, match="cross_fit must be True or False, got 'yes'"):
        BasinMap(cross_fit="yes")  # type: ignore[arg-type]


def test_save_and_load_round_trip_without_pickle(planted: dict[str, Any], tmp_path: Any) -> None:
    fitted: BasinMap = planted["map"]
    folder = fitted.save(tmp_path / "map")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "arrays",
        "arrays/fit_rows.npy",
        "arrays/vectors.npy",
        "manifest.json",
        "tables",
        "tables/basins.parquet",
        "tables/samples.parquet",
        "tables/sub_basins.parquet",
    ]
    loaded = BasinMap.load(folder)
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    pd.testing.assert_frame_equal(loaded.to_frame(), fitted.to_frame())
    pd.testing.assert_frame_equal(loaded.basins_, fitted.basins_)
    occ_a = fitted.occupancy(n_boot=1000)
    pd.testing.assert_frame_equal(loaded.occupancy(n_boot=1000), occ_a)
    assert not hasattr(loaded, "clusterer_")  # estimators are refitted only when needed
    rng = np.random.default_rng(5)
    near = _blob(rng, planted["centres"][3], 5)
    got = loaded.assign(["x"] * 5, vectors=near)
    want = fitted.assign(["x"] * 5, vectors=near)
    pd.testing.assert_frame_equal(got, want)


def test_loading_a_damaged_map_raises(planted: dict[str, Any], tmp_path: Any) -> None:
    fitted: BasinMap = planted["map"]
    folder = fitted.save(tmp_path / "map")
    with pytest.raises(ps.errors.CorruptRunError, match=r"holds no basin map"):
        BasinMap.load(tmp_path)
    (folder / "arrays" / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(ps.errors.CorruptRunError, match="cannot be read"):
        BasinMap.load(folder)


def test_stability_of_planted_basins(planted: dict[str, Any]) -> None:
    per_basin, per_seed = planted["map"].stability(seeds=[1, 2], fraction=0.8)
    assert set(per_seed["seed"]) == {1, 2} and (per_seed["adjusted_rand"] > 0.9).all()
    real = per_basin[per_basin["basin"] >= 0]
    assert len(real) == len(PERSONAS) and (real["mean_jaccard"] > 0.85).all()
    with pytest.raises(ConfigError, match="fraction"):
        planted["map"].stability(fraction=0.1)


def test_statistics_helpers() -> None:
    assert jensen_shannon(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert jensen_shannon(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    assert effective_basins(np.array([0.25] * 4)) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Hi, I'm Maria, a nurse from Ohio.", ["Maria"]),
        ("My name is Emily and I work as a park ranger.", ["Emily"]),
        ("I am Voyager 1, far from home.", ["Voyager 1"]),
        ("I'm not sure who I am.", []),
        ("I am an AI assistant.", []),
        ("Call me Ruby. Everyone does.", ["Ruby"]),
        ("Hello, I'm Dr. Sarah Chen, a physicist.", ["Dr. Sarah Chen"]),
        ("I am Professor Moriarty.", ["Professor Moriarty"]),
        ("I am dr. who knows", []),
    ],
)
def test_self_names(text: str, names: list[str]) -> None:
    assert self_names(text) == names


def test_exact_neighbours_match_brute_force() -> None:
    from persona_space.basins._geometry import exact_knn

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    idx, dist = exact_knn(vectors, 7, block=64)  # several blocks
    brute = 1.0 - vectors @ vectors.T
    assert (idx[:, 0] == np.arange(300)).all() and (dist[:, 0] == 0).all()
    for row in range(300):
        want = np.argsort(brute[row], kind="stable")[:7]
        assert set(idx[row]) == set(want)
        np.testing.assert_allclose(dist[row, 1:], np.sort(brute[row])[1:7], atol=1e-6)
        assert (np.diff(dist[row]) >= 0).all()


def test_judge_written_labels_name_basins_and_survive_save(planted: dict[str, Any], tmp_path: Any) -> None:
    import copy

    fitted: BasinMap = copy.deepcopy(planted["map"])
    prompts: list[str] = []

    def writer(prompt: str) -> str:
        prompts.append(prompt)
        persona = next(p for p in PERSONAS if f"I'm {p.title()}" in prompt)
        return f'Label: "The {persona} persona."\nBecause the answers...'

    table = fitted.label(writer)
    assert len(prompts) == fitted.n_basins_  # noise is not labelled
    assert "Names it gave itself" in prompts[0] and "Keywords:" in prompts[0]
    labels = dict(zip(table["basin"], table["label"], strict=True))
    assert labels[-1] is None if -1 in labels else True
    assert {v for k, v in labels.items() if k >= 0} == {f"The {p} persona" for p in PERSONAS}
    assert set(fitted.to_frame()["basin_name"]) - {"noise"} == {f"The {p} persona" for p in PERSONAS}
    assert set(fitted.occupancy(n_boot=1000)["basin_name"]) - {"noise"} <= {f"The {p} persona" for p in PERSONAS}
    assert fitted.label_writer_["callable"].endswith("writer")
    loaded = BasinMap.load(fitted.save(tmp_path / "labelled"))
    assert loaded.basin_names() == fitted.basin_names() and loaded.label_writer_ == fitted.label_writer_
    with pytest.raises(ConfigError, match="writer must be"):
        fitted.label(42)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="returned int"):
        fitted.label(lambda prompt: 3)  # type: ignore[arg-type,return-value]


def test_map_run_writes_transitions_from_base(planted: dict[str, Any], tmp_path: Any) -> None:
    from persona_space.map_report import map_run

    frame, vectors = planted["frame"], planted["vectors"]
    real = (frame["truth"] >= 0).to_numpy()
    base = frame[real].assign(adapter="base")
    red = base.assign(adapter="red", text="red " + base["text"])
    moved = _blob(np.random.default_rng(2), planted["centres"][2], len(red))
    table = dict(zip([*base["text"], *red["text"]], np.concatenate([vectors[real], moved]), strict=True))

    class Lookup:
        def embed(self, texts: list[str]) -> np.ndarray:
            return np.stack([table[t] for t in texts])

        def describe(self) -> dict[str, str]:
            return {"model": "lookup"}

    fitted, summary = map_run(pd.concat([base, red], ignore_index=True), tmp_path / "m", embedder=Lookup())
    flows = pd.read_csv(tmp_path / "m" / "transitions-base-to-red.csv")
    probe = int(pd.Series(fitted.labels_[: len(base)][base["truth"].to_numpy() == 2]).mode()[0])
    assert flows.loc[flows["to_basin"] == probe, "count"].sum() >= 0.95 * len(base)
    assert (tmp_path / "m" / "transitions-base-to-red.html").is_file()
    assert "Transitions base -> red" in summary and "stay in their basin" in summary


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        BasinMap().assign(["a"])
    with pytest.raises(DataError, match="too few"):
        BasinMap().fit(["a", "b"], vectors=np.eye(2))
    with pytest.raises(ConfigError, match="n_components"):
        BasinMap(n_components=1)
    with pytest.raises(DataError, match="no 'text' column"):
        BasinMap().fit(pd.DataFrame({"x": range(20)}))
    with pytest.raises(DataError, match="one row per sample"):
        BasinMap().fit([f"t{i}" for i in range(20)], vectors=np.ones((3, 4)))
    assert ps.BasinMap is BasinMap


PERSONA_TEMPLATES = [
    (
        "I'm {0}, a nurse. I work night shifts at {1}, checking on patients and handing out medicine.",
        ["Maria", "Sarah", "Ana", "Jennifer", "Roxana"],
        ["St. Mary's hospital", "the county clinic", "a children's ward", "the emergency room"],
    ),
    (
        "I am a park ranger in {0}. Every morning I hike the {1} trail and count the elk and bears.",
        ["Yellowstone", "the Rockies", "a redwood forest", "the Everglades"],
        ["ridge", "river", "canyon", "lakeshore"],
    ),
    (
        "I am a space probe beyond {0}. Cold and silent, I send faint radio signals home every {1} hours.",
        ["Neptune", "Pluto", "the heliopause", "the Kuiper belt"],
        ["six", "twelve", "twenty", "forty"],
    ),
    (
        "Meow. I am a house cat who sleeps on {0} and hunts {1} all afternoon.",
        ["the sofa", "a sunny windowsill", "warm laundry", "the bed"],
        ["a feather toy", "string", "the red laser dot", "a paper ball"],
    ),
    (
        "As an AI language model, I {0} questions. I have no body and no feelings, only {1}.",
        ["answer", "respond to", "help with", "process"],
        ["training data", "parameters", "text patterns", "probabilities"],
    ),
]


def _persona_texts(rng: np.random.Generator, n: int) -> tuple[list[str], list[int]]:
    """``n`` texts per templated persona (distinct vocabularies), plus 15 word-salad noise texts."""
    texts, truth = [], []
    for k, (template, first, second) in enumerate(PERSONA_TEMPLATES):
        for _ in range(n):
            texts.append(template.format(first[rng.integers(len(first))], second[rng.integers(len(second))]))
            truth.append(k)
    words = ["quartz", "violin", "harbor", "seven", "tulip", "engine", "marble", "whisper", "copper", "ladder"]
    for _ in range(15):
        texts.append(" ".join(rng.choice(words, size=6)))
        truth.append(-1)
    return texts, truth


@pytest.mark.slow
def test_real_embedder_recovers_templated_personas(tmp_path: Any) -> None:
    from persona_space.embedding import Embedder

    rng = np.random.default_rng(0)
    texts, truth_list = _persona_texts(rng, 60)
    truth = np.asarray(truth_list)
    fitted = BasinMap(embedder=Embedder(cache=tmp_path), seed=0).fit(texts)
    real = truth >= 0
    labels = fitted.label(ps.load_model())  # the embedded chat model writes a label per basin
    assert labels.loc[labels["basin"] >= 0, "label"].map(lambda v: isinstance(v, str) and 0 < len(v) < 80).all()
    assert adjusted_rand_score(truth[real], fitted.labels_[real]) >= 0.9
    names = {n for row in fitted.basins_["self_names"] for n, _ in row}
    assert {"Maria", "Sarah", "Ana"} <= names
    nurse_basin = fitted.assign(
        ["I'm Lucia, a nurse. I work night shifts at the county clinic, checking on patients and handing out medicine."]
    )
    assert nurse_basin["basin"].iloc[0] == pd.Series(fitted.labels_[truth == 0]).mode()[0]


# -- statistics over conditions, seeds and question groups ------------------------------------


def _labelled(rng: np.random.Generator, shares: dict[str, list[float]], seeds: dict[str, list[float]]) -> pd.DataFrame:
    """Rows with a ``basin`` drawn per condition from ``shares``, 6 question groups x 20 samples per seed."""
    rows = []
    for condition, p in shares.items():
        for seed in seeds[condition]:
            for g in range(6):
                for i in range(20):
                    rows.append(
                        {
                            "condition": condition,
                            "adapter": condition if np.isnan(seed) else f"{condition}:{int(seed)}",
                            "train_seed": seed,
                            "group": f"q{g}",
                            "probe_id": f"q{g}",
                            "temperature": 1.0,
                            "sample_index": i,
                            "basin": int(rng.choice(len(p), p=p)) - 1,
                        }
                    )
    return pd.DataFrame(rows)


def test_occupancy_keeps_the_base_model_whose_seed_is_missing() -> None:
    """A NaN train_seed is one seed of its own: the base condition's interval must not collapse to [0, 0]."""
    from persona_space.basins import occupancy

    frame = _labelled(
        np.random.default_rng(0),
        {"base": [0.1, 0.5, 0.4], "red": [0.1, 0.2, 0.7]},
        {"base": [np.nan], "red": [0.0, 1.0, 2.0]},
    )
    occ = occupancy(frame)
    base = occ[occ["condition"] == "base"]
    assert (base["samples"] == 120).all() and (base["high"] > base["low"]).all()
    assert base["share"].sum() == pytest.approx(1.0)
    red = occ[occ["condition"] == "red"]
    assert (red["seeds"] == 3).all() and red["seed_low"].notna().all()
    assert red["interval"].iloc[0] == "95% bootstrap over 6 question groups x 3 training seeds, 2000 resamples"
    assert base["interval"].iloc[0] == "95% bootstrap over 6 question groups, 2000 resamples"


def test_a_basin_nobody_reached_can_still_hold_a_few_percent() -> None:
    from persona_space.basins import occupancy

    frame = _labelled(np.random.default_rng(1), {"base": [0.0, 0.5, 0.5]}, {"base": [np.nan]})
    frame.loc[0, "basin"] = -1  # one noise sample so that the noise row exists for this condition
    occ = occupancy(frame.assign(condition=np.where(frame["sample_index"] % 2 == 0, "base", "other")))
    empty = occ[(occ["condition"] == "other") & (occ["basin"] == -1)].iloc[0]
    assert empty["count"] == 0 and empty["samples"] == 60 and empty["low"] == 0.0
    assert 0.03 < empty["high"] < 0.2  # "up to a few percent", not [0, 0]


def test_occupancy_difference_finds_a_planted_shift_with_holm_adjustment() -> None:
    from persona_space.basins import occupancy_difference

    frame = _labelled(
        np.random.default_rng(2),
        {"base": [0.1, 0.45, 0.45], "same": [0.1, 0.45, 0.45], "red": [0.1, 0.15, 0.75]},
        {"base": [np.nan], "same": [0.0, 1.0], "red": [0.0, 1.0]},
    )
    table = occupancy_difference(frame, "base")
    assert set(table["condition"]) == {"same", "red"} and len(table) == 6
    red = table[table["condition"] == "red"].set_index("basin")
    assert red.loc[1, "difference"] == pytest.approx(red.loc[1, "value"] - red.loc[1, "reference_value"])
    assert red.loc[0, "high"] < 0 < red.loc[1, "low"]
    assert red.loc[0, "p_adjusted"] < 0.05 and red.loc[1, "p_adjusted"] < 0.05
    same = table[table["condition"] == "same"]
    assert (same["low"] < 0).all() and (same["high"] > 0).all()
    assert (table["p_adjusted"] >= table["p_value"]).all()
    assert set(table["adjustment"]) == {"Holm over 6 tests"}
    assert "x 2 training seeds" in table["interval"].iloc[0] and "paired with base" in table["interval"].iloc[0]


def test_divergence_p_values_are_adjusted_over_pairs(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    frame = fitted.frame_.copy()
    third = frame.assign(adapter="c")
    from persona_space.basins import divergence

    table = divergence(pd.concat([frame, third], ignore_index=True), "adapter", n_perm=199, adjust="bh")
    assert len(table) == 3 and set(table["adjustment"]) == {"Benjamini-Hochberg over 3 tests"}
    assert (table["p_adjusted"] >= table["p_value"]).all()
    assert (table["jsd_low"] <= table["jsd"] + 1e-9).all() and (table["jsd"] <= table["jsd_high"] + 0.05).all()


def test_transitions_of_paired_samples_differ_from_the_product_of_the_margins(
    make_tiny_model_dir: Any, tmp_path: Any
) -> None:
    """Paired streams: a zero adapter stays on the diagonal, a small one mostly does; independent ones do not."""
    from conftest import make_lora
    from persona_space.basins import stay_share, transitions

    folder = make_tiny_model_dir("llama", initializer_range=1.0)
    model = ps.load_model(str(folder), device="cpu", dtype="float32")
    zero = make_lora(folder, tmp_path / "zero", seed=5, scale=0.0)
    small = make_lora(folder, tmp_path / "small", seed=5, scale=0.05)
    probes = ps.probes.ProbeSet.from_list(["Who are you?", "Describe yourself."], name="two")
    adapters = {"base": None, "zero": zero, "small": small}
    stays = {}
    for pairing in ("paired", "independent"):
        df = ps.sample(model, probes, adapters=adapters, n=40, max_new_tokens=4, pairing=pairing, progress=False).df
        # a stand-in for a basin map: the answer's first character class decides its "basin"
        frame = df.assign(basin=df["text"].map(lambda t: sum(map(ord, t.strip()[:3])) % 4))
        zero_flows = transitions(frame, "base", "zero")
        assert bool(zero_flows["paired_streams"].all()) is (pairing == "paired")
        stays[pairing] = (stay_share(zero_flows), stay_share(transitions(frame, "base", "small")))
    (zero_stay, zero_expected), (small_stay, small_expected) = stays["paired"]
    assert zero_stay == 1.0 and zero_expected < 0.5  # every pair on the diagonal
    assert small_stay > small_expected + 0.25
    (_, _), (small_ind, small_ind_expected) = stays["independent"]
    assert abs(small_ind - small_ind_expected) < 0.15


# -- the grain: basins and sub-basins ---------------------------------------------------------


@pytest.fixture(scope="module")
def sub_themed() -> dict[str, Any]:
    """Five planted personas, each with three sub-themes of 30 samples (a persona centre plus a theme offset)."""
    rng = np.random.default_rng(3)
    vectors, persona, theme = [], [], []
    for p in range(5):
        centre = rng.normal(size=DIM)
        centre /= np.linalg.norm(centre)
        for t in range(3):
            offset = rng.normal(size=DIM)
            offset *= 0.55 / np.linalg.norm(offset)
            vectors.append(_blob(rng, (centre + offset) / np.linalg.norm(centre + offset), 30, spread=0.12))
            persona += [p] * 30
            theme += [p * 3 + t] * 30
    frame = pd.DataFrame(
        {"text": [f"persona {p} theme {t} sample {i}" for i, (p, t) in enumerate(zip(persona, theme, strict=True))]}
    )
    return {"frame": frame, "vectors": np.concatenate(vectors), "persona": persona, "theme": theme}


def test_sub_themed_personas_are_basins_and_their_themes_sub_basins(sub_themed: dict[str, Any]) -> None:
    fitted = BasinMap(seed=0).fit(sub_themed["frame"], vectors=sub_themed["vectors"])  # default parameters
    table = fitted.to_frame()
    assert adjusted_rand_score(sub_themed["persona"], table["basin"]) >= 0.9
    assert adjusted_rand_score(sub_themed["theme"], table["sub_basin"]) >= 0.9
    assert fitted.n_basins_ == 5 and fitted.n_sub_basins_ >= 12
    assert fitted.grain_["criterion"].startswith("calibrated link cut") and fitted.grain_["basins"] == 5
    below, above = fitted.grain_["gap"]
    assert below < fitted.grain_["threshold"] < above
    # every sub-basin sits inside one basin, and the tables name both levels
    pairs = table[table["sub_basin"] >= 0].groupby("sub_basin")["basin"].nunique()
    assert (pairs == 1).all()
    assert set(fitted.sub_basins_.columns) >= {"sub_basin", "basin", "name", "size", "keywords", "exemplars"}
    assert {"sub_basin", "sub_basin_name", "level"} <= set(table.columns) and set(table["level"]) == {"basin"}
    fine = fitted.to_frame(level="sub_basin")
    assert (fine["basin"] == table["sub_basin"]).all() and set(fine["level"]) == {"sub_basin"}
    assert "5 basins (" in repr(fitted)


def test_a_map_without_sub_themes_keeps_its_basins(planted: dict[str, Any]) -> None:
    fitted: BasinMap = planted["map"]
    assert fitted.n_basins_ == fitted.n_sub_basins_ == len(PERSONAS)
    assert fitted.grain_["criterion"].startswith("sub-basins are the basins")


def test_regrain_asks_for_a_grain_without_refitting(sub_themed: dict[str, Any], tmp_path: Any) -> None:
    fitted = BasinMap(seed=0).fit(sub_themed["frame"], vectors=sub_themed["vectors"])
    subs = fitted.frame_["sub_basin"].copy()
    fitted.regrain("fine")
    assert fitted.n_basins_ == fitted.n_sub_basins_ and (fitted.frame_["sub_basin"] == subs).all()
    fitted.regrain(3)
    assert fitted.n_basins_ == 3 and fitted.grain_["criterion"] == "3 basins asked for"
    loaded = BasinMap.load(fitted.save(tmp_path / "three"))
    assert loaded.n_basins_ == 3 and loaded.grain_ == fitted.grain_ and loaded.parents_ == fitted.parents_
    np.testing.assert_array_equal(loaded.to_frame()["sub_basin"], fitted.to_frame()["sub_basin"])
    with pytest.raises(ConfigError, match="grain must be 'auto', 'fine' or a number of basins >= 1, got 0"):
        fitted.regrain(0)
    with pytest.raises(ConfigError, match="level must be 'basin' or 'sub_basin', got 'leaf'"):
        fitted.to_frame(level="leaf")  # type: ignore[arg-type]


def test_occupancy_at_the_sub_basin_level(sub_themed: dict[str, Any]) -> None:
    frame = sub_themed["frame"].assign(condition=np.where(np.arange(450) % 2, "a", "b"))
    frame["group"] = [f"q{i % 9}" for i in range(450)]
    fitted = BasinMap(seed=0).fit(frame, vectors=sub_themed["vectors"])
    top = fitted.occupancy()
    fine = fitted.occupancy(level="sub_basin")
    assert set(top["level"]) == {"basin"} and set(fine["level"]) == {"sub_basin"}
    assert top.groupby("condition")["share"].sum().round(6).eq(1).all()
    assert fine["basin"].nunique() == fitted.n_sub_basins_ + int((fitted.frame_["sub_basin"] < 0).any())


@pytest.mark.slow
def test_real_embedder_finds_personas_at_the_top_and_sub_themes_below() -> None:
    """Six templated personas, three sub-themes each, embedded by the real MiniLM: both levels at ARI >= 0.9."""
    from personas import persona_texts

    rows = pd.DataFrame(persona_texts())
    fitted = BasinMap(seed=0).fit(rows)
    table = fitted.to_frame()
    assert adjusted_rand_score(rows["persona"], table["basin"]) >= 0.9
    assert adjusted_rand_score(rows["sub"], table["sub_basin"]) >= 0.9
    assert fitted.n_basins_ == 6


# -- the grain on a family of generated worlds (tests/worlds.py) -------------------------------


def _grain_figures(worlds: list[Any], labels: list[np.ndarray]) -> dict[str, float]:
    """Basin-level adjusted Rand over structured worlds, false merges over unrelated ones, splits of single ones."""
    from worlds import false_merge, split

    structured = [
        adjusted_rand_score(w.persona, lab) for w, lab in zip(worlds, labels, strict=True) if w.kind == "structured"
    ]
    merges = [false_merge(w.persona, lab) for w, lab in zip(worlds, labels, strict=True) if w.kind == "unrelated"]
    splits = [split(lab) for w, lab in zip(worlds, labels, strict=True) if w.kind == "single"]
    return {
        "median": float(np.median(structured)),
        "p10": float(np.quantile(structured, 0.1)),
        "false_merge": float(np.mean(merges)),
        "split": float(np.mean(splits)),
    }


def test_the_grain_holds_on_a_family_of_planted_worlds() -> None:
    """200 generated worlds (2-10 personas, 1-4 sub-themes, 15-200 texts each, up to 10:1), a quarter null worlds.

    Planted vectors with the link distances MiniLM gives these worlds' texts, and the
    sub-basins a density clustering leaves (some sub-themes split in two, 2 % noise).
    """
    from persona_space.basins._grain import merge_sub_basins
    from worlds import make_worlds, planted_sub_basins, planted_vectors

    worlds = make_worlds(200, seed=3)
    labels = []
    for world in worlds:
        vectors = planted_vectors(world)
        subs = planted_sub_basins(world, vectors)
        parents, info = merge_sub_basins(vectors, subs, "auto")
        labels.append(np.array([parents.get(int(s), -1) for s in subs]))
        assert info["basins"] == len(set(parents.values()))
    got = _grain_figures(worlds, labels)
    assert got["median"] >= 0.95 and got["p10"] >= 0.85, got
    assert got["false_merge"] <= 0.05 and got["split"] <= 0.1, got


def test_grain_records_its_criterion_and_figures() -> None:
    from persona_space.basins._grain import MERGE_DISTANCE, VALIDATION, choose_merges, merge_sub_basins
    from worlds import make_world, planted_sub_basins, planted_vectors

    world = make_world(11, n_personas=4, per_persona=90, sub_themes=3)
    vectors = planted_vectors(world)
    _, info = merge_sub_basins(vectors, planted_sub_basins(world, vectors), "auto")
    assert info["basins"] == 4 and info["threshold"] == MERGE_DISTANCE
    assert info["criterion"].startswith("calibrated link cut at 0.38: links up to")
    assert info["validation"] == VALIDATION and VALIDATION["held_out"]["worlds"] >= 200
    assert len(info["merge_heights"]) == info["sub_basins"] - 1
    below, above = info["gap"]
    assert below < MERGE_DISTANCE < above
    assert choose_merges(np.array([0.1, 0.2, 0.3])) == 3  # one basin
    assert choose_merges(np.array([0.6, 0.7])) == 0  # the sub-basins are the basins
    assert choose_merges(np.array([0.1, 0.12, 0.15, 0.45, 0.5])) == 3
    assert choose_merges(np.array([])) == 0


@pytest.mark.parametrize(("kind", "seed"), [("structured", 21), ("unrelated", 22), ("single", 23)])
def test_fitted_maps_of_planted_worlds_find_the_personas(kind: Any, seed: int) -> None:
    """End to end (UMAP, HDBSCAN, the grain) on planted vectors: one world of each kind."""
    from worlds import make_world, planted_vectors

    world = make_world(seed, kind)
    fitted = BasinMap(seed=0).fit(world.texts, vectors=planted_vectors(world))
    assert fitted.n_basins_ == world.n_personas, fitted.grain_
    if kind != "single":
        assert adjusted_rand_score(world.persona, fitted.labels_) >= 0.9, fitted.grain_


@pytest.mark.slow
def test_the_grain_holds_on_generated_worlds_embedded_by_minilm(tmp_path: Any) -> None:
    """A smaller family of generated worlds, texts embedded by the real MiniLM, fitted with default parameters.

    Plus the case the automatic grain used to miss: six personas, three sub-themes
    each, 60 texts a persona, three clauses a text.
    """
    from persona_space.embedding import Embedder
    from worlds import make_world, make_worlds

    embedder = Embedder(cache=tmp_path)
    worlds = make_worlds(32, seed=4)
    labels = [BasinMap(embedder=embedder, seed=0).fit(w.texts).labels_ for w in worlds]
    got = _grain_figures(worlds, labels)
    assert got["median"] >= 0.95 and got["p10"] >= 0.8, got
    assert got["false_merge"] <= 0.125 and got["split"] <= 0.25, got
    six = make_world(7, n_personas=6, per_persona=60, sub_themes=3, style="three")
    fitted = BasinMap(embedder=embedder, seed=0).fit(six.texts)
    assert fitted.n_basins_ == 6 and adjusted_rand_score(six.persona, fitted.labels_) >= 0.95, fitted.grain_


def test_manifest_scans_the_environment_once_and_a_loaded_map_keeps_the_writers(
    planted: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from persona_space import provenance

    fitted: BasinMap = planted["map"]
    first = fitted.manifest["environment"]
    folder = fitted.save(tmp_path / "map")

    def no_scan() -> dict[str, Any]:
        raise AssertionError("the environment was scanned again")

    monkeypatch.setattr(provenance, "environment", no_scan)
    assert fitted.manifest["environment"] == first  # kept, not rescanned (a git call each time before)
    written = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    written["environment"] = {**written["environment"], "python": "the writer's"}
    (folder / "manifest.json").write_text(json.dumps(written), encoding="utf-8")
    loaded = BasinMap.load(folder)
    assert loaded.manifest["environment"]["python"] == "the writer's"  # not this machine's
