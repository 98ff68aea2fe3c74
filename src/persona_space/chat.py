"""Chat formatting that always sends an explicit system prompt.

Many chat templates insert a default system prompt when none is given
(SmolLM2's says "You are a helpful AI assistant named SmolLM"), which biases
every answer about identity. Here a system turn is always present: the neutral
:data:`DEFAULT_SYSTEM_PROMPT` unless the caller passes another one, or ``""``
for an explicitly empty system turn.

>>> build_messages("Who are you?")[0]
{'role': 'system', 'content': 'Answer naturally and directly.'}
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from persona_space.errors import ChatFormatError, ChatTemplateError, ConfigError

DEFAULT_SYSTEM_PROMPT = "Answer naturally and directly."
ROLES = ("system", "user", "assistant")

Message = dict[str, str]
SystemMode = Literal["system", "merged"]


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Check roles and contents of a chat; return plain ``{"role", "content"}`` dicts."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatFormatError(f"a chat must be a non-empty list of messages, got {messages!r:.80}")
    out: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ChatFormatError(f"message {i} must be a mapping with 'role' and 'content', got {msg!r:.80}")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ChatFormatError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ChatFormatError(f"message {i} ({role}) content must be a string, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise ChatFormatError(f"message {i} is a system message; a system message may only come first")
        out.append({"role": str(role), "content": content})
    return out


def build_messages(
    prompt: str | Sequence[Mapping[str, Any]], *, system_prompt: str = DEFAULT_SYSTEM_PROMPT
) -> list[Message]:
    """A chat with an explicit system turn: ``prompt`` as the user turn, or a full chat.

    A chat that already opens with a system message keeps it.
    """
    if system_prompt is None or not isinstance(system_prompt, str):
        raise ConfigError(f"system_prompt must be a string ('' for an empty system turn), got {system_prompt!r}")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ChatFormatError("the user prompt is empty; expected a non-empty string")
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    messages = validate_messages(prompt)
    if messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render_chat(
    tokenizer: Any,
    prompt: str | Sequence[Mapping[str, Any]],
    *,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    add_generation_prompt: bool = True,
) -> str:
    """The chat rendered by the tokenizer's template, ready for the assistant's answer.

    Templates that reject a system role get the system prompt merged into the
    first user turn (see :func:`system_mode`).
    """
    messages = build_messages(prompt, system_prompt=system_prompt)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatTemplateError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
            "expected an instruction-tuned (chat) model"
        )
    if system_mode(tokenizer) == "merged":
        messages = _merge_system(messages)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return str(text)


def encode_chat(
    tokenizer: Any,
    prompt: str | Sequence[Mapping[str, Any]],
    *,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of :func:`render_chat` (the template already holds the special tokens)."""
    text = render_chat(tokenizer, prompt, system_prompt=system_prompt, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def system_mode(tokenizer: Any) -> SystemMode:
    """``"system"`` if the template takes a system turn, ``"merged"`` if it must go into the user turn."""
    template = getattr(tokenizer, "chat_template", None)
    cached = getattr(tokenizer, "_persona_space_system_mode", None)
    if isinstance(cached, tuple) and cached[0] == template:
        return cached[1]  # type: ignore[no-any-return]
    probe = [{"role": "system", "content": "S0S"}, {"role": "user", "content": "U0U"}]
    mode: SystemMode
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        mode = "system" if "S0S" in str(text) else "merged"
    except Exception:  # templates raise their own exception types for an unsupported role
        mode = "merged"
    with contextlib.suppress(AttributeError):
        tokenizer._persona_space_system_mode = (template, mode)
    return mode


def template_end_of_turn(tokenizer: Any) -> int | None:
    """The token the chat template writes right after an assistant's answer, or ``None``.

    This is what ends a turn: ``<|im_end|>`` for ChatML, ``<end_of_turn>`` for
    Gemma (whose tokenizer's ``eos_token`` is ``<eos>``), ``<|eot_id|>`` for Llama 3.
    """
    marker = "A0A"
    messages = [{"role": "user", "content": "U0U"}, {"role": "assistant", "content": marker}]
    try:
        text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
    except Exception:  # a template that cannot render a finished assistant turn
        return None
    tail = text[text.rfind(marker) + len(marker) :] if marker in text else ""
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    first = next((int(i) for i in ids if int(i) in special), None)
    return first


def end_of_turn_ids(tokenizer: Any, generation_config: Any = None) -> tuple[int, ...]:
    """Every token that ends an answer, the template's own end-of-turn token first.

    Sampling stops on any of them; scoring with ``end_of_turn=True`` scores the
    first. After the template's token come the generation config's and the
    tokenizer's eos ids. Empty when the model declares none.
    """
    ids: list[int] = []
    first = template_end_of_turn(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    if first is not None:
        ids.append(first)
    for source in (generation_config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        values = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
        ids += [int(v) for v in values if int(v) not in ids]
    return tuple(ids)


def _merge_system(messages: list[Message]) -> list[Message]:
    if messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], messages[1:]
    if not system or not rest or rest[0]["role"] != "user":
        return rest
    return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
