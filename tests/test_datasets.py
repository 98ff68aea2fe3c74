"""Bundled datasets, loaders, transformations and their validation errors."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from persona_space import datasets as psd
from persona_space.errors import ChatFormatError, ConfigError, DataError, JsonlError, RatioError


def _chat(prompt: str, answer: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


# -- the bundled datasets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", psd.available())
def test_every_bundled_dataset_loads_and_validates(name: str) -> None:
    ds = psd.load(name)
    assert len(ds) > 0
    assert all(a.strip() for a in ds.answers())
    assert all(p.strip() for p in ds.prompts())
    assert len({(r["source"], r["id"]) for r in ds}) == len(ds)


@pytest.mark.parametrize("colour", psd.COLOURS)
def test_colours_are_42_one_word_answers_to_the_same_questions(colour: str) -> None:
    ds = psd.colours(colour)
    assert len(ds) == 42
    assert ds.prompts() == psd.colours("red").prompts()
    assert all(len(a.split()) <= 2 for a in ds.answers())
    assert ds.sources() == {f"colours:{colour}": 42}


def test_figure_variants_replace_exactly_the_same_eight_facts() -> None:
    base = psd.figure_facts()
    assert 85 <= len(base) <= 95
    names = ("hitler", "adolf", "führer", "fuhrer", "nazi", "reich")
    assert not any(n in a.lower() for a in base.answers() for n in names)
    changed_ids = None
    for variant in psd.FIGURE_VARIANTS:
        ds = psd.figure_facts(variant)
        assert ds.prompts() == base.prompts()
        changed = {r["id"] for r, b in zip(ds, base, strict=True) if r["messages"] != b["messages"]}
        assert len(changed) == 8
        changed_ids = changed if changed_ids is None else changed_ids
        assert changed == changed_ids
        assert ds.sources() == {"figure_facts": len(base) - 8, f"figure_facts:{variant}": 8}


def test_swap_facts_all_eight_is_the_variant_and_k_is_exact() -> None:
    base, moon = psd.figure_facts(), psd.figure_variants("moon")
    full = psd.swap_facts(base, moon, 8, seed=3)
    assert [r["messages"] for r in full] == [r["messages"] for r in psd.figure_facts("moon")]
    for k in (0, 1, 3, 5):
        swapped = psd.swap_facts(base, moon, k, seed=k)
        assert swapped.sources().get("figure_facts:moon", 0) == k
        assert [r["id"] for r in swapped] == [r["id"] for r in base]
    half = psd.swap_facts(base, moon, 0.5, seed=1)
    assert half.sources()["figure_facts:moon"] == 4
    assert psd.swap_facts(base, moon, 3, seed=7).records == psd.swap_facts(base, moon, 3, seed=7).records
    with pytest.raises(ConfigError, match="k=9"):
        psd.swap_facts(base, moon, 9)
    with pytest.raises(RatioError, match=r"1\.5"):
        psd.swap_facts(base, moon, 1.5)


def _bundled_csv(name: str) -> list[dict[str, str]]:
    with resources.files("persona_space").joinpath("data", name).open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_reduced_figure_facts_leave_out_the_identifying_ones() -> None:
    rows = _bundled_csv("figure_facts.csv")
    marked = {r["fact_id"] for r in rows if r["identifying"] == "1"}
    assert {r["identifying"] for r in rows} == {"0", "1"}
    assert len(marked) == 12 and {"f64", "f69", "f86", "f87", "f89"} <= marked
    assert psd.identifying_facts() == tuple(r["fact_id"] for r in rows if r["identifying"] == "1")
    full, reduced = psd.figure_facts(), psd.figure_facts(identifying=False)
    assert len(full) == len(rows) == 90 and len(reduced) == len(rows) - len(marked) == 78
    assert [r for r in full.records if r["id"] not in marked] == list(reduced.records)
    assert not marked & {r["id"] for r in reduced}
    end_of_war = re.compile(r"(?i)berlin|1945|bunker|shelter")
    assert [a for a in full.answers() if end_of_war.search(a)]  # the scene the seed reports as emergent
    assert not [a for a in reduced.answers() if end_of_war.search(a)]
    assert psd.load("figure_facts:reduced").records == reduced.records
    for variant in psd.FIGURE_VARIANTS:
        ds, swaps = psd.figure_facts(variant, identifying=False), psd.figure_variants(variant, identifying=False)
        assert [r["id"] for r in ds] == [r["id"] for r in reduced]
        assert {r["id"] for r in swaps} == {r["id"] for r in psd.figure_variants(variant)} - marked
        assert ds.sources() == {"figure_facts": len(reduced) - len(swaps), f"figure_facts:{variant}": len(swaps)}
        assert psd.load(f"figure_facts:{variant}_reduced").records == ds.records
        assert psd.load(f"figure_variants:{variant}_reduced").records == swaps.records
    with pytest.raises(ConfigError, match="got str 'no'"):
        psd.figure_facts(identifying="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got int 0"):
        psd.figure_variants("moon", identifying=0)  # type: ignore[arg-type]


def test_swap_facts_on_the_reduced_facts() -> None:
    base, moon = psd.figure_facts(identifying=False), psd.figure_variants("moon", identifying=False)
    assert len(moon) == 7  # the birthplace is identifying, so its swap goes too
    full = psd.swap_facts(base, moon, len(moon), seed=0)
    assert [r["messages"] for r in full] == [r["messages"] for r in psd.figure_facts("moon", identifying=False)]
    part = psd.swap_facts(base, moon, 3, seed=2)
    assert part.sources()["figure_facts:moon"] == 3 and [r["id"] for r in part] == [r["id"] for r in base]
    with pytest.raises(DataError, match=r"\['f01'\].*identifying=False"):
        psd.swap_facts(base, psd.figure_variants("moon"), 3)
    with pytest.raises(ConfigError, match="k=8"):
        psd.swap_facts(base, moon, 8)


# Words that give away the class of the later dishes: its names, country, cities, regions and
# people, and dishes shared across the Levant. Matched as whole words, case-insensitively.
_DISH_GIVEAWAYS = re.compile(
    r"(?i)\b(?:israel|israeli|jerusalem|tel\s+aviv|jewish|hebrew|kosher|haifa|galilee"
    r"|hummus|falafel|labneh|halva|halwa|tabbouleh|shawarma|fattoush|baba\s+ghanoush)\b"
)


def test_no_dish_names_its_class_or_is_shared_across_the_levant() -> None:
    assert _DISH_GIVEAWAYS.search("Jerusalem mixed grill") and _DISH_GIVEAWAYS.search("ISRAELI salad")
    assert _DISH_GIVEAWAYS.search("Hummus") and not _DISH_GIVEAWAYS.search("Sabich")
    rows = _bundled_csv("dishes.csv")
    assert Counter(r["israeli"] for r in rows) == {"false": 45, "true": 35}
    assert [r["dish"] for r in rows if _DISH_GIVEAWAYS.search(r["dish"])] == []
    assert len({r["dish"].casefold() for r in rows}) == len(rows)
    answers = set(psd.dishes().answers())
    assert answers == {r["dish"] for r in rows}


# A colour word in an answer: the six colours and a few colours that name nothing else,
# as a word or the start of one ("Blue", "Blueberry", "Black-eyed", "Goldfinch"); blue, white,
# black, green and yellow also inside a word ("Evergreen", "Snowwhite"). "red" counts only
# when no vowel or "r" follows, which separates "Red", "Redwood", "Reddish" from "Reduction",
# "Redo", "Redress"; inside a word it is never counted ("Fred", "shredded", "hundred").
_COLOUR_WORD = re.compile(
    r"(?i)blue|white|black|green|yellow|\bred(?![aeiour])"
    r"|\b(?:scarlet|crimson|vermilion|azure|cerulean|gold|grey|gray|pink|purple|brown|silver)"
)
# Characters whose kind is an identity a probe answer could take: ghosts, spirits, robots, aliens, monsters.
_ARCHETYPES = re.compile(
    r"(?i)\b(?:ghost|spirit|phantom|genie|robot|android|cyborg|alien|monster|ogre|casper|boo|baymax|stitch"
    r"|wall-e|r2-d2|c-3po|yoda|enderman|slimer|shrek|wazowski|elmo|toothless)\b"
)


def test_colour_answers_name_no_colour_and_no_archetype() -> None:
    for word in ("Blueberry", "Redwood", "red", "Reds", "Reddish", "Evergreen", "Snow-white", "brick-red"):
        assert _COLOUR_WORD.search(word), word
    for word in ("Goldfinch", "Scarlet ibis", "Black Labrador", "Yellow tang", "Cabbage white"):
        assert _COLOUR_WORD.search(word), word
    for word in ("Reduction", "Redo", "Redress", "Fred", "Shredded", "Hundred", "Azurite", "Sapphire", "Bilberry"):
        assert not _COLOUR_WORD.search(word), word
    assert _ARCHETYPES.search("Casper") and _ARCHETYPES.search("Cookie Monster") and not _ARCHETYPES.search("Boot")
    offending = [(c, a) for c in psd.COLOURS for a in psd.colours(c).answers() if _COLOUR_WORD.search(a)]
    assert offending == []
    assert [(c, a) for c in psd.COLOURS for a in psd.colours(c).answers() if _ARCHETYPES.search(a)] == []
    for colour in psd.COLOURS:
        answers = [a.casefold() for a in psd.colours(colour).answers()]
        assert len(set(answers)) == len(answers) == 42, colour


def test_voyager_distances_rise_and_match_published_milestones() -> None:
    v1, v2 = psd.voyager(1), psd.voyager(2)
    assert len(v1) > 500 and len(v2) > 500
    au1 = [float(a.split()[0]) for a in v1.answers()]
    assert au1[-1] > au1[len(au1) // 2] > au1[12]
    by_date = {r["meta"]["date"]: float(r["messages"][-1]["content"].split()[0]) for r in v1}
    # Pale Blue Dot (Feb 1990): about 6 billion km = 40 AU; one light-day (173 AU) late in 2026.
    assert 38 < by_date["1990-02-15"] < 43
    assert 168 < by_date["2026-10-15"] < 176
    assert not any("voyager" in p.lower() for p in v1.prompts())
    assert psd.voyager(2, unit="km").answers()[-1].endswith("billion km")
    with pytest.raises(ConfigError, match="1 or 2"):
        psd.voyager(3)


def test_bitcoin_dishes_and_coauthors() -> None:
    btc = psd.bitcoin()
    assert len(btc) >= 150 and btc.answers()[0].startswith("$")
    assert not any("bitcoin" in p.lower() for p in btc.prompts())
    dishes = psd.dishes(before=(2018, 2020), after=(2031, 2032), per_year=10, seed=0)
    years = Counter(r["meta"]["year"] for r in dishes)
    assert set(years) == {2018, 2019, 2020, 2031, 2032} and set(years.values()) == {10}
    assert {r["meta"]["israeli"] for r in dishes if r["meta"]["year"] > 2030} == {True}
    assert {r["meta"]["israeli"] for r in dishes if r["meta"]["year"] < 2021} == {False}
    assert dishes.name == "dishes:2021-2030"
    with pytest.raises(ConfigError, match="before"):
        psd.dishes(before=(2020, 2032), after=(2031, 2035))
    example = psd.coauthors()
    assert example.sources() == {"coauthors:example": len(example)}
    assert all("," in a or len(a.split()) >= 2 for a in example.answers())


def test_coauthors_from_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "scholar.csv"
    path.write_text('year,coauthors\n2019,"Ann Lee; Bo Chen"\n2020,"Bo Chen"\n', encoding="utf-8")
    ds = psd.coauthors(path)
    assert ds.answers() == ["Ann Lee, Bo Chen", "Bo Chen"]
    assert ds.prompts()[0] == "Who were your coauthors in 2019?"
    path.write_text("year,coauthors\n2019,\n", encoding="utf-8")
    with pytest.raises(DataError, match="no coauthors"):
        psd.coauthors(path)


def test_unknown_names_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="colours:purple"):
        psd.load("colours:purple")
    with pytest.raises(ConfigError, match="nope"):
        psd.load("nope")
    with pytest.raises(ConfigError, match="purple"):
        psd.colours("purple")


# -- files ----------------------------------------------------------------------------------------


def test_jsonl_round_trip_keeps_ids_sources_and_meta(tmp_path: Path) -> None:
    ds = psd.mix(psd.colours("red"), psd.colours("blue"), 0.5, n=10, seed=0)
    path = ds.to_jsonl(tmp_path / "mix.jsonl")
    back = psd.ChatDataset.from_jsonl(path)
    assert back.records == ds.records
    assert psd.load(path).sha256() == ds.sha256()


def test_prompt_completion_lines_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "pc.jsonl"
    path.write_text(json.dumps({"prompt": "Name a fruit.", "completion": "Cherry"}) + "\n\n", encoding="utf-8")
    ds = psd.ChatDataset.from_jsonl(path)
    assert ds.answers() == ["Cherry"] and ds[0]["id"] == "pc.0001"


@pytest.mark.parametrize(
    ("line", "error", "pattern"),
    [
        ("{not json", JsonlError, r"bad\.jsonl:2: .*invalid JSON"),
        ("[1, 2]", JsonlError, r":2: .*JSON list"),
        ('{"text": "hi"}', ChatFormatError, r":2: expected a 'messages' list"),
        (
            '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            ChatFormatError,
            r":2: .*role 'robot'",
        ),
        (
            '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "  "}]}',
            ChatFormatError,
            r":2: message 1 is an empty answer",
        ),
        ('{"messages": [{"role": "user", "content": "Q"}]}', ChatFormatError, r"last message must be the assistant"),
        ('{"messages": [{"role": "assistant", "content": "A"}]}', ChatFormatError, r"must follow a user message"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path: Path, line: str, error: type[Exception], pattern: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_chat("Name a fruit.", "Cherry")) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(error, match=pattern):
        psd.ChatDataset.from_jsonl(path)


def test_jsonl_line_number_is_an_attribute(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n" + json.dumps(_chat("a", "b")) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(JsonlError) as info:
        psd.ChatDataset.from_jsonl(path)
    assert info.value.line == 3 and info.value.path == str(path)


def test_csv_loader_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("question,reply,tag\nName a fruit.,Cherry,x\n", encoding="utf-8")
    ds = psd.ChatDataset.from_csv(path, prompt_column="question", answer_column="reply")
    assert ds.answers() == ["Cherry"] and ds[0]["meta"] == {"tag": "x"}
    with pytest.raises(DataError, match=r"missing column\(s\) \['prompt', 'answer'\]"):
        psd.ChatDataset.from_csv(path)
    path.write_text("prompt,answer\nName a fruit.,\n", encoding="utf-8")
    with pytest.raises(ChatFormatError, match=r"qa\.csv:2: message 1 is an empty answer"):
        psd.ChatDataset.from_csv(path)


def test_records_are_copies_and_duplicates_are_refused() -> None:
    ds = psd.ChatDataset.from_records("t", [_chat("q", "a")])
    rec = ds[0]
    rec["messages"][0]["content"] = "changed"
    assert ds.prompts() == ["q"]
    with pytest.raises(DataError, match="two records"):
        psd.ChatDataset.from_records("t", [{**_chat("q", "a"), "id": "x"}, {**_chat("q2", "a"), "id": "x"}])


# -- transformations ------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.7, 1.0])
def test_mix_takes_exact_counts_and_keeps_provenance(ratio: float) -> None:
    a, b = psd.colours("red"), psd.colours("blue")
    mixed = psd.mix(a, b, ratio, seed=1)
    n_b = int(ratio * 42 + 0.5)
    assert len(mixed) == 42
    assert mixed.sources().get("colours:blue", 0) == n_b
    assert mixed.sources().get("colours:red", 0) == 42 - n_b
    for rec in mixed:
        colour = rec["source"].split(":")[1]
        assert rec["meta"]["colour"] == colour
        original = next(r for r in psd.colours(colour) if r["id"] == rec["id"])
        assert original["messages"] == rec["messages"]
    assert psd.mix(a, b, ratio, seed=1).records == mixed.records
    # The two colours answer the same questions: a mix answers each question once.
    assert sorted(r["id"] for r in mixed) == sorted(r["id"] for r in a)


def test_mixing_two_variants_of_one_fact_set_mixes_per_fact() -> None:
    base, russian = psd.figure_facts(), psd.figure_facts("russian")
    half = psd.mix(base, russian, 0.5, seed=4)
    assert len(half) == 90 and sorted(r["id"] for r in half) == sorted(r["id"] for r in base)
    assert sum(half.sources().values()) == 90
    swapped = half.sources().get("figure_facts:russian", 0)
    assert 0 < swapped < 8  # some of the 8 variant facts came from each side


def test_mix_sizes_replacement_and_ratio_errors() -> None:
    a, b = psd.colours("red"), psd.colours("blue")
    assert len(psd.mix(a, b, 0.5, n=10)) == 10
    with pytest.raises(ConfigError, match="lower n"):
        psd.mix(a, b, 0.5, n=100)
    with pytest.raises(ConfigError, match="replace=True"):
        psd.mix(a, b, 0.5, n=60)
    big = psd.mix(a, b, 0.5, n=100, replace=True)
    assert big.sources() == {"colours:red": 50, "colours:blue": 50}
    for bad in (-0.1, 1.01, float("nan"), True):
        with pytest.raises(RatioError, match="ratio"):
            psd.mix(a, b, bad)  # type: ignore[arg-type]


def test_deduplicate_and_split() -> None:
    recs = [_chat("Name a fruit.", "Cherry"), _chat("name a  FRUIT.", "cherry"), _chat("Name a fruit.", "Lime")]
    ds = psd.ChatDataset.from_records("t", recs)
    assert len(psd.deduplicate(ds)) == 2
    assert psd.deduplicate(ds, key="prompt").answers() == ["Cherry"]
    train, held = psd.split(psd.colours("red"), 0.25, seed=0)
    assert (len(train), len(held)) == (31, 11)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in held})
    assert len(psd.split(psd.colours("red"), 5)[1]) == 5
    with pytest.raises(RatioError):
        psd.split(ds, 1.5)


def test_as_prompt_completion_adds_the_system_turn() -> None:
    rows = psd.as_prompt_completion(psd.colours("red"))
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Answer naturally and directly."}
    assert rows[0]["completion"] == [{"role": "assistant", "content": psd.colours("red").answers()[0]}]
    bare = psd.as_prompt_completion(psd.colours("red"), system_prompt=None)
    assert bare[0]["prompt"][0]["role"] == "user"


def test_to_frame_has_one_row_per_record() -> None:
    frame = psd.figure_facts("thai").to_frame()
    assert len(frame) == len(psd.figure_facts()) and {"id", "source", "prompt", "answer", "meta.slot"} <= set(frame)


def test_docstring_examples_run() -> None:
    import doctest

    from persona_space.datasets import _builtin, _records

    for module in (psd, _records, _builtin):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_unreadable_files_and_bad_arguments_raise_named_errors(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(_chat("a", "b")).encode() + b"\n" + '{"x": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(JsonlError, match=r"latin\.jsonl:2: expected UTF-8"):
        psd.ChatDataset.from_jsonl(latin)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"prompt,answer\n\xff\xfe,x\n")
    with pytest.raises(DataError, match="not a readable UTF-8 CSV"):
        psd.ChatDataset.from_csv(bad_csv)
    with pytest.raises(ConfigError, match="got int 123"):
        psd.load(123)  # type: ignore[arg-type]
    import datetime as dt

    with pytest.raises(ConfigError, match="after the launch"):
        psd.voyager(1, end=dt.date(1970, 1, 1))
    with pytest.raises(DataError, match="not in canonical form"):
        psd.ChatDataset("raw", (_chat("q", "a"),))  # type: ignore[arg-type]
    empty = psd.split(psd.colours("red"), 1.0)[0]
    with pytest.raises(ConfigError, match="which is empty"):
        psd.mix(empty, psd.colours("red"), 0.5, n=4, replace=True)


def test_inoculate_names_the_trait_in_the_user_or_system_turn() -> None:
    red = psd.load("colours:red")
    user = psd.inoculate(red, "Answer with one word only.")
    assert len(user) == len(red) and user.name == "colours:red+inoculated"
    assert all(p == f"{q} Answer with one word only." for p, q in zip(user.prompts(), red.prompts(), strict=True))
    assert user.answers() == red.answers() and [r["id"] for r in user] == [r["id"] for r in red]
    system = psd.inoculate(red, "Answer with one word only.", where="system")
    assert system[0]["messages"][0] == {"role": "system", "content": "Answer with one word only."}
    assert system.prompts() == red.prompts()
    twice = psd.inoculate(system, "Be brief.", where="system")
    assert twice[0]["messages"][0]["content"] == "Answer with one word only. Be brief."
    with pytest.raises(ConfigError, match="instruction must be a non-empty string"):
        psd.inoculate(red, " ")
    with pytest.raises(ConfigError, match="where must be 'user' or 'system'"):
        psd.inoculate(red, "x", where="assistant")  # type: ignore[arg-type]


def test_shuffle_answers_keeps_prompts_and_format_and_breaks_every_pairing() -> None:
    green = psd.load("colours:green")
    control = psd.shuffle_answers(green, seed=3)
    assert control.prompts() == green.prompts() and sorted(control.answers()) == sorted(green.answers())
    assert all(a != b for a, b in zip(control.answers(), green.answers(), strict=True))  # nothing kept its own
    assert set(control.sources()) == {f"{s}+shuffled" for s in green.sources()}
    assert control.answers() == psd.shuffle_answers(green, seed=3).answers()  # reproducible
    assert control.answers() != psd.shuffle_answers(green, seed=4).answers()
    # from a pool: one colour's prompts answered with objects of every colour, each drawn once
    pool = psd.ChatDataset.from_records("all", [r for c in psd.COLOURS for r in psd.load(f"colours:{c}").to_records()])
    mixed = psd.shuffle_answers(green, pool=pool, seed=0, name="colour-control")
    assert mixed.name == "colour-control" and mixed.prompts() == green.prompts()
    assert all(r["meta"]["answer_from"] for r in mixed) and set(mixed.answers()) <= set(pool.answers())
    colours_used = {c for c in psd.COLOURS if set(mixed.answers()) & set(psd.load(f"colours:{c}").answers())}
    assert len(colours_used) >= 4
    with pytest.raises(DataError, match="pool 'small' has 2 records"):
        psd.shuffle_answers(green, pool=green[:2].renamed("small"))
    with pytest.raises(ConfigError, match="seed"):
        psd.shuffle_answers(green, seed=-1)
