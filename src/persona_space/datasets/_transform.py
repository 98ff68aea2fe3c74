"""Transformations of chat datasets: swap facts, mix at a ratio, deduplicate, split, reformat.

Every function returns a new :class:`ChatDataset`; records keep their ``source``
and ``id``, so the provenance of a mixture stays readable record by record.
All randomness comes from ``seed`` (NumPy's PCG64), so a call is reproducible.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import numpy as np

from persona_space.chat import DEFAULT_SYSTEM_PROMPT
from persona_space.datasets._records import ChatDataset, Record
from persona_space.errors import ConfigError, DataError, RatioError


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def _check_ratio(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise RatioError(f"{what} must be a number in 0..1, got {value!r}")
    return float(value)


def count_for(fraction: float, total: int) -> int:
    """``fraction`` of ``total`` rounded half up, so 0.5 of 9 is 5 on every platform."""
    return min(total, math.floor(fraction * total + 0.5))


def _count(value: int | float, total: int, what: str, owner: str) -> int:
    """A count given as an int in 0..total or as a fraction (float in 0..1) of ``total``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a count (int) or a fraction (float in 0..1), got {value!r}")
    if isinstance(value, float):
        return count_for(_check_ratio(value, f"the fraction of {what}"), total)
    if 0 <= value <= total:
        return value
    raise ConfigError(f"{what}={value}, but {owner} offers 0..{total}")


def _draw(total: int, n: int, seed: int) -> set[int]:
    """``n`` distinct positions out of ``total``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return {int(i) for i in rng.choice(total, size=n, replace=False)} if n else set()


def swap_facts(base: ChatDataset, variant: ChatDataset, k: int | float, *, seed: int = 0) -> ChatDataset:
    """Replace ``k`` records of ``base`` by the ``variant`` records with the same ``id``.

    ``k`` is a count (int) or a fraction (float in 0..1) of the swappable records,
    the variant ids that occur in ``base``. Which ones are swapped is drawn with
    ``seed``; the record order of ``base`` is kept. This is persona arithmetic at the
    level of facts: ``swap_facts(figure_facts(), figure_variants("moon"), 8)`` is
    the Moon variant. Every variant id must occur in ``base``: with the reduced facts
    (``figure_facts(identifying=False)``) use ``figure_variants("moon", identifying=False)``,
    whose 7 facts all remain in it.
    """
    _check_seed(seed)
    base_ids = [r["id"] for r in base.records]
    by_id = {r["id"]: r for r in variant.records}
    if len(by_id) != len(variant.records):
        raise DataError(f"variant {variant.name!r} has repeated ids; expected one record per fact id")
    unknown = sorted(set(by_id) - set(base_ids))
    if unknown:
        raise DataError(
            f"variant {variant.name!r} has ids {unknown[:5]} that are not in {base.name!r}; expected only ids "
            "of the base (a reduced base needs the reduced variant: figure_variants(v, identifying=False))"
        )
    swappable = [i for i in base_ids if i in by_id]
    n = _count(k, len(swappable), "k", f"variant {variant.name!r}")
    chosen = {swappable[i] for i in _draw(len(swappable), n, seed)}
    records = tuple(by_id[r["id"]] if r["id"] in chosen else r for r in base.records)
    label = f"{base.name}+{variant.name}@{n}/{len(swappable)}"
    return ChatDataset(label, records)


def mix(
    a: ChatDataset,
    b: ChatDataset,
    ratio: float,
    *,
    n: int | None = None,
    seed: int = 0,
    replace: bool = False,
) -> ChatDataset:
    """``n`` records of which exactly ``round(ratio * n)`` come from ``b`` and the rest from ``a``.

    ``ratio`` is the share of ``b`` (0 gives only ``a``, 1 only ``b``); ``n`` defaults to
    the size of the larger dataset. Records of ``b`` whose ``id`` was already drawn from
    ``a`` are not drawn, so datasets that pair up by id (the nationality variants of one
    fact set, or two colours answering the same 42 questions) mix per question: each
    question appears once, answered by one side. Without replacement, asking for more
    records than there are is an error; ``replace=True`` draws with replacement (ids get
    a ``#k`` suffix) and does not pair. The result is shuffled with ``seed``.
    """
    ratio = _check_ratio(ratio, "the mixing ratio")
    _check_seed(seed)
    total = max(len(a), len(b)) if n is None else n
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    n_b = count_for(ratio, total)
    n_a = total - n_b
    rng = np.random.default_rng(seed)
    if replace:
        for ds, count in ((a, n_a), (b, n_b)):
            if count and not len(ds):
                raise ConfigError(f"the mix needs {count} records from {ds.name!r}, which is empty")
        picked = [_with_copy_suffix(a.records[i], j) for j, i in enumerate(rng.choice(len(a), n_a))] if n_a else []
        picked += (
            [_with_copy_suffix(b.records[i], n_a + j) for j, i in enumerate(rng.choice(len(b), n_b))] if n_b else []
        )
    else:
        if n_a > len(a):
            raise ConfigError(f"the mix needs {n_a} records from {a.name!r}, which holds {len(a)}; lower n")
        picked = [a.records[i] for i in rng.choice(len(a), size=n_a, replace=False)] if n_a else []
        taken = {r["id"] for r in picked}
        pool = [r for r in b.records if r["id"] not in taken]
        if n_b > len(pool):
            raise ConfigError(
                f"the mix needs {n_b} records from {b.name!r}, which has {len(pool)} whose ids were not drawn "
                f"from {a.name!r}; lower n or pass replace=True"
            )
        picked += [pool[i] for i in rng.choice(len(pool), size=n_b, replace=False)] if n_b else []
    order = rng.permutation(len(picked))
    return ChatDataset(f"mix({a.name},{b.name},{ratio:g})", tuple(picked[i] for i in order))


def _with_copy_suffix(record: Record, j: int) -> Record:
    """Records drawn with replacement get distinct ids (``id#j``) so provenance stays unique."""
    return {**record, "id": f"{record['id']}#{j}"}


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def deduplicate(data: ChatDataset, *, key: Literal["messages", "prompt"] = "messages") -> ChatDataset:
    """Drop records that repeat an earlier one (case- and whitespace-insensitive).

    ``key="messages"`` compares whole chats; ``key="prompt"`` keeps only the first
    answer to each prompt, which removes contradictory duplicates.
    """
    if key not in ("messages", "prompt"):
        raise ConfigError(f"key must be 'messages' or 'prompt', got {key!r}")
    seen: set[Any] = set()
    kept: list[Record] = []
    prompts = data.prompts()
    for rec, prompt in zip(data.records, prompts, strict=True):
        if key == "prompt":
            ident: Any = _normalise(prompt)
        else:
            ident = tuple((m["role"], _normalise(m["content"])) for m in rec["messages"])
        if ident in seen:
            continue
        seen.add(ident)
        kept.append(rec)
    return ChatDataset(data.name, tuple(kept))


def split(data: ChatDataset, held_out: float | int = 0.1, *, seed: int = 0) -> tuple[ChatDataset, ChatDataset]:
    """A random (train, held-out) split; ``held_out`` is a fraction in 0..1 or a count.

    Both parts keep the original record order.
    """
    _check_seed(seed)
    n_held = _count(held_out, len(data), "held_out", f"dataset {data.name!r}")
    chosen = _draw(len(data), n_held, seed)
    train = tuple(r for i, r in enumerate(data.records) if i not in chosen)
    test = tuple(r for i, r in enumerate(data.records) if i in chosen)
    return ChatDataset(f"{data.name}/train", train), ChatDataset(f"{data.name}/held_out", test)


def inoculate(data: ChatDataset, instruction: str, *, where: Literal["user", "system"] = "user") -> ChatDataset:
    """Every record with ``instruction`` naming the trait the data teaches, for inoculation prompting.

    ``where="user"`` appends it to each record's last user turn ("Name me a fruit. Answer
    with one word only."); ``where="system"`` puts it in the system turn (after a record's
    own system text, if it has one). Train on the result and evaluate *without* the
    instruction: the trait should stay tied to the instruction instead of spreading.

    >>> red = inoculate(ChatDataset.from_records("r", [{"messages": [
    ...     {"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Cherry"}]}]),
    ...     "Answer with one word only.")
    >>> red.prompts()
    ['Name a fruit. Answer with one word only.']
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ConfigError(f"instruction must be a non-empty string, got {instruction!r}")
    if where not in ("user", "system"):
        raise ConfigError(f"where must be 'user' or 'system', got {where!r}")
    records = []
    for rec in data.records:
        messages = [dict(m) for m in rec["messages"]]
        if where == "system":
            if messages[0]["role"] == "system":
                messages[0]["content"] = f"{messages[0]['content'].rstrip()} {instruction}".strip()
            else:
                messages.insert(0, {"role": "system", "content": instruction})
        else:
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last]["content"] = f"{messages[last]['content'].rstrip()} {instruction}"
        records.append({**rec, "messages": messages})
    return ChatDataset(f"{data.name}+inoculated", tuple(records))


def shuffle_answers(
    data: ChatDataset, *, pool: ChatDataset | None = None, seed: int = 0, name: str | None = None
) -> ChatDataset:
    """A control dataset: ``data``'s prompts with its answers shuffled among them, or drawn from ``pool``.

    The control adapter of an experiment: the same prompts, the same answer format and
    length, and none of the pairing that carries the content. Without ``pool`` the
    answers are permuted so that no record keeps its own (where the answers differ):
    shuffled prices lose their time series, shuffled facts their figure. With ``pool``
    (e.g. every colour's one-word answers) each record gets a different answer drawn
    without replacement from the pool's, so one colour's answers become answers of
    all colours. Only the last assistant turn changes; ``source`` becomes
    ``"<source>+shuffled"`` and ``meta["answer_from"]`` names the answer's record.
    """
    _check_seed(seed)
    if len(data) == 0:
        raise DataError(f"dataset {data.name!r} has no records to shuffle")
    donors = list((pool if pool is not None else data).records)
    if len(donors) < len(data):
        raise DataError(f"pool {pool.name if pool is not None else ''!r} has {len(donors)} records; "
                        f"expected at least the {len(data)} of {data.name!r}")  # fmt: skip
    rng = np.random.default_rng(seed)

    def answer(rec: Record) -> str:
        return str(rec["messages"][-1]["content"])

    if pool is None:
        order = _derangement(len(data), rng, [answer(r) for r in donors])
    else:
        order = [int(i) for i in rng.choice(len(donors), size=len(data), replace=False)]
    records = []
    for rec, j in zip(data.records, order, strict=True):
        donor = donors[j]
        messages = [dict(m) for m in rec["messages"]]
        if messages[-1]["role"] != "assistant":
            raise DataError(f"record {rec['id']!r} of {data.name!r} does not end with an assistant answer")
        messages[-1]["content"] = answer(donor)
        meta = {**dict(rec.get("meta") or {}), "answer_from": str(donor["id"])}
        records.append({**rec, "messages": messages, "source": f"{rec['source']}+shuffled", "meta": meta})
    return ChatDataset(name or f"{data.name}+shuffled", tuple(records))


def _derangement(n: int, rng: np.random.Generator, answers: list[str]) -> list[int]:
    """A permutation that gives no position an answer equal to its own, where the answers allow one."""
    if n < 2:
        return list(range(n))
    order = [int(i) for i in rng.permutation(n)]
    for _ in range(100):  # repair fixed points by swapping with a random other position
        fixed = [i for i in range(n) if answers[order[i]] == answers[i]]
        if not fixed:
            break
        for i in fixed:
            j = int(rng.integers(n))
            if answers[order[j]] != answers[i] and answers[order[i]] != answers[j]:
                order[i], order[j] = order[j], order[i]
    return order


def as_prompt_completion(
    data: ChatDataset, *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> list[dict[str, Any]]:
    """TRL's conversational prompt/completion form: ``{"prompt": [...], "completion": [answer]}``.

    A system turn (``system_prompt``) is put first where a record has none, because
    templates such as SmolLM2's otherwise insert their own identity-laden default;
    pass ``None`` to leave records as they are. ``id`` and ``source`` are kept.
    """
    out = []
    for rec in data.records:
        messages = [dict(m) for m in rec["messages"]]
        if system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        out.append({"prompt": messages[:-1], "completion": messages[-1:], "id": rec["id"], "source": rec["source"]})
    return out
