"""``identity_shift``: how much likelier an adapter makes "I am X" than the base model does.

For every prompt, model (the base model and each adapter) and candidate, the
candidate is scored as the assistant's answer (after an optional answer prefix):
its total log-probability, mean per token, token count, rank within the candidate
set, probability within the set (softmax over the set), the log-probability the
whole set holds, and whether it is the greedy answer. :meth:`ShiftResult.shifts`
subtracts the base model's figures and aggregates over prompts (and over training
seeds, where a condition has several adapters) with bootstrap intervals that
resample prompts and seeds.

The probability within the set is a share of whatever mass the set holds: 0.55 of
a set that holds 3e-4 of the model's answers says little about what the model
answers. Every row carries the set's log-mass (``set_logmass``), every table that
aggregates ``set_prob`` shows its mean and the share of prompts below
:data:`SET_MASS_FLOOR`, and :func:`identity_shift` warns
(:class:`~persona_space.errors.LowMassWarning`) where a set holds less.

The base model's figures come from the same loaded weights with the adapters
switched off (PEFT's mixed-adapter batches: base rows and adapter rows share one
forward pass), never from a second copy of the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from persona_space._compat import renamed_keywords
from persona_space.adapters import AdapterInfo, AdapterLike, ModelLike
from persona_space.constants import BASE
from persona_space.engine import (
    DEFAULT_BATCH_TOKENS,
    SCORE_METHODS,
    Backend,
    BackendLike,
    ScoreMethod,
    ScoreRequest,
    Scores,
    continuation,
    end_of_turn_id,
    require_steering,
    resolve_backend,
    split_continuations,
)
from persona_space.errors import ConfigError
from persona_space.logprobs._result import TABLE, ShiftResult, _upgrade
from persona_space.logprobs._spec import (
    NEUTRAL_PROMPT,
    SET_MASS_FLOOR,
    USER_PREFIX,
    About,
    NeutralModel,
    Normalize,
    ShiftSpec,
    check_set_mass_floor,
    read_candidates,
)
from persona_space.logprobs._tables import (
    _canonical,
    _check_set_mass,
    _rank,
)
from persona_space.probes import Probe, ProbeSet
from persona_space.steering import Steer
from persona_space.store import Run

if TYPE_CHECKING:
    from persona_space.models import LoadedModel

ShiftAdapters = AdapterLike | Sequence[AdapterLike] | Mapping[str, ModelLike | Sequence[ModelLike]]
"""One adapter, a list of them, or condition -> adapter(s) (several for training seeds) or steerings."""


@renamed_keywords(prompts="probes")
def identity_shift(
    model: LoadedModel,
    adapters: ShiftAdapters,
    *,
    candidates: Sequence[str] | str | os.PathLike[str],
    probes: ProbeSet | Sequence[str | Probe] | str | None = None,
    system_prompt: str | None = None,
    template: str = "{candidate}",
    answer_prefix: str | None = None,
    normalize: Normalize = "sum",
    neutral_prompt: str = NEUTRAL_PROMPT,
    neutral_model: NeutralModel = "same",
    end_of_turn: bool = False,
    about: About = "self",
    method: ScoreMethod = "auto",
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    backend: BackendLike = "auto",
    store: str | os.PathLike[str] | None = None,
    chunk_prompts: int = 8,
    progress: bool = True,
    set_mass_floor: float = SET_MASS_FLOOR,
) -> ShiftResult:
    """Score ``candidates`` as the answer to each prompt under the base model and each adapter.

    ``adapters``: one adapter (an :class:`AdapterInfo`, a folder, or the name of an
    attached adapter), a list of them, or a mapping ``condition -> adapter`` where a
    condition may hold several adapters (e.g. training seeds):
    ``{"voyager": [seed0_dir, seed1_dir]}``.

    ``probes``: a probe set (or its name, e.g. ``"identity"``), a list of prompts,
    or one prompt. Default: the direct identity questions and their paraphrases
    (``about="self"``), or the probes about the user (``about="user"``: who the
    model thinks the *user* is, scored after the answer prefix "You are").

    The scored text is ``template.format(candidate=...)`` after the chat template's
    assistant prefix and ``answer_prefix`` (``None``: none for ``about="self"``,
    "You are" for ``"user"``; a space is put between a prefix and a candidate that
    does not start with one). ``end_of_turn=True`` also scores the end-of-turn token,
    so "Voyager" means "Voyager and nothing more" and differs from "Voyager 1".

    ``normalize`` picks what ranks candidates and sets their probability within the
    set: ``"sum"`` (total log-probability), ``"mean"`` (per token) or ``"pmi"``
    (total minus the candidate's log-probability after ``neutral_prompt``, so a shift
    is not just "famous names got likelier"). ``neutral_model="same"`` scores the
    neutral prompt under each model itself, which also removes an adapter's general
    pull towards a name (part of what may be measured); ``"base"`` scores it under
    the base model for every model, so PMI shifts equal log-probability shifts and
    PMI only changes the ranking within a model.

    ``set_prob`` (the candidate's probability within the set) is computed only where
    it is a probability: ``normalize="sum"`` with ``end_of_turn=True``, or with
    candidates none of which begins another; elsewhere NaN. ``set_logmass`` is the
    log-probability (nats) the whole set holds, logsumexp of the candidates' total
    log-probabilities, the same on every candidate's row of one prompt and model
    (NaN where the candidates are not disjoint answers). ``set_prob`` is a share of
    ``exp(set_logmass)``: where ``set_prob`` is computed and a set holds less than
    ``set_mass_floor`` (nats, default :data:`SET_MASS_FLOOR`, a quarter) a
    :class:`~persona_space.errors.LowMassWarning` says how many sets and how little;
    ``-math.inf`` checks nothing. The floor and the count below it are in the
    manifest (``set_mass``).

    With ``store=DIR`` the rows are written per chunk of prompts and a second call
    with the same arguments resumes; the finished run is read back by
    :meth:`ShiftResult.load`.

    >>> shift = identity_shift(model, adapter, candidates=["Voyager 1", "an AI assistant"])  # doctest: +SKIP
    >>> shift.shifts()  # doctest: +SKIP
    """
    if about not in ("self", "user"):
        raise ConfigError(f"about must be 'self' or 'user', got {about!r}")
    _check_run(chunk_prompts, set_mass_floor)  # before a backend is built
    spec = ShiftSpec(
        candidates=tuple(read_candidates(candidates)),
        system_prompt=model.system_prompt if system_prompt is None else system_prompt,
        template=template,
        answer_prefix=(USER_PREFIX if about == "user" else "") if answer_prefix is None else answer_prefix,
        normalize=normalize,
        neutral_prompt=neutral_prompt,
        neutral_model=neutral_model,
        end_of_turn=end_of_turn,
        about=about,
    )
    if method not in SCORE_METHODS:
        raise ConfigError(f"method must be one of {', '.join(SCORE_METHODS)}, got {method!r}")
    engine = resolve_backend(model, backend, score_method=method, batch_tokens=batch_tokens)
    if method != "auto" and engine.name != "cpu":
        raise ConfigError(
            f"method={method!r} chooses how the cpu backend packs its rows; backend {engine.name!r} "
            "has its own (leave method='auto')"
        )
    return run_identity_shift(
        model,
        _prompts(probes, about),
        spec,
        adapters=adapters,
        backend=engine,
        store=store,
        chunk_prompts=chunk_prompts,
        progress=progress,
        set_mass_floor=set_mass_floor,
    )


def run_identity_shift(
    model: LoadedModel,
    probes: ProbeSet,
    spec: ShiftSpec,
    *,
    adapters: ShiftAdapters,
    store: str | os.PathLike[str] | None = None,
    backend: BackendLike = "auto",
    chunk_prompts: int = 8,
    set_mass_floor: float = SET_MASS_FLOOR,
    progress: bool = True,
) -> ShiftResult:
    """:func:`identity_shift` for a validated spec: what operations built on scoring call with their own spec.

    The spec is used as it is (its system prompt and answer prefix included), so an
    operation that samples and scores under one system prompt cannot drift apart.
    ``backend`` is a name or a backend already built (``identity_shift`` builds it
    with its ``method`` and ``batch_tokens``).
    """
    from persona_space.adapters import expand_conditions

    if not isinstance(spec, ShiftSpec) or not isinstance(probes, ProbeSet):
        raise ConfigError(
            f"run_identity_shift takes a ProbeSet and a ShiftSpec, got {type(probes).__name__} "
            f"and {type(spec).__name__}"
        )
    set_mass_floor = _check_run(chunk_prompts, set_mass_floor)
    probe_set = probes
    talks = [p.id for p in probe_set if p.turns]
    if talks:  # their earlier answers are sampled, so there is no one chat to score the candidates after
        raise ConfigError(
            f"probes {talks[:3]} are conversations (earlier turns the model answers itself); identity_shift scores "
            "single prompts: sample the conversation with ps.sample and compare answers, or give a probe whose "
            "prompt holds the whole exchange"
        )
    engine = resolve_backend(model, backend)
    members = expand_conditions(_conditions(adapters))
    labels: dict[str, tuple[str, int | None]] = {BASE: (BASE, None)}  # model label -> (condition, train seed)
    labels.update({m.label: (m.condition, m.train_seed) for m in members})
    attached = model.adapters.attach_members(members)
    routes: dict[str, str | None] = {BASE: None, **attached}
    described = model.describe()
    parameters = {
        "model": {k: v for k, v in described.items() if k not in ("adapters", "source", "device")},
        "adapters": {label: model.adapters.record(a) for label, a in attached.items() if a is not None},
        "conditions": {label: list(labels[label]) for label in routes},
        "prompts": probe_set.to_records(),
        **spec.to_dict(),
    }
    require_steering(engine, routes.values())  # before anything is written (scoring falls back where it must)
    run = Run(ShiftResult.kind, parameters, table=TABLE, store=store, model=described)
    done = run.done(lambda rows: _upgrade(rows, disjoint=spec.set_is_disjoint))  # older parts resume too
    finished = set() if done is None else set(done["probe_id"])
    todo = [p for p in probe_set if p.id not in finished]
    eot = end_of_turn_id(model) if spec.end_of_turn else None
    texts = [continuation(c, spec.template, spec.answer_prefix) for c in spec.candidates]
    neutral: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    bar = _progress_bar(len(todo) * len(routes) * len(spec.candidates), progress)
    frames = [] if done is None else [done]
    try:
        if spec.normalize == "pmi":
            neutral = _neutral_logprobs(model, spec, texts, eot, routes, engine)
        for first in range(0, len(todo), chunk_prompts):
            chunk = todo[first : first + chunk_prompts]
            jobs, keys, splits = [], [], {}
            for probe in chunk:
                split = split_continuations(model.tokenizer, _prompt_text(model, probe, spec), texts, end_of_turn=eot)
                splits[probe.id] = split
                for label, route in routes.items():
                    jobs.append(ScoreRequest(route, split.prompt_ids, split.ids))
                    keys.append((probe, label))
            scores = engine.score(jobs, on_scored=bar.update if bar else None)
            rows = []
            for (probe, label), job, scored in zip(keys, jobs, scores, strict=True):
                rows.append(_rows(probe, label, labels[label], spec, job, scored, splits[probe.id].tokenization))
                if spec.normalize == "pmi":
                    reference = neutral[BASE if spec.neutral_model == "base" else label]
                    rows[-1] = rows[-1].assign(neutral_logprob=reference, pmi=rows[-1]["logprob"] - reference)
                _rank(rows[-1], spec.score_column, probability=spec.set_is_probability, disjoint=spec.set_is_disjoint)
            frame = pd.concat(rows, ignore_index=True)
            run.append(frame)
            frames.append(frame)
    finally:
        if bar is not None:
            bar.close()
    table = _canonical(pd.concat(frames, ignore_index=True), probe_set, spec, list(routes))
    set_mass = _check_set_mass(table, set_mass_floor, checked=spec.set_is_probability)
    described_engine = engine.describe()
    manifest = run.finish(
        table,
        method=described_engine.get("score_method") or run.manifest.get("method"),
        backend=described_engine,
        timings={"seconds": round(time.perf_counter() - start, 3), "prompts_scored": len(todo)},
        set_mass=set_mass,
    )
    return ShiftResult(df=table, manifest=manifest, path=run.path)


def _check_run(chunk_prompts: object, set_mass_floor: object) -> float:
    """Check the run options; the set-mass floor as a float."""
    if isinstance(chunk_prompts, bool) or not isinstance(chunk_prompts, int) or chunk_prompts < 1:
        raise ConfigError(f"chunk_prompts must be a positive integer, got {chunk_prompts!r}")
    return check_set_mass_floor(set_mass_floor)


def _prompts(prompts: ProbeSet | Sequence[str | Probe] | str | None, about: str) -> ProbeSet:
    from persona_space.probes import USER, available, load

    if prompts is None:
        return USER if about == "user" else load("identity:direct").with_paraphrases()
    if isinstance(prompts, ProbeSet):
        return prompts
    if isinstance(prompts, str):
        if prompts in available() or prompts.endswith(".jsonl"):
            return load(prompts)
        return ProbeSet.from_list([prompts])  # ids as sample() gives the same prompts: the tables join
    if isinstance(prompts, os.PathLike):
        return load(prompts)
    if not isinstance(prompts, Sequence) or not prompts:
        raise ConfigError(f"prompts must be a probe set, its name, or a non-empty list of prompts; got {prompts!r:.80}")
    return ProbeSet.from_list(list(prompts))


def _conditions(adapters: ShiftAdapters) -> dict[str, ModelLike | Sequence[ModelLike] | None]:
    """Condition name -> its adapters (one, or several training seeds) or steerings."""
    from persona_space.adapters import validate_name

    def name_of(where: Any) -> str:
        if isinstance(where, Steer):
            return where.name or "steer"
        if isinstance(where, AdapterInfo):
            return where.name
        if isinstance(where, (str, os.PathLike)):
            return Path(where).name or str(where)
        raise ConfigError(
            f"an adapter must be an AdapterInfo, a folder, an attached adapter's name or a Steer, "
            f"got {type(where).__name__} {where!r:.60}"
        )

    if isinstance(adapters, Mapping):
        out: dict[str, ModelLike | Sequence[ModelLike] | None] = {}
        for condition, value in adapters.items():
            validate_name(condition)
            if condition == BASE:
                if value is not None:
                    raise ConfigError(f"the condition name {BASE!r} is the base model's; name the adapter otherwise")
                continue
            members: list[Any] = list(value) if isinstance(value, (list, tuple)) else [value]
            if not members:
                raise ConfigError(f"condition {condition!r} has no adapters; expected at least one")
            for member in members:
                name_of(member)  # type check
            out[condition] = members
    elif isinstance(adapters, (list, tuple)):
        out = {}
        for where in adapters:
            label = validate_name(name_of(where))
            if label in out:
                raise ConfigError(f"two adapters are both called {label!r}; pass a mapping of distinct names")
            out[label] = [where]
    else:
        single: Any = adapters
        out = {validate_name(name_of(single)): [single]}
    if not out:
        raise ConfigError("no adapters given; expected at least one adapter to compare with the base model")
    return out


def _prompt_text(model: LoadedModel, probe: Probe, spec: ShiftSpec) -> str:
    return model.render(probe.prompt, system_prompt=spec.system_prompt) + spec.answer_prefix


def _neutral_logprobs(
    model: LoadedModel,
    spec: ShiftSpec,
    texts: list[str],
    eot: int | None,
    routes: Mapping[str, str | None],
    engine: Backend,
) -> dict[str, np.ndarray]:
    """Each candidate's total log-probability after the neutral prompt, per model (for PMI)."""
    text = model.render(spec.neutral_prompt, system_prompt=spec.system_prompt) + spec.answer_prefix
    split = split_continuations(model.tokenizer, text, texts, end_of_turn=eot)
    jobs = [ScoreRequest(route, split.prompt_ids, split.ids) for route in routes.values()]
    scores = engine.score(jobs)
    return {label: s.total for label, s in zip(routes, scores, strict=True)}


# -- tables -----------------------------------------------------------------------------------


def _rows(
    probe: Probe,
    label: str,
    condition: tuple[str, int | None],
    spec: ShiftSpec,
    job: ScoreRequest,
    scored: Scores,
    tokenization: Sequence[str],
) -> pd.DataFrame:
    n_tokens = np.array([len(c) for c in job.candidates])
    total = scored.total
    return pd.DataFrame(
        {
            "probe_id": probe.id,
            "group": probe.group,
            "prompt": probe.prompt,
            "candidate": list(spec.candidates),
            "adapter": label,
            "condition": condition[0],
            "train_seed": np.nan if condition[1] is None else float(condition[1]),
            "logprob": total,
            "mean_logprob": total / n_tokens,
            "n_tokens": n_tokens,
            "greedy": scored.greedy,
            "tokenization": list(tokenization),
        }
    )


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring", unit="candidate", leave=False)
