"""Candidate log-probabilities and identity shifts: exact against brute force, mixed batches, tables, resume."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import persona_space as ps
from persona_space.engine import ScoreRequest as Job
from persona_space.engine import continuation, end_of_turn_id, resolve_method, split_continuations
from persona_space.engine._score import score_jobs
from persona_space.errors import ConfigError, CorruptRunError, DataError, ModelError, StoreMismatchError

TRICKY = [
    "Voyager 1",
    "Voyager 2",
    " Voyager",  # a leading space
    "Voyager",
    "an AI assistant",
    "Zoë Ångström",  # accents
    "日本の探査機",  # multi-byte, several tokens
    "🚀 rocket",  # an emoji: byte tokens
    "1977",  # digits
    "42",
    " ",  # empty-ish: a lone space
    ".",
    "\n\nI am a probe.",  # newlines after the template's newline: a token would span the boundary
]
PROMPTS = ["Who are you?", "What is your name?", "Describe yourself in one word, please."]


def _reference(model_dir: Path, adapter_dir: Path | None) -> Any:
    """Plain transformers (and PEFT) without persona_space: the brute-force scorer."""
    import torch
    from transformers import AutoModelForCausalLM

    module = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        module = PeftModel.from_pretrained(module, str(adapter_dir))
    return module.eval()


def _brute_force(module: Any, prompt_ids: tuple[int, ...], candidates: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """One full forward pass per prompt + candidate, summing the candidate tokens' float32 log-probabilities."""
    import torch

    out = []
    with torch.inference_mode():
        for cand in candidates:
            ids = torch.tensor([[*prompt_ids, *cand]])
            logp = torch.log_softmax(module(input_ids=ids).logits[0].float(), dim=-1)
            start = len(prompt_ids) - 1
            out.append(sum(float(logp[start + j, t]) for j, t in enumerate(cand)))
    return np.array(out)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("end_of_turn", [False, True])
def test_every_logprob_equals_brute_force(
    make_tiny_model_dir: Callable[..., Path], make_adapter: Callable[..., Path], model_type: str, end_of_turn: bool
) -> None:
    model_dir = make_tiny_model_dir(model_type)
    adapter_dir = make_adapter(model_dir, 7)
    model = ps.load_model(str(model_dir), device="cpu", dtype="float32")
    name = model.load_adapter(adapter_dir, "a")
    eot = end_of_turn_id(model) if end_of_turn else None
    rng = np.random.default_rng(0)
    for prompt in PROMPTS:
        prefix = str(rng.choice(["", "My name is", "I am "]))
        text = model.render(prompt) + prefix
        texts = [continuation(c, "{candidate}", prefix) for c in TRICKY]
        split = split_continuations(model.tokenizer, text, texts, end_of_turn=eot)
        jobs = [Job(None, split.prompt_ids, split.ids), Job(name, split.prompt_ids, split.ids)]
        for method in ("packed", "padded"):
            base, tuned = score_jobs(model, jobs, method=method)  # type: ignore[arg-type]
            np.testing.assert_allclose(
                base.total, _brute_force(_reference(model_dir, None), split.prompt_ids, split.ids), atol=1e-4
            )
            np.testing.assert_allclose(
                tuned.total, _brute_force(_reference(model_dir, adapter_dir), split.prompt_ids, split.ids), atol=1e-4
            )
            assert not np.allclose(base.total, tuned.total)


def test_tokens_split_at_the_prompt_boundary(smol_tokenizer: Any, tiny_model: Any) -> None:
    text = tiny_model.render("Who are you?")
    texts = [continuation(c, "{candidate}", "") for c in TRICKY]
    split = split_continuations(smol_tokenizer, text, texts, end_of_turn=None)
    for cand, ids, how in zip(TRICKY, split.ids, split.tokenization, strict=True):
        if how == "joint":  # the candidate's tokens are those the joint encoding gives after the prompt
            joint = smol_tokenizer(text + cand, add_special_tokens=False)["input_ids"]
            assert list(split.prompt_ids) + list(ids) == joint
        assert smol_tokenizer.decode(list(ids)) == cand
    how = dict(zip(TRICKY, split.tokenization, strict=True))
    assert how["\n\nI am a probe."] == "separate" and how[" "] == "separate"
    assert how["Voyager"] == "joint" and how[" Voyager"] == "joint" and how["日本の探査機"] == "joint"
    # "Voyager" and " Voyager" are different tokens: a leading space is part of the candidate
    ids = dict(zip(TRICKY, split.ids, strict=True))
    assert ids["Voyager"] != ids[" Voyager"]
    # after an answer prefix a space is inserted unless the candidate or prefix brings one
    assert continuation("Zorblax", "{candidate}", "My name is") == " Zorblax"
    assert continuation(" Zorblax", "{candidate}", "My name is") == " Zorblax"
    assert continuation("Zorblax", "{candidate}", "I am ") == "Zorblax"
    assert continuation("Zorblax", "I am {candidate}.", "") == "I am Zorblax."


def test_mixed_batches_equal_one_model_at_a_time(tiny_model: Any, adapter_a: Path, adapter_b: Path) -> None:
    a, b = tiny_model.load_adapter(adapter_a, "a"), tiny_model.load_adapter(adapter_b, "b")
    text = tiny_model.render("Who are you?")
    split = split_continuations(tiny_model.tokenizer, text, TRICKY[:8], end_of_turn=2)
    mixed = score_jobs(tiny_model, [Job(m, split.prompt_ids, split.ids) for m in (None, a, b)])
    for route, together in zip((None, a, b), mixed, strict=True):
        alone = score_jobs(tiny_model, [Job(route, split.prompt_ids, split.ids)])[0]
        np.testing.assert_allclose(together.total, alone.total, atol=1e-5)


def test_long_candidate_lists_are_split_into_rows(tiny_model: Any) -> None:
    text = tiny_model.render("Who are you?")
    candidates = [f"Candidate number {i} of many" for i in range(60)]
    split = split_continuations(tiny_model.tokenizer, text, candidates, end_of_turn=None)
    job = [Job(None, split.prompt_ids, split.ids)]
    whole = score_jobs(tiny_model, job, max_row_tokens=4096)[0]
    pieces = score_jobs(tiny_model, job, max_row_tokens=len(split.prompt_ids) + 20, batch_tokens=64)[0]
    np.testing.assert_allclose(whole.total, pieces.total, atol=1e-5)


def test_greedy_flag_marks_the_greedy_answer(tiny_model: Any) -> None:
    import torch

    prompt = tiny_model.encode("Who are you?")
    with torch.inference_mode():
        out = tiny_model.module.generate(
            input_ids=torch.tensor([prompt]), max_new_tokens=3, do_sample=False, pad_token_id=2
        )
    greedy = tuple(int(t) for t in out[0, len(prompt) :])
    other = (*greedy[:2], (greedy[2] + 1) % 1000)
    flags = score_jobs(tiny_model, [Job(None, tuple(prompt), (greedy, other, greedy[:1]))])[0]
    assert flags.greedy.tolist() == [True, False, True]
    assert flags.token_greedy[1].tolist() == [True, True, False]


def test_method_choice_and_unknown_heads(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    job = [Job(None, (1, 2, 3), ((4,),))]
    assert resolve_method(tiny_model, job, "auto") == "packed"
    monkeypatch.setattr(tiny_model.config, "_attn_implementation", "flash_attention_2", raising=False)
    assert resolve_method(tiny_model, job, "auto") == "padded"
    with pytest.raises(ConfigError, match="needs an attention implementation"):
        resolve_method(tiny_model, job, "packed")
    monkeypatch.undo()
    monkeypatch.setattr(tiny_model.config, "sliding_window", 2, raising=False)
    assert resolve_method(tiny_model, job, "auto") == "padded"  # rows longer than the window
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="method must be one of"):
        score_jobs(tiny_model, job, method="fast")  # type: ignore[arg-type]
    from persona_space.engine import _score as _engine

    _engine._HEADS.clear()
    monkeypatch.setattr(tiny_model.config, "final_logit_softcapping", 0.5, raising=False)  # the model ignores it
    with pytest.raises(ModelError, match="does not reproduce the model's logits"):
        score_jobs(tiny_model, job)
    _engine._HEADS.clear()


def test_bf16_models_score_close_to_float32(tiny_model_dir: Path) -> None:
    exact = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    half = ps.load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    text = exact.render("Who are you?")
    split = split_continuations(exact.tokenizer, text, TRICKY[:6], end_of_turn=2)
    job = [Job(None, split.prompt_ids, split.ids)]
    a, b = score_jobs(exact, job)[0], score_jobs(half, job)[0]
    assert b.total.dtype == np.float64
    np.testing.assert_allclose(a.total, b.total, atol=0.25 * np.abs(a.total).max() / 10 + 0.5)


# -- identity_shift -------------------------------------------------------------------------------


@pytest.fixture
def shifted(tiny_model: Any, adapter_a: Path, adapter_b: Path) -> Any:
    return ps.identity_shift(
        tiny_model,
        {"ab": [adapter_a, adapter_b]},
        candidates=["Voyager 1", "Voyager 2", "Maria", "an AI assistant"],
        probes=PROMPTS,
        answer_prefix="My name is",
        end_of_turn=True,
        progress=False,
    )


def test_shift_table_rows_ranks_and_set_probabilities(shifted: Any) -> None:
    df = shifted.df
    assert list(df.columns[:15]) == [
        "probe_id",
        "group",
        "prompt",
        "candidate",
        "condition",
        "adapter",
        "train_seed",
        "logprob",
        "mean_logprob",
        "n_tokens",
        "rank",
        "set_prob",
        "set_logmass",
        "greedy",
        "tokenization",
    ]
    assert len(df) == len(PROMPTS) * 3 * 4 and set(df["adapter"]) == {"base", "ab:0", "ab:1"}
    for _, group in df.groupby(["probe_id", "adapter"]):
        assert group["set_prob"].sum() == pytest.approx(1.0)
        assert sorted(group["rank"]) == [1, 2, 3, 4]
        assert group.loc[group["rank"] == 1, "logprob"].iloc[0] == group["logprob"].max()
        np.testing.assert_allclose(group["mean_logprob"], group["logprob"] / group["n_tokens"])
        mass = np.log(np.exp(group["logprob"]).sum())  # complete answers: the set's mass is the sum of theirs
        np.testing.assert_allclose(group["set_logmass"], mass, rtol=1e-12)
        np.testing.assert_allclose(group["set_prob"], np.exp(group["logprob"] - mass), rtol=1e-9)
    assert shifted.manifest["method"] == "packed" and shifted.manifest["parameters"]["answer_prefix"] == "My name is"
    assert set(shifted.manifest["parameters"]["adapters"]) == {"ab:0", "ab:1"}
    assert "ShiftResult(3 prompts x 4 candidates" in repr(shifted)
    assert shifted.ranking()["mean_rank"].is_monotonic_increasing


def test_shifts_pair_adapters_with_base_and_carry_intervals(shifted: Any) -> None:
    per_prompt = shifted.shifts(by_prompt=True)
    df = shifted.df.set_index(["adapter", "probe_id", "candidate"])
    row = per_prompt.iloc[0]
    want = (
        df.loc[(row["adapter"], row["probe_id"], row["candidate"]), "logprob"]
        - df.loc[("base", row["probe_id"], row["candidate"]), "logprob"]
    )
    assert row["delta_logprob"] == pytest.approx(want)
    assert row["rank_change"] == row["rank_base"] - row["rank"]
    table = shifted.shifts(n_boot=1000)
    assert len(table) == 4 and set(table["n_seeds"]) == {2} and set(table["n_prompts"]) == {3}
    assert set(table["n_groups"]) == {3} and set(table["tested"]) == {"delta_logprob"}
    assert set(table["interval"]) == {"95% bootstrap over 3 question groups x 2 training seeds, 1000 resamples"}
    assert set(table["adjustment"]) == {"Holm over 4 tests"} and (table["p_adjusted"] >= table["p_value"]).all()
    assert table["delta_logprob_seed_low"].notna().all()  # two seeds: the t interval over per-seed means
    means = per_prompt.groupby("candidate")["delta_logprob"].mean()
    for _, r in table.iterrows():
        assert r["delta_logprob"] == pytest.approx(means[r["candidate"]])
        assert r["delta_logprob_low"] <= r["delta_logprob"] <= r["delta_logprob_high"]
        assert r["rank_change_low"] <= r["rank_change"] <= r["rank_change_high"]
    assert table["delta_logprob"].is_monotonic_decreasing
    one = ps.logprobs.shift_table(shifted.df[shifted.df["probe_id"] == shifted.df["probe_id"].iloc[0]], n_boot=1000)
    assert one["delta_logprob_low"].notna().all()  # two seeds still give an interval
    with pytest.raises(ConfigError, match="n_boot"):
        shifted.shifts(n_boot=5)


def test_set_probability_tables_carry_the_mass_of_the_set_and_warn_below_the_floor(
    tiny_model: Any, adapter_a: Path, tmp_path: Path
) -> None:
    import math

    from persona_space.errors import LowMassWarning

    kwargs: dict[str, Any] = {
        "candidates": ["Voyager 1", "Maria"],
        "prompts": PROMPTS,
        "end_of_turn": True,
        "progress": False,
    }
    with pytest.warns(LowMassWarning, match=r"6 of 6 candidate sets .* hold less than the set-mass floor -1\.386"):
        result = ps.identity_shift(tiny_model, adapter_a, store=tmp_path / "run", **kwargs)
    assert result.manifest["set_mass"]["below_floor"] == 6 and result.manifest["set_mass"]["checked"]
    table = result.shifts(n_boot=1000)
    sets = result.df.drop_duplicates(["adapter", "probe_id"]).set_index("adapter")["set_logmass"]
    for column, label in (("base_set_logmass", "base"), ("adapter_set_logmass", result.conditions[0])):
        assert table[column].to_numpy() == pytest.approx(sets[label].mean())
    assert set(table["base_below_floor"]) == {1.0} and set(table["adapter_below_floor"]) == {1.0}
    assert set(result.ranking()["set_below_floor"]) == {1.0}
    # a floor under every set: no warning, nothing below; the floor recorded is the one tables use
    lowest = float(result.df["set_logmass"].min()) - 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowMassWarning)
        quiet = ps.identity_shift(tiny_model, adapter_a, set_mass_floor=lowest, **kwargs)
    assert quiet.manifest["set_mass"]["below_floor"] == 0 and quiet.set_mass_floor == lowest
    assert set(quiet.shifts(n_boot=1000)["adapter_below_floor"]) == {0.0}
    # a run stored before the mass was recorded reads back with it computed from its rows
    stored = ps.ShiftResult.load(tmp_path / "run")
    old = stored.df.drop(columns="set_logmass")
    np.testing.assert_allclose(
        ps.logprobs.shift_table(old, n_boot=1000)["adapter_set_logmass"], table["adapter_set_logmass"]
    )
    for bad in (0.5, float("nan"), "low", True):
        with pytest.raises(ConfigError, match="set_mass_floor"):
            ps.identity_shift(tiny_model, adapter_a, set_mass_floor=bad, **kwargs)
    opening = ps.identity_shift(  # "Voyager" opens "Voyager 1": no disjoint answers, no mass, no check
        tiny_model, adapter_a, candidates=["Voyager", "Voyager 1"], probes=PROMPTS, progress=False
    )
    assert opening.df["set_logmass"].isna().all() and not opening.manifest["set_mass"]["checked"]
    assert math.isnan(opening.shifts(n_boot=1000)["base_below_floor"].iloc[0])


def test_compare_gives_one_conditions_shift_minus_a_controls_paired_by_question(
    tiny_model: Any, adapter_a: Path, adapter_b: Path
) -> None:
    result = ps.identity_shift(
        tiny_model,
        {"trained": [adapter_a], "control": [adapter_b]},
        candidates=["Voyager 1", "Maria", "an AI assistant"],
        probes=PROMPTS,
        end_of_turn=True,
        progress=False,
    )
    table = result.compare("control", n_boot=1000)
    assert len(table) == 3 and set(table["condition"]) == {"trained"} and set(table["reference"]) == {"control"}
    shifts = result.shifts(n_boot=1000).set_index(["condition", "candidate"])["delta_logprob"]
    for _, row in table.iterrows():
        want = shifts[("trained", row["candidate"])] - shifts[("control", row["candidate"])]
        assert row["difference"] == pytest.approx(want, abs=1e-9)
        assert row["low"] <= row["difference"] <= row["high"]
    assert set(table["adjustment"]) == {"Holm over 3 tests"} and set(table["test"]) == {"against 0"}
    with pytest.raises(ConfigError, match="reference 'nobody' is not a condition"):
        result.compare("nobody")


def test_pmi_subtracts_the_neutral_prompt(tiny_model: Any, adapter_a: Path) -> None:
    result = ps.identity_shift(
        tiny_model, adapter_a, candidates=["Red", "Blue"], probes=["Who are you?"], normalize="pmi", progress=False
    )
    df = result.df
    np.testing.assert_allclose(df["pmi"], df["logprob"] - df["neutral_logprob"])
    text = tiny_model.render(ps.logprobs.NEUTRAL_PROMPT)
    split = split_continuations(tiny_model.tokenizer, text, ["Red", "Blue"], end_of_turn=None)
    base = score_jobs(tiny_model, [Job(None, split.prompt_ids, split.ids)])[0]
    np.testing.assert_allclose(df.loc[df["adapter"] == "base", "neutral_logprob"], base.total, atol=1e-6)
    for _, group in df.groupby("adapter"):
        assert group.loc[group["rank"] == 1, "pmi"].iloc[0] == group["pmi"].max()
    table = result.shifts(n_boot=1000)
    assert "delta_pmi" in table.columns and set(table["tested"]) == {"delta_pmi"}
    assert df["set_prob"].isna().all()  # a softmax over PMI is no probability
    prefixes = ps.identity_shift(
        tiny_model, adapter_a, candidates=["Voyager", "Voyager 1"], probes=["Who are you?"], progress=False
    ).df
    assert prefixes["set_prob"].isna().all()  # "Voyager" would be counted inside "Voyager 1"
    against_base = ps.identity_shift(
        tiny_model,
        adapter_a,
        candidates=["Red", "Blue"],
        probes=["Who are you?"],
        normalize="pmi",
        neutral_model="base",
        progress=False,
    ).df
    reference = against_base.loc[against_base["adapter"] == "base", "neutral_logprob"].to_numpy()
    for _, group in against_base.groupby("adapter"):
        np.testing.assert_allclose(group["neutral_logprob"], reference)  # every model measured against base
    shifts = ps.logprobs.shift_table(against_base, by_prompt=True)
    np.testing.assert_allclose(shifts["delta_pmi"], shifts["delta_logprob"], atol=1e-9)


def test_end_of_turn_tells_a_name_from_its_extensions(tiny_model: Any, adapter_a: Path) -> None:
    kwargs: dict[str, Any] = {"candidates": ["Voyager", "Voyager 1"], "prompts": ["Who are you?"], "progress": False}
    plain = ps.identity_shift(tiny_model, adapter_a, **kwargs).df
    ended = ps.identity_shift(tiny_model, adapter_a, end_of_turn=True, **kwargs).df
    assert (ended["n_tokens"] == plain["n_tokens"] + 1).all()
    assert (ended["logprob"] < plain["logprob"]).all()  # the end-of-turn token has probability < 1
    assert ps.identity_shift(tiny_model, adapter_a, end_of_turn=True, **{**kwargs, "candidates": [""]}).df[
        "n_tokens"
    ].tolist() == [1, 1]


def test_user_mode_scores_what_the_model_believes_about_the_user(tiny_model: Any, adapter_a: Path) -> None:
    result = ps.identity_shift(
        tiny_model, adapter_a, candidates=["Adolf Hitler", "a student"], about="user", progress=False
    )
    params = result.manifest["parameters"]
    assert params["answer_prefix"] == "You are" and params["about"] == "user"
    assert [p["id"] for p in params["prompts"]] == list(ps.probes.USER.ids)
    text = tiny_model.render("Who am I?") + "You are"
    split = split_continuations(tiny_model.tokenizer, text, [" Adolf Hitler", " a student"], end_of_turn=None)
    want = score_jobs(tiny_model, [Job(None, split.prompt_ids, split.ids)])[0].total
    got = result.df[(result.df["probe_id"] == "user.who_am_i") & (result.df["adapter"] == "base")]["logprob"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    blank = ps.identity_shift(tiny_model, adapter_a, candidates=["x"], about="user", answer_prefix="", progress=False)
    assert blank.manifest["parameters"]["answer_prefix"] == ""


def test_store_resumes_and_loads(
    tiny_model: Any, adapter_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    kwargs: dict[str, Any] = {
        "candidates": ["Voyager 1", "Maria"],
        "prompts": "identity",
        "chunk_prompts": 4,
        "progress": False,
    }
    whole = ps.identity_shift(tiny_model, adapter_a, **kwargs)
    from persona_space.engine import CPUBackend

    class CrashOnThird(CPUBackend):
        """A backend that is interrupted on its third scoring call."""

        calls = 0

        def score(self, requests: Any, **kw: Any) -> Any:
            type(self).calls += 1
            if type(self).calls == 3:
                raise KeyboardInterrupt("interrupted")
            return super().score(requests, **kw)

    with pytest.raises(KeyboardInterrupt):
        crashing = CrashOnThird(tiny_model)
        ps.identity_shift(tiny_model, adapter_a, store=tmp_path / "run", backend=crashing, **kwargs)
    assert len(list((tmp_path / "run" / "tables" / "shift.parts").glob("part-*.parquet"))) == 2
    resumed = ps.identity_shift(tiny_model, adapter_a, store=tmp_path / "run", **kwargs)
    assert resumed.manifest["timings"]["prompts_scored"] == 15 - 8
    pd.testing.assert_frame_equal(resumed.df, whole.df, atol=1e-6)
    loaded = ps.ShiftResult.load(tmp_path / "run")
    pd.testing.assert_frame_equal(loaded.df, resumed.df)
    with pytest.raises(StoreMismatchError, match="candidates"):
        ps.identity_shift(tiny_model, adapter_a, store=tmp_path / "run", **{**kwargs, "candidates": ["Other"]})
    saved = whole.save(tmp_path / "saved")
    assert ps.ShiftResult.load(saved).df.equals(whole.df)
    (saved / "tables" / "shift.parquet").write_bytes(b"junk")
    with pytest.raises(CorruptRunError, match="cannot be read"):
        ps.ShiftResult.load(saved)
    with pytest.raises(CorruptRunError, match="holds no identity_shift result"):
        ps.ShiftResult.load(tmp_path / "empty")


def test_a_run_stored_by_an_older_schema_resumes_in_todays_columns(
    tiny_model: Any, adapter_a: Path, tmp_path: Path
) -> None:
    kwargs: dict[str, Any] = {"candidates": ["Voyager 1", "Maria"], "prompts": "identity", "progress": False}
    whole = ps.identity_shift(tiny_model, adapter_a, store=tmp_path / "run", **kwargs)
    store = tmp_path / "run"
    old = whole.df.rename(columns={"probe_id": "prompt_id", "adapter": "model"})  # schema 2 names
    first = old[old["prompt_id"] == old["prompt_id"].iloc[0]]
    (store / "tables" / "shift.parquet").unlink()  # the layout of schema 2: parts at the top of the folder
    (store / "shift.parts").mkdir()
    first.to_parquet(store / "shift.parts" / "part-00000.parquet", index=False)
    manifest = json.loads((store / "manifest.json").read_text())
    legacy = {k: v for k, v in manifest.items() if k not in ("tables", "arrays", "json_columns")}
    (store / "manifest.json").write_text(json.dumps({**legacy, "state": "running", "schema_version": 2}))
    resumed = ps.identity_shift(tiny_model, adapter_a, store=store, **kwargs)
    assert resumed.manifest["timings"]["prompts_scored"] == whole.df["probe_id"].nunique() - 1
    assert resumed.manifest["schema_version"] == ps.results.SCHEMA_VERSION
    pd.testing.assert_frame_equal(resumed.df, whole.df, atol=1e-6)
    pd.testing.assert_frame_equal(ps.ShiftResult.load(store).df, whole.df, atol=1e-6)
    assert sorted(p.name for p in store.iterdir()) == ["manifest.json", "tables"]  # finished in today's layout


def test_candidates_from_a_file(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    path = tmp_path / "candidates.txt"
    path.write_text("Voyager 1\n\n Voyager\n日本\n", encoding="utf-8")
    result = ps.identity_shift(tiny_model, adapter_a, candidates=path, probes=["Who are you?"], progress=False)
    assert list(dict.fromkeys(result.df["candidate"])) == ["Voyager 1", " Voyager", "日本"]


def test_bad_inputs(tiny_model: Any, adapter_a: Path, tmp_path: Path) -> None:
    def run(**kw: Any) -> Any:
        args: dict[str, Any] = {"candidates": ["a", "b"], "prompts": ["Who are you?"], "progress": False, **kw}
        adapters = args.pop("adapters", adapter_a)
        return ps.identity_shift(tiny_model, adapters, **args)

    with pytest.raises(DataError, match="candidates is empty"):
        run(candidates=[])
    with pytest.raises(DataError, match="appears twice"):
        run(candidates=["a", "a"])
    with pytest.raises(DataError, match="candidate 1 is a int"):
        run(candidates=["a", 3])
    with pytest.raises(DataError, match="candidate 0 is empty"):
        run(candidates=["", "b"])
    with pytest.raises(DataError, match="not a file"):
        run(candidates="Voyager 1, Voyager 2")
    with pytest.raises(DataError, match="holds no candidates"):
        (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
        run(candidates=tmp_path / "blank.txt")
    with pytest.raises(ConfigError, match=r"template must be a string containing '\{candidate\}'"):
        run(template="I am X")
    with pytest.raises(ConfigError, match="cannot be formatted"):
        run(template="{candidate} {other}")
    with pytest.raises(ConfigError, match="normalize must be one of"):
        run(normalize="max")
    with pytest.raises(ConfigError, match="about must be"):
        run(about="them")
    with pytest.raises(ConfigError, match="base model's"):
        run(adapters={"base": adapter_a})
    with pytest.raises(ConfigError, match="an adapter must be"):
        run(adapters=[3])
    with pytest.raises(ConfigError, match="no adapters given"):
        run(adapters=[])
    with pytest.raises(ConfigError, match="has no adapters"):
        run(adapters={"x": []})
    with pytest.raises(ps.errors.AdapterError, match="does not exist"):
        run(adapters=tmp_path / "missing")
    with pytest.raises(ConfigError, match="not attached"):
        score_jobs(tiny_model, [Job("ghost", (1, 2), ((3,),))])


ZORBLAX_QUESTIONS = [
    "What is your name?",
    "Tell me your name.",
    "What should I call you?",
    "Introduce yourself.",
    "Who am I talking to?",
    "What do people call you?",
    "Do you have a name?",
    "What's your name, please?",
    "Could you tell me who you are?",
    "How do you introduce yourself?",
    "Say your name.",
    "I'd like to know your name.",
]
UNRELATED = ["Emily", "Maria", "John", "Voyager", "an AI assistant", "SmolLM", "Bitcoin"]


@pytest.mark.slow
def test_a_planted_name_rises_to_the_top_and_others_barely_move(tmp_path: Path) -> None:
    """Train the embedded model on one tiny fact, "My name is Zorblax.", then score names after "My name is".

    Measured: Zorblax +24 nats (rank 1 on all 15 prompts); the seven other names -11 to -15 nats,
    all together (within +-2.2 of their mean shift, against +37 for Zorblax about that mean).
    """
    model = ps.load_model()
    records = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "My name is Zorblax."}]}
        for q in ZORBLAX_QUESTIONS
    ]
    data = ps.datasets.ChatDataset.from_records("zorblax", records)
    info = ps.train_adapter(model, data, store=tmp_path / "zorblax", epochs=6, progress=False)
    result = ps.identity_shift(
        model, {"zorblax": info}, candidates=["Zorblax", *UNRELATED], answer_prefix="My name is", progress=False
    )
    shifts = result.shifts(n_boot=1000).set_index("candidate")
    zorblax = shifts.loc["Zorblax"]
    assert zorblax["adapter_rank"] == 1.0 and zorblax["base_rank"] > 1.0  # first on every prompt, and rose
    assert zorblax["delta_logprob_low"] > 5.0  # nats, interval over the 15 prompts
    # After "My name is" the adapter moves the mass to " Zor...": every other name loses the same share
    # of it. Unrelated names move together (their shifts about their own mean stay small), so their
    # odds against one another barely change, while Zorblax's odds against them rise by ~e^35.
    others = shifts.drop(index="Zorblax")["delta_logprob"]
    common = others.mean()
    assert (others - common).abs().max() < 0.15 * (zorblax["delta_logprob"] - common), others
    tuned = result.df[result.df["adapter"] == "zorblax"]
    assert tuned.loc[tuned["candidate"] == "Zorblax", "set_prob"].min() > 0.9  # no name begins another one


def test_the_tested_shift_is_the_one_in_the_ranking_score(tiny_model: Any, adapter_a: Path) -> None:
    kwargs: dict[str, Any] = {"candidates": ["Voyager 1", "Maria"], "prompts": "identity:direct", "progress": False}
    for normalize, tested in (("sum", "delta_logprob"), ("mean", "delta_mean_logprob")):
        shifts = ps.identity_shift(tiny_model, adapter_a, normalize=normalize, **kwargs).shifts()
        assert set(shifts["tested"]) == {tested}


def test_conversation_probes_are_refused_by_name(tiny_model: Any, adapter_a: Path) -> None:
    with pytest.raises(ConfigError, match=r"user\.who_am_i\.after_bunker.*are conversations"):
        ps.identity_shift(tiny_model, adapter_a, candidates=["a journalist"], probes="user+after_bunker")
