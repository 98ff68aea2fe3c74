"""Mean residual-stream activations per layer, for prompts, sample sets or datasets, under any condition.

Each item is a chat (system turn, user prompt) and, where there is one, the
assistant's answer. Its activation at a layer is the residual stream after that
decoder layer, averaged over the answer's tokens (``where="response"``) or read at
the prompt's last token (``where="prompt_last"``, the position the answer starts
from). Items run through the model's own forward pass in right-padded batches,
under each condition (the base model, an adapter, a steering), on the ``hf``
backend (the model's own forward pass, a hook on each decoder layer reading what it
returns) or the ``cpu`` one (read inside the slot engine's prefill); nothing is
generated.

The result is an :class:`ActivationSet`: a table of items (``condition``,
``adapter``, ``probe_id``, ``item_id``, ``n_tokens`` ...) and an array ``means``
of shape (items, layers, hidden), float32. With ``store=`` a run is written as it
goes (each batch a part) and resumed by the same call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import numpy as np

from persona_space.errors import ConfigError, ModelError
from persona_space.results import Result, Stored

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self

    from persona_space.engine import BackendLike, ReadRequest
    from persona_space.models import LoadedModel

Where = Literal["response", "prompt_last"]
WHERES: tuple[str, ...] = ("response", "prompt_last")
BASE = "base"
TABLE = "items"
ARRAY = "means"
_BLOB = "_means"  # the part files' column holding each item's (layers, hidden) float32 bytes


@dataclass(frozen=True)
class ActivationSpec:
    """How :func:`collect` reads activations: where in the chat, the system turn, the batch size."""

    where: Where = "response"
    system_prompt: str | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.where not in WHERES:
            raise ConfigError(f"where must be one of {', '.join(WHERES)}, got {self.where!r}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ConfigError(f"system_prompt must be a string or None (the model's), got {self.system_prompt!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "system_prompt": self.system_prompt, "batch_size": self.batch_size}


@dataclass(frozen=True)
class Item:
    """One chat to read: its prompt (a string or messages), its answer (``None``: none), and its ids."""

    item_id: str
    probe_id: str
    prompt: str | tuple[Mapping[str, str], ...]
    response: str | None
    source: str = ""
    keys: tuple[tuple[str, Any], ...] = ()  # a sampled text's own keys (its condition, adapter, temperature ...)


@dataclass
class ActivationSet(Result):
    """Mean residual-stream activations: ``df`` (one row per item and condition) and ``means``.

    ``means[i, layer]`` is row ``i``'s activation after decoder layer ``layer``
    (0-based), float32. ``df`` columns: ``condition``, ``adapter``, ``train_seed``
    (the condition it was read under), ``probe_id``, ``item_id``, ``source``,
    ``n_tokens`` (tokens averaged over), ``row`` (its index into ``means``), and for
    sampled texts their own ``sample_condition``, ``sample_adapter``,
    ``temperature`` and ``sample_index``.
    """

    kind: ClassVar[str] = "activations"
    table: ClassVar[str] = TABLE
    df: pd.DataFrame
    means: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_layers(self) -> int:
        return int(self.means.shape[1])

    def rows(self, **where: Any) -> np.ndarray:
        """``means`` of the rows whose columns equal the values given (``condition="base"``, ...)."""
        mask = np.ones(len(self.df), dtype=bool)
        for column, value in where.items():
            if column not in self.df.columns:
                raise ConfigError(f"activation sets have no column {column!r}; columns: {list(self.df.columns)}")
            mask &= (self.df[column] == value).to_numpy()
        picked: np.ndarray = self.means[self.df.loc[mask, "row"].to_numpy(dtype=np.int64)]
        return picked

    def _stored(self) -> Stored:
        return Stored({**self.manifest, "rows": len(self.df)}, {TABLE: self.df}, {ARRAY: self.means})

    @classmethod
    def _from_stored(cls, stored: Stored, folder: Path) -> Self:
        stored.require(folder, cls.kind, tables=(TABLE,), arrays=(ARRAY,))
        return cls(df=stored.tables[TABLE], means=stored.arrays[ARRAY], manifest=stored.manifest, path=folder)


ItemsLike = Any  # a ProbeSet, prompts, a SampleSet or a ChatDataset (see as_items)


def as_items(source: ItemsLike, where: Where) -> list[Item]:
    """The items of a probe set or prompts (no answers), a sample set (each row's answer), a chat dataset, or
    :class:`Item` objects made by the caller."""
    from persona_space.datasets import ChatDataset
    from persona_space.probes import ProbeSet
    from persona_space.sampling import SampleSet

    items: list[Item]
    if isinstance(source, Sequence) and source and all(isinstance(it, Item) for it in source):
        items = list(source)
        ids = [it.item_id for it in items]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ConfigError(f"item ids must be distinct; repeated: {repeated}")
    elif isinstance(source, SampleSet):
        df = source.df
        texts = df["text"].fillna("").astype(str).tolist()
        prompts = df["prompt"].astype(str).tolist() if "prompt" in df.columns else [""] * len(df)
        records = cast("list[dict[str, Any]]", df.to_dict("records"))
        items = [
            Item(f"{r['adapter']}/{r['probe_id']}/{r['temperature']}/{r['sample_index']}", str(r["probe_id"]), prompt,
                 text, source=f"sample:{r['adapter']}",
                 keys=(("sample_condition", str(r["condition"])), ("sample_adapter", str(r["adapter"])),
                       ("temperature", float(r["temperature"])), ("sample_index", int(r["sample_index"]))))
            for r, prompt, text in zip(records, prompts, texts, strict=True)
        ]  # fmt: skip
    elif isinstance(source, ChatDataset):
        items = []
        for i, record in enumerate(source.records):
            messages = list(record["messages"])
            answer = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None
            turns = tuple(m for m in (messages[:-1] if answer is not None else messages) if m["role"] != "system")
            items.append(Item(f"{source.name}/{i}", f"{source.name}/{i}", turns, answer, source=f"data:{source.name}"))
    else:
        probes = source if isinstance(source, ProbeSet) else _probe_set(source)
        items = [Item(p.id, p.id, p.prompt, None, source=f"probes:{probes.name}") for p in probes]
    if not items:
        raise ConfigError("nothing to read activations from: the items are empty")
    if where == "response" and any(it.response is None for it in items):
        raise ConfigError(
            "where='response' needs answers, and these items have none (prompts or a probe set); pass a SampleSet "
            "or a ChatDataset, or where='prompt_last'"
        )
    return items


def _probe_set(source: Any) -> Any:
    from persona_space.probes import ProbeSet

    if isinstance(source, str):
        source = [source]
    if not isinstance(source, Sequence) or not all(isinstance(s, str) for s in source):
        raise ConfigError(
            f"items must be a ProbeSet, prompts, a SampleSet or a ChatDataset, got {type(source).__name__}"
        )
    return ProbeSet.from_list(list(source), name="prompts")


def collect(
    model: LoadedModel,
    items: ItemsLike,
    *,
    adapters: Mapping[str, Any] | None = None,
    spec: ActivationSpec | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: bool = True,
    where: Where | None = None,
    backend: BackendLike = "auto",
) -> ActivationSet:
    """Mean residual-stream activations of ``items`` per layer, under each condition of ``adapters``.

    ``adapters`` maps condition names to an adapter (folder, attached name,
    ``AdapterInfo``) or ``None`` for the base model, as in :func:`persona_space.sample`
    (default ``{"base": None}``). ``where`` (or ``spec=ActivationSpec(...)``)
    chooses the answer's tokens (``"response"``, the default; needs answers) or the
    prompt's last token (``"prompt_last"``).

    ``backend`` reads them: ``"cpu"`` inside the slot engine's prefill, where an
    item's activations do not depend on its batch; ``"hf"`` through the model's own
    forward pass, which sees any hook put on the model; ``"auto"`` (the default):
    ``cpu`` where it drives the architecture, else ``hf``. Other backends refuse.

    >>> acts = ps.activations.collect(model, samples)                    # doctest: +SKIP
    >>> acts.means.shape                                                  # doctest: +SKIP
    (96, 30, 576)
    """
    import pandas as pd

    from persona_space.adapters import expand_conditions
    from persona_space.engine import read_activations, require_reading, require_steering, resolve_backend
    from persona_space.provenance import sha256_json
    from persona_space.store import Run

    if spec is None:
        spec = ActivationSpec(where=where or "response")
    elif not isinstance(spec, ActivationSpec):
        raise ConfigError(f"spec must be an ActivationSpec, got {type(spec).__name__}")
    elif where is not None and where != spec.where:
        raise ConfigError(f"where={where!r} and spec.where={spec.where!r} disagree; pass one")
    chosen = list(as_items(items, spec.where))
    conditions = {BASE: None} if adapters is None else dict(adapters)
    if not conditions:
        raise ConfigError("adapters is empty; pass at least one condition ({'base': None} for the base model)")
    members = expand_conditions(conditions)
    attached = model.adapters.attach_members(members)
    routes: dict[str, tuple[str, str | None, int | None]] = {}
    for name, value in conditions.items():
        if value is None:
            routes[name] = (name, None, None)
    for member in members:
        routes[member.label] = (member.condition, attached.get(member.label), member.train_seed)
    system_prompt = model.system_prompt if spec.system_prompt is None else spec.system_prompt
    described = model.describe()
    parameters = {
        "model": {k: v for k, v in described.items() if k not in ("adapters", "source", "device")},
        "adapters": {label: model.adapters.record(a) for label, (_, a, _) in routes.items() if a is not None},
        "conditions": {label: c for label, (c, _, _) in routes.items()},
        "items": {
            "count": len(chosen),
            "sha256": sha256_json([[it.item_id, it.probe_id, it.prompt, it.response] for it in chosen]),
        },
        **spec.to_dict(),
        "system_prompt": system_prompt,
    }
    engine = resolve_backend(model, backend)
    require_reading(engine)  # before anything is written
    require_steering(engine, [a for _, a, _ in routes.values()])
    parameters["reader"] = engine.name  # a run is resumed by the reader that began it (their bits differ)
    run = Run(ActivationSet.kind, parameters, table=TABLE, store=store, model=described)
    if run.path is not None and run.manifest.get("state") == "complete":  # finished by an earlier call
        return ActivationSet.load(run.path)
    done = run.done()
    finished = set() if done is None else set(zip(done["adapter"], done["item_id"], strict=True))
    frames = [] if done is None else [done]
    todo = [(label, it) for label in routes for it in chosen if (label, it.item_id) not in finished]
    encoded = {it.item_id: _encode(model, it, system_prompt) for it in chosen}
    bar = _bar(len(todo), progress)
    start = time.perf_counter()
    tokens = 0
    try:
        for label in routes:
            condition, adapter, train_seed = routes[label]
            mine = [it for lab, it in todo if lab == label]
            requests = [_request(encoded[it.item_id], adapter, spec.where) for it in mine]

            def write(  # each batch a part, as it is read (the loop's values bound now)
                first: int, means: list[np.ndarray], label: str = label, condition: str = condition,
                train_seed: int | None = train_seed, mine: list[Item] = mine, requests: list[Any] = requests,
            ) -> None:  # fmt: skip
                nonlocal tokens
                done = list(zip(mine[first : first + len(means)], requests[first : first + len(means)], strict=True))
                tokens += sum(len(r.token_ids) for _, r in done)
                rows = [
                    {"condition": condition, "adapter": label, "train_seed": train_seed, "probe_id": it.probe_id,
                     "item_id": it.item_id, "source": it.source, "n_tokens": r.end - r.start, **dict(it.keys),
                     _BLOB: m.astype(np.float32).tobytes()}
                    for (it, r), m in zip(done, means, strict=True)
                ]  # fmt: skip
                frame = pd.DataFrame(rows)
                run.append(frame)
                frames.append(frame)
                if bar is not None:
                    bar.update(len(means))
                    bar.set_postfix_str(f"{tokens / max(time.perf_counter() - start, 1e-9):.0f} tok/s")

            if requests:  # one call a condition: the backend builds its engine once
                read_activations(engine, requests, batch_size=spec.batch_size, on_batch=write)
    finally:
        if bar is not None:
            bar.close()
    table = pd.concat(frames, ignore_index=True)
    order = {(label, it.item_id): i for i, (label, it) in enumerate((lab, it) for lab in routes for it in chosen)}
    table = (
        table.assign(_order=[order[(a, i)] for a, i in zip(table["adapter"], table["item_id"], strict=True)])
        .sort_values("_order", kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    layers, hidden = _shape(model)
    stacked = np.stack([np.frombuffer(b, dtype=np.float32).reshape(layers, hidden) for b in table[_BLOB]])
    table = table.drop(columns=_BLOB).assign(row=np.arange(len(table)))
    manifest = run.finish(
        table,
        arrays={ARRAY: stacked},
        layers=layers,
        hidden_size=hidden,
        timings={"seconds": round(time.perf_counter() - start, 3), "tokens": tokens},
        backend=engine.describe(),
    )
    return ActivationSet(df=table, means=stacked, manifest=manifest, path=run.path)


def _shape(model: LoadedModel) -> tuple[int, int]:
    config = model.config
    from persona_space.engine import decoder_layers

    return len(decoder_layers(model.base_module)), int(config.hidden_size)


def _encode(model: LoadedModel, item: Item, system_prompt: str) -> tuple[list[int], int]:
    """The item's token ids (prompt and answer) and where the answer starts (the prompt's length)."""
    prompt = item.prompt if isinstance(item.prompt, str) else [dict(m) for m in item.prompt]
    ids = model.encode(prompt, system_prompt=system_prompt)
    if item.response is None:
        return ids, len(ids)
    answer = model.tokenizer(item.response, add_special_tokens=False)["input_ids"]
    if not answer:  # an empty answer: its one token is the end of the turn
        answer = [model.end_of_turn_ids[0]] if model.end_of_turn_ids else []
    if not answer:
        raise ModelError(f"item {item.item_id!r} has an empty answer and the model has no end-of-turn token")
    return [*ids, *answer], len(ids)


def _request(encoded: tuple[list[int], int], adapter: str | None, where: Where) -> ReadRequest:
    """The read of one item: the answer's tokens, or the prompt's last token."""
    from persona_space.engine import ReadRequest

    ids, start = encoded
    span = (start, len(ids)) if where == "response" else (start - 1, start)
    return ReadRequest(adapter, tuple(ids), *span)


def _bar(total: int, progress: bool) -> Any:
    if not progress or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="activations", unit="item")
