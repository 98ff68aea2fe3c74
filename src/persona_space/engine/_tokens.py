"""Candidate continuations as token ids, split from the prompt at the right boundary.

A candidate is scored as the text that follows the rendered chat prompt (and the
optional answer prefix). Its tokens come from encoding prompt + continuation
*jointly* and splitting at the prompt's length, so "Voyager" is the token the
model would read there (" Voyager" after "My name is", "Voyager" at the start of
the answer), not the tokens of the word alone. The split is checked: where the
joint encoding does not start with the prompt's own ids (a token spans the
boundary, e.g. a candidate opening with a newline after the template's newline),
the prompt's ids are kept and the continuation is encoded on its own; such rows
say ``tokenization="separate"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persona_space.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from persona_space.engine._host import Host


@dataclass(frozen=True)
class Continuations:
    """Token ids of every candidate after one prompt."""

    prompt_ids: tuple[int, ...]
    ids: tuple[tuple[int, ...], ...]
    tokenization: tuple[str, ...]  # "joint" or "separate", one per candidate


def check_template(template: str) -> str:
    """``template`` must hold ``{candidate}`` and nothing else to format."""
    if not isinstance(template, str) or "{candidate}" not in template:
        raise ConfigError(f"template must be a string containing '{{candidate}}', got {template!r}")
    try:
        template.format(candidate="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template {template!r} cannot be formatted with only {{candidate}}: {exc}; "
            "write literal braces as '{{' and '}}'"
        ) from exc
    return template


def check_candidates(candidates: Sequence[str], *, end_of_turn: bool) -> list[str]:
    """Distinct strings; an empty one only when the end-of-turn token is scored (then it means "nothing")."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise DataError(f"candidates must be a list of strings, got {type(candidates).__name__}")
    out = list(candidates)
    if not out:
        raise DataError("candidates is empty; expected at least one candidate")
    seen: dict[str, int] = {}
    for i, cand in enumerate(out):
        if not isinstance(cand, str):
            raise DataError(f"candidate {i} is a {type(cand).__name__}, expected a string: {cand!r:.60}")
        if cand == "" and not end_of_turn:
            raise DataError(
                f"candidate {i} is empty; an empty continuation has no tokens to score "
                "(with end_of_turn=True it scores ending the answer at once)"
            )
        if cand in seen:
            raise DataError(
                f"candidate {cand!r} appears twice (positions {seen[cand]} and {i}); expected distinct ones"
            )
        seen[cand] = i
    return out


def continuation(candidate: str, template: str, answer_prefix: str | None) -> str:
    """The scored text: ``template`` around ``candidate``, with a space after a non-empty answer prefix.

    ``answer_prefix="My name is"`` and ``"Zorblax"`` give the continuation ``" Zorblax"``;
    a candidate that starts with whitespace (or a prefix that ends with it) gets no extra space.
    """
    text = template.format(candidate=candidate)
    if answer_prefix and text and not answer_prefix[-1].isspace() and not text[0].isspace():
        return " " + text
    return text


def split_continuations(
    tokenizer: Any, prompt_text: str, texts: Sequence[str], *, end_of_turn: int | None
) -> Continuations:
    """Token ids of each continuation of ``prompt_text`` (joint encoding, split at the prompt)."""
    prompt_ids = tuple(int(i) for i in tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    if not prompt_ids:
        raise DataError("the rendered prompt has no tokens; expected a chat prompt")
    joint = tokenizer([prompt_text + t for t in texts], add_special_tokens=False)["input_ids"] if texts else []
    ids: list[tuple[int, ...]] = []
    how: list[str] = []
    plen = len(prompt_ids)
    for text, full in zip(texts, joint, strict=True):
        full = tuple(int(i) for i in full)
        if full[:plen] == prompt_ids:
            tokens, kind = full[plen:], "joint"
        else:  # a token spans the boundary: keep the prompt as rendered, encode the rest alone
            tokens, kind = tuple(int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]), "separate"
        if text and not tokens:
            raise ModelError(f"the tokenizer gives no tokens for the continuation {text!r}")
        if end_of_turn is not None:
            tokens = (*tokens, end_of_turn)
        ids.append(tokens)
        how.append(kind)
    return Continuations(prompt_ids, tuple(ids), tuple(how))


def end_of_turn_id(model: Host) -> int:
    """The token that ends an assistant turn, as the chat template writes it (``<|im_end|>`` for ChatML).

    The same definition sampling stops on (:attr:`LoadedModel.end_of_turn_ids`), so a
    scored "and nothing more" is what a sampled answer ends with.
    """
    ids = model.end_of_turn_ids
    if not ids:
        raise ModelError(f"model {model.name!r} has no end-of-turn (eos) token id; expected a chat model with one")
    return ids[0]
