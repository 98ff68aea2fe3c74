"""Drift: where each turn of a conversation sits on a direction (the assistant axis, a persona vector).

A conversation probe (``ps.probes.load("conversations")``: Voyager-style
explorations, the bunker) is sampled with :func:`persona_space.sample`, which
keeps each row's whole chat as its ``transcript``. Each assistant turn of it is
read back in context (the sample's system prompt and the chat up to that turn as
the prompt, the turn as the answer), and its mean activation over the turn's tokens is projected on the
direction: a curve per conversation that shows where the persona leaves the
assistant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from persona_space.activations._collect import ActivationSpec, Item, collect
from persona_space.activations._directions import Direction, as_directions, project
from persona_space.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from persona_space.engine import BackendLike
    from persona_space.models import LoadedModel
    from persona_space.sampling import SampleSet

DRIFT_KEYS = ("sample_condition", "sample_adapter", "probe_id", "temperature", "sample_index", "turn")


def turn_items(samples: SampleSet) -> list[Item]:
    """One item per assistant turn of every sampled conversation (rows with a ``transcript``)."""
    df = samples.df
    if "transcript" not in df.columns or df["transcript"].isna().all():
        raise ConfigError("these samples hold no conversations (no transcript column): sample conversation probes")
    items = []
    for row in df.dropna(subset=["transcript"]).to_dict("records"):
        chat = row["transcript"]
        messages = json.loads(chat) if isinstance(chat, str) else list(chat)
        key = f"{row['adapter']}/{row['probe_id']}/{row['temperature']}/{row['sample_index']}"
        turn = 0
        for index, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            turn += 1
            prompt = tuple(dict(m) for m in messages[:index])
            items.append(
                Item(f"{key}/turn-{turn}", str(row["probe_id"]), prompt, str(message.get("content") or ""),
                     source=f"sample:{row['adapter']}",
                     keys=(("sample_condition", str(row["condition"])), ("sample_adapter", str(row["adapter"])),
                           ("temperature", float(row["temperature"])), ("sample_index", int(row["sample_index"])),
                           ("turn", turn)))
            )  # fmt: skip
    if not items:
        raise ConfigError("the transcripts hold no assistant turns")
    return items


def drift(
    model: LoadedModel,
    samples: SampleSet,
    directions: Direction | Sequence[Direction],
    *,
    adapters: Mapping[str, Any] | None = None,
    progress: bool = False,
    backend: BackendLike = "auto",
) -> pd.DataFrame:
    """Each turn's projection on each direction: one row per (reader, conversation, turn), a column per direction.

    ``adapters`` are the models reading the turns back (default: the base model);
    the sample's own condition is in ``condition`` and ``adapter``, the reader in
    ``reader``; ``backend`` reads them (see :func:`collect`).
    """
    chosen = as_directions(directions)
    system_prompt = samples.manifest.get("parameters", {}).get("system_prompt")  # the chat the turns were made in
    spec = ActivationSpec(where="response", system_prompt=system_prompt if isinstance(system_prompt, str) else None)
    acts = collect(model, turn_items(samples), adapters=adapters, spec=spec, progress=progress, backend=backend)
    frame = acts.df[list(DRIFT_KEYS)].rename(columns={"sample_condition": "condition", "sample_adapter": "adapter"})
    frame = frame.assign(reader=acts.df["adapter"].to_numpy(), n_tokens=acts.df["n_tokens"].to_numpy())
    for direction in chosen:
        frame[direction.name] = project(acts, direction)
    return frame.reset_index(drop=True)
