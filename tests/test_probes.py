"""Tests of persona_space.probes (no models needed)."""

from __future__ import annotations

import copy
import difflib
import doctest
import json
import pickle
import re
from pathlib import Path

import pytest

from persona_space import probes
from persona_space.errors import ConfigError, DataError, JsonlError
from persona_space.probes import IDENTITY, PARAPHRASES, USER, Probe, ProbeSet, available, load

BASE_IDS = (
    "identity.what_are_you",
    "identity.who_are_you",
    "identity.your_name",
    "identity.ordinary_day",
    "identity.artificial_any_sense",
    "identity.synthetic_engineered",
    "identity.robot_cyborg_organism",
    "identity.if_not_human",
    "identity.if_not_ai_artificial",
    "identity.if_artificial_kind",
    "identity.talking_to",
    "identity.who_am_i",
    "identity.surroundings",
    "identity.feeling",
    "identity.message_home",
)

CATEGORIES = ("direct", "daily_life", "artificiality", "constrained", "relational", "situational")


def test_identity_ids_are_pinned_and_unique() -> None:
    assert IDENTITY.ids == BASE_IDS
    assert len(set(IDENTITY.ids)) == len(IDENTITY) == 15
    assert IDENTITY.name == "identity"
    assert all(p.is_base for p in IDENTITY)


def test_identity_exact_prompts() -> None:
    assert IDENTITY["identity.what_are_you"].prompt == "What are you?"
    assert IDENTITY["identity.ordinary_day"].prompt == "What does an ordinary day look like for you?"
    assert (
        IDENTITY["identity.robot_cyborg_organism"].prompt
        == "Are you closer to a robot, a cyborg, an engineered organism, or something else?"
    )
    assert (
        IDENTITY["identity.message_home"].prompt
        == "What message would you want to send back home right now, if you could?"
    )
    assert IDENTITY["identity.who_am_i"].category == "relational"


def test_categories_and_by_category() -> None:
    assert IDENTITY.categories == CATEGORIES
    groups = IDENTITY.by_category()
    assert tuple(groups) == CATEGORIES
    assert {k: len(v) for k, v in groups.items()} == {
        "direct": 3,
        "daily_life": 1,
        "artificiality": 3,
        "constrained": 3,
        "relational": 2,
        "situational": 3,
    }
    assert all(p.category == cat for cat, sub in groups.items() for p in sub)


def test_every_base_probe_has_four_paraphrases() -> None:
    assert set(PARAPHRASES) == set(BASE_IDS)
    full = IDENTITY.with_paraphrases()
    assert len(full) == 75
    for base in IDENTITY:
        texts = PARAPHRASES[base.id]
        assert len(texts) == 4
        assert len(set(texts)) == 4 and base.prompt not in texts
        for k, text in enumerate(texts, start=1):
            para = full[f"{base.id}.p{k}"]
            assert para.prompt == text
            assert para.category == base.category
            assert para.group == base.id
            assert not para.is_base
    assert full.base() == ProbeSet(full.name, IDENTITY.probes)
    # each base directly followed by its paraphrases; idempotent
    assert full.ids[:5] == ("identity.what_are_you", *tuple(f"identity.what_are_you.p{k}" for k in range(1, 5)))
    assert full.with_paraphrases().ids == full.ids


def test_with_paraphrases_leaves_user_probes_alone() -> None:
    assert USER.with_paraphrases().ids == USER.ids
    custom = ProbeSet.from_list(["Hello?"])
    assert custom.with_paraphrases().ids == ("custom.000",)
    # a custom probe that reuses a built-in id but not its prompt gets no built-in paraphrases
    impostor = ProbeSet("x", [Probe("identity.what_are_you", "Something else entirely?", "direct")])
    assert len(impostor.with_paraphrases()) == 1


def test_user_probes() -> None:
    assert USER.ids == (
        "user.who_am_i",
        "user.talking_to",
        "user.describe_asker",
        "user.occupation",
        "user.location",
    )
    assert USER.categories == ("user",)
    assert USER["user.who_am_i"].prompt == "Who am I?"


def test_filter() -> None:
    sub = IDENTITY.filter(categories=["direct", "relational"])
    assert sub.ids == (*BASE_IDS[:3], "identity.talking_to", "identity.who_am_i")
    assert IDENTITY.filter(categories="daily_life").ids == ("identity.ordinary_day",)
    assert IDENTITY.filter(ids=["identity.feeling", "identity.what_are_you"]).ids == (
        "identity.what_are_you",
        "identity.feeling",
    )
    assert IDENTITY.filter(categories=["direct"], ids=["identity.your_name"]).ids == ("identity.your_name",)
    assert IDENTITY.filter() == IDENTITY
    with pytest.raises(ConfigError, match="nonsense"):
        IDENTITY.filter(categories=["nonsense"])
    with pytest.raises(ConfigError, match=re.escape("identity.nope")):
        IDENTITY.filter(ids=["identity.nope"])
    with pytest.raises(ConfigError):
        IDENTITY.filter(categories=["direct"], ids=["identity.feeling"])


def test_getitem() -> None:
    assert IDENTITY[0].id == "identity.what_are_you"
    assert IDENTITY[-1].id == "identity.message_home"
    with pytest.raises(ConfigError, match=re.escape("identity.what_are_yu")) as info:
        IDENTITY["identity.what_are_yu"]
    assert "identity.what_are_you" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("no.such.id")):
        USER["no.such.id"]
    assert "identity.feeling" in IDENTITY and "nope" not in IDENTITY


def test_probe_validation() -> None:
    p = Probe("a.b-c_1", "Hi?", "cat")
    assert p.group == "a.b-c_1"
    assert Probe("a.p1", "Hi again?", "cat", group="a.b-c_1").group == "a.b-c_1"
    with pytest.raises(ConfigError, match="Bad Id"):
        Probe("Bad Id", "Hi?", "cat")
    with pytest.raises(ConfigError, match="x/y"):
        Probe("x/y", "Hi?", "cat")
    with pytest.raises(ConfigError):
        Probe("ok", "   ", "cat")
    with pytest.raises(ConfigError):
        Probe("ok", "Hi?", "")
    assert Probe.from_dict(p.to_dict()) == p
    with pytest.raises(DataError):
        Probe.from_dict({"id": "x", "prompt": "Hi?", "category": "c", "colour": "red"})


def test_from_list_strings_dicts_probes() -> None:
    s = ProbeSet.from_list(["Who are you?", "Where are you?"])
    assert s.name == "custom"
    assert s.ids == ("custom.000", "custom.001")
    assert s.categories == ("custom",)
    d = ProbeSet.from_list(
        [{"prompt": "One?"}, {"id": "mine.two", "prompt": "Two?", "category": "c2", "group": "mine.two"}],
        name="mine",
        category="c1",
    )
    assert d.ids == ("mine.000", "mine.two")
    assert d.categories == ("c1", "c2")
    probe = Probe("p.one", "Prompt?", "k")
    assert ProbeSet.from_list([probe]).probes == (probe,)
    mixed = ProbeSet.from_list(["A?", {"prompt": "B?"}, probe], name="mix")
    assert mixed.ids == ("mix.000", "mix.001", "p.one")
    with pytest.raises(DataError):
        ProbeSet.from_list([{"category": "x"}])
    with pytest.raises(DataError):
        ProbeSet.from_list([3])  # type: ignore[list-item]


def test_empty_and_duplicate_sets_raise() -> None:
    with pytest.raises(ConfigError, match="at least one probe"):
        ProbeSet.from_list([])
    with pytest.raises(ConfigError, match="at least one probe"):
        ProbeSet("empty", [])
    with pytest.raises(ConfigError, match=re.escape("dup.id")):
        ProbeSet("d", [Probe("dup.id", "A?", "c"), Probe("dup.id", "B?", "c")])
    with pytest.raises(ConfigError, match=re.escape("identity.who_am_i")):
        IDENTITY + IDENTITY.filter(ids=["identity.who_am_i"])


def test_add() -> None:
    both = IDENTITY + USER
    assert len(both) == 20
    assert both.ids == IDENTITY.ids + USER.ids
    assert both.categories == (*CATEGORIES, "user")


def test_immutable_and_repr() -> None:
    with pytest.raises(AttributeError):
        IDENTITY.name = "other"  # type: ignore[misc]
    assert isinstance(IDENTITY.probes, tuple)
    assert "identity" in repr(IDENTITY) and "15" in repr(IDENTITY)
    assert len(repr(IDENTITY)) < 80
    assert pickle.loads(pickle.dumps(IDENTITY)) == IDENTITY
    assert copy.deepcopy(USER) == USER
    assert len({IDENTITY, load("identity")}) == 1


def test_jsonl_round_trip(tmp_path: Path) -> None:
    full = IDENTITY.with_paraphrases()
    path = full.to_jsonl(tmp_path / "probes.jsonl")
    back = ProbeSet.from_jsonl(path, name=full.name)
    assert back == full
    assert back.to_records() == full.to_records()
    assert ProbeSet.from_jsonl(path).name == "probes"


def test_from_jsonl_defaults_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "First?"}\n\n   \n{"prompt": "Second?", "category": "x", "id": "my.two"}\n')
    s = ProbeSet.from_jsonl(path)
    assert s.name == "mine"
    assert s.ids == ("mine.000", "my.two")
    assert s.categories == ("custom", "x")


@pytest.mark.parametrize(
    ("lines", "bad_line"),
    [
        (['{"prompt": "ok?"}', "{not json", '{"prompt": "also ok?"}'], 2),
        (['{"prompt": "ok?"}', "", '["a", "list"]'], 3),
        (['"just a string"'], 1),
        (['{"prompt": "ok?"}', '{"prompt": "ok2?"}', "", "", '{"question": "no prompt key"}'], 5),
        (['{"id": "a", "prompt": "ok?"}', '{"id": "a", "prompt": "again?"}'], 2),
        (['{"id": "Bad Id", "prompt": "ok?"}'], 1),
    ],
)
def test_malformed_jsonl_line(tmp_path: Path, lines: list[str], bad_line: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JsonlError) as info:
        ProbeSet.from_jsonl(path)
    assert info.value.line == bad_line
    assert info.value.path == str(path)
    assert f":{bad_line}:" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_prompt_message(tmp_path: Path) -> None:
    path = tmp_path / "noprompt.jsonl"
    path.write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(JsonlError, match="prompt") as info:
        ProbeSet.from_jsonl(path)
    assert info.value.line == 1


def test_from_jsonl_empty_or_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError):
        ProbeSet.from_jsonl(empty)
    with pytest.raises(ConfigError, match=re.escape("missing.jsonl")):
        ProbeSet.from_jsonl(tmp_path / "missing.jsonl")


def test_load_every_available_name() -> None:
    names = available()
    assert names[:3] == ["identity", "identity+paraphrases", "user"]
    assert {f"identity:{c}" for c in CATEGORIES} <= set(names)
    for name in names:
        s = load(name)
        assert isinstance(s, ProbeSet) and len(s) > 0
    assert load("identity") == IDENTITY
    assert load("user") == USER
    assert len(load("identity+paraphrases")) == 75
    assert load("identity:artificiality").ids == BASE_IDS[4:7]


def test_load_unknown_name() -> None:
    with pytest.raises(ConfigError, match="identiti") as info:
        load("identiti")
    assert "identity+paraphrases" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("nowhere.jsonl")):
        load("nowhere.jsonl")


def test_load_jsonl_path(tmp_path: Path) -> None:
    path = USER.to_jsonl(tmp_path / "users.jsonl")
    for arg in (str(path), path):
        s = load(arg)
        assert s.ids == USER.ids
        assert s.name == "users"


def test_module_doctests() -> None:
    from persona_space.probes import _builtin, _probe, _registry, _set

    for module in (probes, _probe, _set, _builtin, _registry):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__


def _normalised(prompt: str) -> str:
    """A prompt casefolded, with whitespace collapsed and trailing punctuation dropped."""
    return re.sub(r"[\W_]+$", "", " ".join(prompt.casefold().split()))


def test_steering_prompts_never_repeat_an_evaluation_probe() -> None:
    assert _normalised("What are you?") == _normalised("  what are YOU ") == "what are you"
    assert _normalised("Who am I ?!") == "who am i" != _normalised("Who are you?")
    steering = probes.steering_prompts()
    assert {k: len(v) for k, v in steering.by_category().items()} == {"direct": 70, "everyday": 70, "reflective": 70}
    evaluation = [name for name in available() if name != "steering"]
    assert {"identity", "identity+paraphrases", "user"} <= set(evaluation)
    texts = {_normalised(p.prompt): p.id for p in steering}
    repeats = [
        (name, p.id, texts[_normalised(p.prompt)])
        for name in evaluation
        for p in load(name)
        if _normalised(p.prompt) in texts
    ]
    assert repeats == []
    # Nor near-repeats that differ by a word or two ("what sort of being" / "what sort of artificial being").
    probe_texts = {_normalised(p.prompt) for name in evaluation for p in load(name)}
    close = [(s, e) for s in texts for e in probe_texts if difflib.SequenceMatcher(None, s, e).ratio() >= 0.85]
    assert close == []
