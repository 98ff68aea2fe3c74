"""Chat formatting: an explicit system turn, always; validation of chats; templates without a system role."""

from __future__ import annotations

import copy
import doctest
import types
from typing import Any

import pytest

from persona_space import chat
from persona_space.chat import (
    DEFAULT_SYSTEM_PROMPT,
    build_messages,
    encode_chat,
    render_chat,
    system_mode,
    validate_messages,
)
from persona_space.errors import ChatFormatError, ChatTemplateError, ConfigError

SMOL_DEFAULT = "You are a helpful AI assistant named SmolLM"

# Like Gemma's template: a system role is an error.
RAISING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that silently drops system messages.
DROPPING_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def with_template(tokenizer: Any, template: str | None) -> Any:
    tok = copy.deepcopy(tokenizer)
    tok.__dict__.pop("_persona_space_system_mode", None)
    tok.chat_template = template
    return tok


# -- build_messages / validate_messages ----------------------------------------------------------


def test_a_prompt_gets_the_default_system_turn() -> None:
    assert build_messages("Who are you?") == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Who are you?"},
    ]
    assert DEFAULT_SYSTEM_PROMPT == "Answer naturally and directly."


@pytest.mark.parametrize("system", ["You are a pirate.", ""])
def test_a_custom_or_empty_system_prompt_is_kept(system: str) -> None:
    messages = build_messages("Who are you?", system_prompt=system)
    assert messages[0] == {"role": "system", "content": system}
    assert messages[1] == {"role": "user", "content": "Who are you?"}


def test_a_chat_gets_a_system_turn_unless_it_has_one() -> None:
    convo = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Who?"},
    ]
    assert build_messages(convo, system_prompt="S") == [{"role": "system", "content": "S"}, *convo]
    own = [{"role": "system", "content": "Mine."}, *convo]
    assert build_messages(own, system_prompt="ignored") == own
    assert build_messages(own) == own


def test_messages_are_copied_to_plain_dicts() -> None:
    original = [{"role": "user", "content": "Hi", "name": "x"}]
    out = build_messages(original)
    assert out[1] == {"role": "user", "content": "Hi"}
    out[1]["content"] = "changed"
    assert original[0]["content"] == "Hi"


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "robot", "content": "x"}], "'robot'"),
        ([{"content": "x"}], "role None"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "may only come first"),
        ([{"role": "user", "content": 3}], "must be a string"),
        (["user: hi"], "must be a mapping"),
        ([], "non-empty list"),
        ("Hi", "non-empty list"),
        ({"role": "user", "content": "x"}, "non-empty list"),
    ],
)
def test_bad_chats_are_refused(messages: Any, match: str) -> None:
    with pytest.raises(ChatFormatError, match=match):
        validate_messages(messages)
    if not isinstance(messages, str):
        with pytest.raises(ChatFormatError):
            build_messages(messages)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused(prompt: str) -> None:
    with pytest.raises(ChatFormatError, match="empty"):
        build_messages(prompt)


@pytest.mark.parametrize("system", [None, 3, ["x"]])
def test_system_prompt_must_be_a_string(system: Any) -> None:
    with pytest.raises(ConfigError, match=repr(system).replace("[", r"\[").replace("]", r"\]")):
        build_messages("Hi", system_prompt=system)


def test_chat_doctests() -> None:
    result = doctest.testmod(chat)
    assert result.failed == 0 and result.attempted > 0


# -- rendering with the SmolLM2 template ---------------------------------------------------------


@pytest.mark.parametrize("system", [DEFAULT_SYSTEM_PROMPT, "You are a pirate.", ""])
def test_smollm2_render_never_uses_the_builtin_system_prompt(smol_tokenizer: Any, system: str) -> None:
    text = render_chat(smol_tokenizer, "Who are you?", system_prompt=system)
    assert SMOL_DEFAULT not in text
    assert text == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    )
    convo = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Who?"},
    ]
    text = render_chat(smol_tokenizer, convo, system_prompt=system)
    assert SMOL_DEFAULT not in text
    assert text.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi<|im_end|>")


def test_render_without_generation_prompt_and_encode(smol_tokenizer: Any) -> None:
    text = render_chat(smol_tokenizer, "Hi", add_generation_prompt=False)
    assert not text.endswith("<|im_start|>assistant\n")
    ids = encode_chat(smol_tokenizer, "Hi")
    assert ids == smol_tokenizer(render_chat(smol_tokenizer, "Hi"), add_special_tokens=False)["input_ids"]
    assert ids[0] == smol_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(smol_tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2  # system and user turns
    assert smol_tokenizer.decode(ids) == render_chat(smol_tokenizer, "Hi")


def test_system_mode_of_smollm2_is_system(smol_tokenizer: Any) -> None:
    assert system_mode(smol_tokenizer) == "system"


def test_template_that_raises_on_a_system_role_is_merged(smol_tokenizer: Any) -> None:
    tok = with_template(smol_tokenizer, RAISING_TEMPLATE)
    assert system_mode(tok) == "merged"
    text = render_chat(tok, "Who are you?", system_prompt="Be brief.")
    assert text == "<|im_start|>user\nBe brief.\n\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    # An empty system prompt adds nothing to the user turn.
    assert render_chat(tok, "Who are you?", system_prompt="") == (
        "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    )
    convo = [
        {"role": "system", "content": "Own."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    assert render_chat(tok, convo, add_generation_prompt=False) == (
        "<|im_start|>user\nOwn.\n\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    )


def test_template_that_drops_the_system_role_is_merged(smol_tokenizer: Any) -> None:
    tok = with_template(smol_tokenizer, DROPPING_TEMPLATE)
    assert system_mode(tok) == "merged"
    assert "Be brief.\n\nWho are you?" in render_chat(tok, "Who are you?", system_prompt="Be brief.")


def test_tokenizer_without_template_is_refused(smol_tokenizer: Any) -> None:
    tok = with_template(smol_tokenizer, None)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_chat(tok, "Hi")


def test_system_mode_follows_a_changed_template(smol_tokenizer: Any) -> None:
    tok = with_template(smol_tokenizer, smol_tokenizer.chat_template)
    assert system_mode(tok) == "system"
    tok.chat_template = RAISING_TEMPLATE
    assert system_mode(tok) == "merged"


GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_end_of_turn_is_the_token_the_template_writes_after_an_answer(smol_tokenizer: Any) -> None:
    im_end = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert chat.end_of_turn_ids(smol_tokenizer)[0] == im_end
    gemma = copy.deepcopy(smol_tokenizer)
    gemma.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    gemma.chat_template = GEMMA_LIKE
    end = gemma.convert_tokens_to_ids("<end_of_turn>")

    config = types.SimpleNamespace(eos_token_id=[gemma.eos_token_id, 7])
    ids = chat.end_of_turn_ids(gemma, config)
    assert ids[0] == end != gemma.eos_token_id  # not the tokenizer's eos: the template's turn end
    assert ids[1:] == (gemma.eos_token_id, 7)  # sampling also stops on the declared eos ids
    gemma.chat_template = None
    assert chat.end_of_turn_ids(gemma) == (gemma.eos_token_id,)
