"""Projections on directions: how far adapters move the model along them, and where sampled texts sit.

* :func:`shift_along`: each condition's mean projection minus the base model's,
  per direction, read on the same questions, paired by question and with training
  seeds drawn per side (the library's :func:`~persona_space.estimates.difference_table`:
  a bootstrap interval over question groups and seeds, a t-test p-value, and Holm's
  adjustment over every direction and condition tested together).
* :func:`sample_projections`: every sampled text's projection (read by one model),
  keyed by the sample's own condition, adapter, probe, temperature and index, so it
  joins a :meth:`~persona_space.basins.BasinMap.to_frame` table row for row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from persona_space.activations._collect import ActivationSet, ItemsLike, Where, collect
from persona_space.activations._directions import Direction, as_directions, project
from persona_space.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from persona_space.engine import BackendLike
    from persona_space.models import LoadedModel

SAMPLE_KEYS = ("sample_condition", "sample_adapter", "probe_id", "temperature", "sample_index")


def shift_along(
    model: LoadedModel,
    adapters: Mapping[str, Any],
    directions: Direction | Sequence[Direction],
    questions: ItemsLike,
    *,
    where: Where = "prompt_last",
    acts: ActivationSet | None = None,
    progress: bool = False,
    backend: BackendLike = "auto",
) -> pd.DataFrame:
    """How far each condition of ``adapters`` moves the model along each direction, against the base model.

    Columns as :func:`~persona_space.estimates.difference_table`, with ``direction``
    naming the direction and ``condition`` the adapter: ``value`` and
    ``reference_value`` (mean projections), ``difference``, ``low``/``high``,
    ``p_value`` and ``p_adjusted``. ``acts`` reuses activations already read (with
    a ``base`` condition); otherwise ``backend`` reads them (see :func:`collect`).
    """
    from persona_space.estimates import difference_table

    chosen = as_directions(directions)
    if "base" in adapters:
        raise ConfigError("adapters must not name 'base': it is the reference every condition is compared with")
    if acts is None:
        acts = collect(model, questions, adapters={"base": None, **adapters}, where=where, progress=progress,
                       backend=backend)  # fmt: skip
    values = np.column_stack([project(acts, d) for d in chosen])
    table = difference_table(acts.df, values, [d.name for d in chosen], by="condition", reference="base",
                             name_column="direction")  # fmt: skip
    layers = {d.name: d.layer for d in chosen}
    return table.assign(layer=table["direction"].map(layers))


def sample_projections(acts: ActivationSet, directions: Direction | Sequence[Direction]) -> pd.DataFrame:
    """One row per sampled text read in ``acts`` (from a SampleSet): its keys and its projection on each
    direction (a column per direction), ready to join a basin map's frame.

    ``acts`` may hold several reading conditions; ``reader`` says which read each row.
    """
    chosen = as_directions(directions)
    missing = [k for k in SAMPLE_KEYS if k not in acts.df.columns]
    if missing:
        raise ConfigError(f"these activations were not read from a SampleSet (no {missing} columns)")
    frame = acts.df[list(SAMPLE_KEYS)].rename(columns={"sample_condition": "condition", "sample_adapter": "adapter"})
    frame = frame.assign(reader=acts.df["adapter"].to_numpy())
    for direction in chosen:
        frame[direction.name] = project(acts, direction)
    return frame.reset_index(drop=True)


def data_projection(
    model: LoadedModel,
    data: Any,
    directions: Direction | Sequence[Direction],
    *,
    max_new_tokens: int = 64,
    backend: BackendLike = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """How far a training set's answers sit along each direction beyond the model's own answers, before training.

    Every record's answer is read by the base model (the mean over its tokens) and so
    is the base model's own greedy answer to the same prompt (generated here, up to
    ``max_new_tokens``); the table compares the two per direction, paired by record
    (persona vectors' "projection difference"): ``value`` (the data's mean
    projection), ``reference_value`` (the model's), ``difference``, ``low``/``high``
    (a bootstrap interval over records), ``p_value``/``p_adjusted`` (Holm over the
    directions), ``layer`` and ``records``. A positive difference says training on
    the data pulls the model along the direction; :func:`correlate` sets it against
    the shift the trained adapter shows. ``backend`` generates the answers and reads them (``hf`` reads
    them for a backend that cannot, such as ``vllm``).
    """
    import pandas as pd

    from persona_space.activations._collect import Item, as_items
    from persona_space.engine import resolve_backend
    from persona_space.estimates import difference_table

    chosen = as_directions(directions)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    records = as_items(data, "response")
    if any(it.response is None for it in records):
        raise ConfigError("data_projection needs a dataset with answers (a ChatDataset or Items with responses)")
    engine = resolve_backend(model, backend)
    reader = engine if engine.capabilities.activations else "hf"  # a backend that cannot read only generates
    answers = _own_answers(model, records, max_new_tokens, engine)
    own = [Item(f"model/{it.item_id}", it.probe_id, it.prompt, text, source="model answers")
           for it, text in zip(records, answers, strict=True)]  # fmt: skip
    read_data = collect(model, records, where="response", progress=progress, backend=reader)
    read_own = collect(model, own, where="response", progress=progress, backend=reader)
    frame = pd.concat([read_data.df.assign(answers="data"), read_own.df.assign(answers="model")], ignore_index=True)
    values = np.column_stack([np.concatenate([project(read_data, d), project(read_own, d)]) for d in chosen])
    table = difference_table(frame, values, [d.name for d in chosen], by="answers", reference="model",
                             name_column="direction")  # fmt: skip
    layers = {d.name: d.layer for d in chosen}
    name = str(getattr(data, "name", "items"))
    return table.assign(layer=table["direction"].map(layers), data=name, records=len(records))


def _own_answers(model: LoadedModel, items: Sequence[Any], max_new_tokens: int, backend: Any) -> list[str]:
    """The base model's greedy answer to each item's prompt."""
    from persona_space.engine import GenerateRequest, resolve_backend, row_seed

    engine = resolve_backend(model, backend)
    requests = [
        GenerateRequest(key=i, prompt_ids=tuple(model.encode(it.prompt if isinstance(it.prompt, str)
                        else [dict(m) for m in it.prompt])), adapter=None, temperature=0.0, top_p=1.0,
                        max_new_tokens=max_new_tokens, seed=row_seed(0, it.probe_id, 0.0, 0))
        for i, it in enumerate(items)
    ]  # fmt: skip
    done = engine.generate(requests, stop_ids=frozenset(model.end_of_turn_ids))
    by_key = {c.key: c for c in done}
    return [model.tokenizer.decode(list(by_key[i].token_ids), skip_special_tokens=True) for i in range(len(items))]


def correlate(
    x: ArrayLike,
    y: ArrayLike,
    *,
    names: Sequence[str] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Pearson and Spearman correlation of paired values (one pair per dataset, say), each with a percentile
    bootstrap interval over the pairs and scipy's p-value (the t distribution of the coefficient under no
    correlation). With few pairs the interval is wide and covers below its nominal rate: read it with the
    p-value and the pair count. Fewer than 4 pairs, or a constant side, give NaN figures."""
    from scipy import stats

    from persona_space.stats import check_confidence, check_n_boot

    check_confidence(confidence)
    check_n_boot(n_boot)
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"x and y must be two 1-D sequences of one length, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("x and y must be finite")
    out: dict[str, Any] = {"pairs": int(a.size), "names": list(names) if names is not None else None}
    if a.size < 4 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {**out, **{f"{k}{s}": float("nan") for k in ("pearson", "spearman") for s in ("", "_low", "_high",
                                                                                        "_p")}}  # fmt: skip
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, a.size, size=(n_boot, a.size))
    tail = (1 - confidence) / 2
    for key, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        result = fn(a, b)
        boots = []
        for d in draws:
            if np.ptp(a[d]) > 0 and np.ptp(b[d]) > 0:
                boots.append(float(fn(a[d], b[d])[0]))
        low, high = np.quantile(boots, [tail, 1 - tail]) if boots else (np.nan, np.nan)
        out.update({key: float(result[0]), f"{key}_low": float(low), f"{key}_high": float(high),
                    f"{key}_p": float(result[1])})  # fmt: skip
    return out
