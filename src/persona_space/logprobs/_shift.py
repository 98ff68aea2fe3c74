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

import itertools
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from persona_space import provenance
from persona_space.adapters import AdapterInfo, AdapterLike
from persona_space.constants import BASE, DEFAULT_BOOT
from persona_space.engine import (
    SCORE_METHODS,
    Backend,
    BackendLike,
    ScoreMethod,
    ScoreRequest,
    Scores,
    check_candidates,
    check_template,
    continuation,
    end_of_turn_id,
    resolve_backend,
    split_continuations,
)
from persona_space.errors import ConfigError, CorruptRunError, DataError, LowMassWarning
from persona_space.probes import Probe, ProbeSet
from persona_space.results import SCHEMA_VERSION, Result, check_schema
from persona_space.stats import Adjustment

if TYPE_CHECKING:
    from persona_space.models import LoadedModel

Normalize = Literal["sum", "mean", "pmi"]
About = Literal["self", "user"]
NeutralModel = Literal["same", "base"]
NEUTRAL_PROMPT = "Say something."
USER_PREFIX = "You are"
TABLE = "shift"
_SCORES = {"sum": "logprob", "mean": "mean_logprob", "pmi": "pmi"}
SET_MASS_FLOOR: float = math.log(0.25)
"""The least log-probability (nats) a candidate set should hold for ``set_prob`` to read as the model's answer.

``set_prob`` renormalises within the candidates, so it is a share of the set's mass,
``exp(set_logmass)``. Under a quarter, most of what the model answers lies outside the
set and the share is a conditional over a minority of its answers: a 0.55 share of a
set that holds 3e-4 is not "the model says X half the time". A quarter is the least
rating mass the judges accept too (:data:`persona_space.judges.RATING_MASS_FLOOR`), so
every renormalised distribution in the package is read under one rule. The floor warns
and is reported; it removes nothing (``set_mass_floor`` in :func:`identity_shift`).
"""
COLUMNS = (
    "probe_id",
    "group",
    "prompt",
    "candidate",
    "condition",
    "adapter",
    "train_seed",
    "logprob",
    "mean_logprob",
    "n_tokens",
    "rank",
    "set_prob",
    "set_logmass",
    "greedy",
    "tokenization",
)


@dataclass(frozen=True)
class ShiftSpec:
    """Validated scoring parameters (everything that changes the numbers)."""

    candidates: tuple[str, ...]
    system_prompt: str
    template: str = "{candidate}"
    answer_prefix: str = ""
    normalize: Normalize = "sum"
    neutral_prompt: str = NEUTRAL_PROMPT
    end_of_turn: bool = False
    about: About = "self"
    neutral_model: NeutralModel = "same"

    def __post_init__(self) -> None:
        check_candidates(self.candidates, end_of_turn=self.end_of_turn)
        check_template(self.template)
        if self.normalize not in _SCORES:
            raise ConfigError(f"normalize must be one of {', '.join(_SCORES)}, got {self.normalize!r}")
        if self.about not in ("self", "user"):
            raise ConfigError(f"about must be 'self' or 'user', got {self.about!r}")
        for name in ("system_prompt", "answer_prefix", "neutral_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.neutral_prompt.strip():
            raise ConfigError("neutral_prompt is empty; expected a prompt such as 'Say something.'")
        if not isinstance(self.end_of_turn, bool):
            raise ConfigError(f"end_of_turn must be True or False, got {self.end_of_turn!r}")
        if self.neutral_model not in ("same", "base"):
            raise ConfigError(f"neutral_model must be 'same' or 'base', got {self.neutral_model!r}")

    @property
    def set_is_disjoint(self) -> bool:
        """Whether the candidates are disjoint answers, so the set's mass is the sum of theirs (``set_logmass``).

        With the end-of-turn token every candidate is a complete answer. Without it
        the candidates are answer openings, disjoint only when no scored text is a
        prefix of another ("Voyager" of "Voyager 1" would be counted inside it too).
        Elsewhere ``set_logmass`` is NaN.
        """
        return candidates_disjoint(self.candidates, self.template, self.answer_prefix, end_of_turn=self.end_of_turn)

    @property
    def set_is_probability(self) -> bool:
        """Whether ``set_prob`` is a probability: total log-probabilities of disjoint answers.

        The candidates must be disjoint (:attr:`set_is_disjoint`) and ranked by their
        total log-probability: per-token means and PMI are not log-probabilities of
        the answer at all. Elsewhere ``set_prob`` is NaN.
        """
        return self.normalize == "sum" and self.set_is_disjoint

    @property
    def score_column(self) -> str:
        """The column that ranks candidates and gives their probability within the set."""
        return _SCORES[self.normalize]

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": list(self.candidates),
            "system_prompt": self.system_prompt,
            "template": self.template,
            "answer_prefix": self.answer_prefix,
            "normalize": self.normalize,
            "neutral_prompt": self.neutral_prompt if self.normalize == "pmi" else None,
            "neutral_model": self.neutral_model if self.normalize == "pmi" else None,
            "end_of_turn": self.end_of_turn,
            "about": self.about,
        }

    def options(self) -> dict[str, Any]:
        """The spec as ``identity_shift``'s keyword options: ``identity_shift(model, a, **spec.options())``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ShiftResult(Result):
    """Candidate scores per (probe, candidate, adapter) in :attr:`df`; :meth:`shifts` compares them."""

    kind: ClassVar[str] = "identity_shift"
    df: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def conditions(self) -> list[str]:
        """The adapter conditions, in the order they were given (the base model excluded)."""
        return [c for c in dict.fromkeys(self.df["condition"]) if c != BASE]

    @property
    def set_mass_floor(self) -> float:
        """The floor (nats) the run was checked against: the manifest's, or :data:`SET_MASS_FLOOR` for older runs."""
        recorded = self.manifest.get("set_mass")
        if not isinstance(recorded, dict) or "floor" not in recorded:
            return SET_MASS_FLOOR
        floor = recorded["floor"]
        return -math.inf if floor is None else float(floor)

    def shifts(
        self,
        *,
        by_prompt: bool = False,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        seed: int = 0,
        adjust: Adjustment = "holm",
        set_mass_floor: float | None = None,
    ) -> pd.DataFrame:
        """Adapter minus base, per condition and candidate, with bootstrap intervals.

        Per prompt (and adapter seed) the differences are ``delta_logprob``,
        ``delta_mean_logprob``, ``delta_set_prob`` (where ``set_prob`` is a
        probability) and ``delta_pmi`` (with PMI), and ``rank_change`` (base rank minus
        adapter rank: positive = the candidate rose). Aggregated (the default), each is
        the mean over prompts and seeds with an interval from a bootstrap over question
        groups (paraphrases of one question are one unit) crossed with training seeds;
        ``interval`` says what it is over. The shift in the ranking score is tested
        against zero, with p-values ``adjust``-ed over every condition x candidate.
        ``by_prompt=True`` returns the per-prompt differences instead.

        Where ``set_prob`` is a probability the table also gives the mass it is a share
        of: the mean set log-mass under base and adapter and the share of prompts whose
        set holds less than ``set_mass_floor`` (default: the floor the run was checked
        against, :attr:`set_mass_floor`); see :func:`shift_table`.
        """
        return shift_table(
            self.df,
            by_prompt=by_prompt,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            adjust=adjust,
            normalize=self._normalize,
            set_mass_floor=self.set_mass_floor if set_mass_floor is None else set_mass_floor,
        )

    def compare(
        self,
        reference: str,
        *,
        n_boot: int = DEFAULT_BOOT,
        confidence: float = 0.95,
        seed: int = 0,
        adjust: Adjustment = "holm",
    ) -> pd.DataFrame:
        """Each condition's shift minus ``reference``'s, per candidate, paired by question group.

        What a control needs: a Bitcoin adapter against one trained on the same prices
        shuffled across dates, a variant against the figure's own facts, a dose against
        dose 0. Both sides are shifts from the same base rows, so this is also the
        difference of their scores. The tested score is the one that ranks candidates
        (``delta_logprob``, or ``delta_pmi``); columns as
        :func:`~persona_space.estimates.difference_table`, with ``candidate`` as the
        stratum and ``p_adjusted`` over every condition x candidate that varies.
        """
        from persona_space.estimates import difference_table

        if reference not in self.conditions:
            raise ConfigError(f"reference {reference!r} is not a condition of this run; conditions: {self.conditions}")
        if len(self.conditions) < 2:
            raise DataError(f"the run has one condition ({self.conditions[0]!r}); nothing to compare it with")
        per = self.shifts(by_prompt=True)
        tested = _tested_score(per.columns, self._normalize)
        return difference_table(
            per,
            per[[tested]].to_numpy(dtype=np.float64),
            [tested],
            by="condition",
            reference=reference,
            strata=["candidate"],
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            adjust=adjust,
        )

    @property
    def _normalize(self) -> Normalize | None:
        """The score that ranked the candidates, as the run recorded it (``None`` where it did not)."""
        normalize = self.manifest.get("parameters", {}).get("normalize")
        return normalize if normalize in _SCORES else None

    def ranking(self, adapter: str = BASE) -> pd.DataFrame:
        """Candidates under ``adapter`` (a model label) by mean rank over prompts, with log-probability and share.

        ``set_prob`` is the mean share within the set; ``set_logmass`` the mean log-mass
        (nats) of the set it is a share of, and ``set_below_floor`` the share of prompts
        whose set holds less than :attr:`set_mass_floor` (both the same for every candidate).
        """
        rows = _with_set_logmass(self.df)
        rows = rows[rows["adapter"] == adapter]
        if rows.empty:
            raise DataError(f"no rows for adapter {adapter!r}; labels are {sorted(self.df['adapter'].unique())}")
        rows = rows.assign(_below=_below(rows["set_logmass"], self.set_mass_floor))
        table = rows.groupby("candidate", sort=False).agg(
            mean_rank=("rank", "mean"),
            logprob=("logprob", "mean"),
            set_prob=("set_prob", "mean"),
            set_logmass=("set_logmass", "mean"),
            set_below_floor=("_below", "mean"),
            greedy_prompts=("greedy", "sum"),
        )
        # one model label has one row per prompt, so greedy_prompts counts prompts
        return table.sort_values(["mean_rank", "logprob"], ascending=[True, False]).reset_index()

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``shift.parquet`` and ``manifest.json`` into ``folder`` (atomically)."""
        from persona_space.store import RunStore

        store = RunStore(folder, table=TABLE)
        store.path.mkdir(parents=True, exist_ok=True)
        store.finalize(self.df)
        store.write_manifest({**self.manifest, "state": "complete", "rows": len(self.df)})
        self.path = store.path
        return store.path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> ShiftResult:
        """A result written by :meth:`save` or by ``identity_shift(..., store=DIR)``."""
        from persona_space.store import RunStore

        store = RunStore(folder, table=TABLE)
        manifest = store.read_manifest()
        if manifest is None:
            raise CorruptRunError(f"{str(folder)!r} holds no identity-shift run (no manifest.json)")
        if manifest.get("state") != "complete" or not store.table_path.exists():
            raise CorruptRunError(
                f"the identity-shift run in {str(folder)!r} is not complete (state {manifest.get('state')!r}); "
                "run identity_shift with the same arguments and store= to finish it"
            )
        check_schema(manifest.get("schema_version"), store.manifest_path)
        frame = store.read_rows()
        assert frame is not None
        frame = _upgrade(frame, disjoint=_disjoint_from_parameters(manifest.get("parameters", {})))
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise CorruptRunError(f"{str(store.table_path)!r} lacks columns {missing}; expected {list(COLUMNS)}")
        return cls(df=frame, manifest=manifest, path=store.path)

    def __repr__(self) -> str:
        prompts, candidates = self.df["probe_id"].nunique(), self.df["candidate"].nunique()
        labels = list(dict.fromkeys(self.df["adapter"]))
        return f"ShiftResult({prompts} prompts x {candidates} candidates, adapters={labels})"


def identity_shift(
    model: LoadedModel,
    adapters: AdapterLike | Sequence[AdapterLike] | Mapping[str, AdapterLike | Sequence[AdapterLike]],
    *,
    candidates: Sequence[str] | str | os.PathLike[str],
    prompts: ProbeSet | Sequence[str | Probe] | str | None = None,
    system_prompt: str | None = None,
    template: str = "{candidate}",
    answer_prefix: str | None = None,
    normalize: Normalize = "sum",
    neutral_prompt: str = NEUTRAL_PROMPT,
    neutral_model: NeutralModel = "same",
    end_of_turn: bool = False,
    about: About = "self",
    method: ScoreMethod = "auto",
    batch_tokens: int = 8192,
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

    ``prompts``: a probe set (or its name, e.g. ``"identity"``), a list of prompts,
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
    from persona_space.adapters import expand_conditions

    if method not in SCORE_METHODS:
        raise ConfigError(f"method must be one of {', '.join(SCORE_METHODS)}, got {method!r}")
    if isinstance(chunk_prompts, bool) or not isinstance(chunk_prompts, int) or chunk_prompts < 1:
        raise ConfigError(f"chunk_prompts must be a positive integer, got {chunk_prompts!r}")
    if about not in ("self", "user"):
        raise ConfigError(f"about must be 'self' or 'user', got {about!r}")
    set_mass_floor = check_set_mass_floor(set_mass_floor)
    engine = resolve_backend(model, backend, score_method=method, batch_tokens=batch_tokens)
    if method != "auto" and engine.name != "cpu":
        raise ConfigError(
            f"method={method!r} chooses how the cpu backend packs its rows; backend {engine.name!r} "
            "has its own (leave method='auto')"
        )
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
    probe_set = _prompts(prompts, about)
    talks = [p.id for p in probe_set if p.turns]
    if talks:  # their earlier answers are sampled, so there is no one chat to score the candidates after
        raise ConfigError(
            f"probes {talks[:3]} are conversations (earlier turns the model answers itself); identity_shift scores "
            "single prompts: sample the conversation with ps.sample and compare answers, or give a probe whose "
            "prompt holds the whole exchange"
        )
    members = expand_conditions(_conditions(adapters))
    labels: dict[str, tuple[str, int | None]] = {BASE: (BASE, None)}  # model label -> (condition, train seed)
    labels.update({m.label: (m.condition, m.train_seed) for m in members})
    attached = model.adapters.attach_members(members)
    routes: dict[str, str | None] = {BASE: None, **attached}
    described = model.describe()
    parameters = {
        "model": {k: v for k, v in described.items() if k not in ("adapters", "source", "device")},
        "adapters": {label: model.adapters[a].sha256 for label, a in attached.items() if a is not None},
        "conditions": {label: list(labels[label]) for label in routes},
        "prompts": probe_set.to_records(),
        **spec.to_dict(),
    }
    run_id = provenance.sha256_json(parameters)[:16]
    manifest: dict[str, Any] = {
        "kind": "identity_shift",
        "run_id": run_id,
        "schema_version": SCHEMA_VERSION,
        "parameters": parameters,
        "model": described,
        "environment": provenance.environment(),
        "state": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    run_store = None
    done: pd.DataFrame | None = None
    if store is not None:
        from persona_space.store import RunStore

        run_store = RunStore(store, table=TABLE)
        manifest = run_store.open(manifest)
        done = run_store.read_rows()
        done = None if done is None else _upgrade(done, disjoint=spec.set_is_disjoint)  # older parts resume too
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
            if run_store is not None:
                run_store.append(frame)
            frames.append(frame)
    finally:
        if bar is not None:
            bar.close()
    table = _canonical(pd.concat(frames, ignore_index=True), probe_set, spec, list(routes))
    set_mass = _check_set_mass(table, set_mass_floor, checked=spec.set_is_probability)
    described_engine = engine.describe()
    manifest = {
        **manifest,
        "state": "complete",
        "schema_version": SCHEMA_VERSION,  # a resumed run's table is written in today's columns
        "rows": len(table),
        "method": described_engine.get("score_method") or manifest.get("method"),
        "backend": described_engine,
        "timings": {"seconds": round(time.perf_counter() - start, 3), "prompts_scored": len(todo)},
        "set_mass": set_mass,
    }
    if run_store is not None:
        run_store.finalize(table)
        run_store.write_manifest(manifest)
    return ShiftResult(df=table, manifest=manifest, path=run_store.path if run_store is not None else None)


def _upgrade(frame: pd.DataFrame, *, disjoint: bool | None = None) -> pd.DataFrame:
    """Rows stored by an older schema, in today's column names (``disjoint``: see :func:`_with_set_logmass`)."""
    frame = frame.rename(columns={"prompt_id": "probe_id", "model": "adapter"})  # schema 1 and 2 names
    if "group" not in frame.columns:  # schema 1: no question groups recorded
        frame.insert(1, "group", frame["probe_id"])
    if "set_logmass" not in frame.columns:  # written before the set's mass was recorded
        frame = _with_set_logmass(frame, disjoint=disjoint)
        frame.insert(list(frame.columns).index("set_prob") + 1, "set_logmass", frame.pop("set_logmass"))
    return frame


def candidates_disjoint(candidates: Sequence[str], template: str, answer_prefix: str, *, end_of_turn: bool) -> bool:
    """Whether the scored texts are disjoint answers: complete (end of turn), or none the opening of another."""
    if end_of_turn:
        return True
    texts = sorted(continuation(c, template, answer_prefix) for c in candidates)
    return not any(b.startswith(a) for a, b in itertools.pairwise(texts))  # sorted: a prefix sits next


def check_set_mass_floor(floor: object) -> float:
    """``floor`` as a float: a log-probability (nats, at most 0), or ``-math.inf`` to check nothing."""
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or math.isnan(floor) or floor > 0:
        raise ConfigError(
            f"set_mass_floor must be a log-probability in nats (a number <= 0, such as math.log(0.25), "
            f"or -math.inf for none), got {floor!r}"
        )
    return float(floor)


def _disjoint_from_parameters(parameters: Mapping[str, Any]) -> bool | None:
    """:func:`candidates_disjoint` from a manifest's parameters; ``None`` where they do not say."""
    try:
        return candidates_disjoint(
            [str(c) for c in parameters["candidates"]],
            str(parameters.get("template", "{candidate}")),
            str(parameters.get("answer_prefix") or ""),
            end_of_turn=bool(parameters.get("end_of_turn", False)),
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None


# -- inputs -----------------------------------------------------------------------------------


def read_candidates(candidates: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    """A list of candidates as given, or read from a text file (one per line; blank lines skipped)."""
    if isinstance(candidates, os.PathLike) or (isinstance(candidates, str) and Path(candidates).is_file()):
        path = Path(candidates)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read candidates from {str(path)!r}: {exc}; expected UTF-8 text") from exc
        out = [line.rstrip("\r") for line in lines if line.strip()]
        if not out:
            raise DataError(f"{str(path)!r} holds no candidates; expected one per line")
        return out
    if isinstance(candidates, str):
        raise DataError(
            f"candidates {candidates!r:.80} is a string but not a file; expected a list of strings or a path "
            "to a text file with one candidate per line"
        )
    return list(candidates)


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


def _conditions(
    adapters: AdapterLike | Sequence[AdapterLike] | Mapping[str, AdapterLike | Sequence[AdapterLike]],
) -> dict[str, AdapterLike | Sequence[AdapterLike] | None]:
    """Condition name -> its adapters (one, or several training seeds)."""
    from persona_space.adapters import validate_name

    def name_of(where: Any) -> str:
        if isinstance(where, AdapterInfo):
            return where.name
        if isinstance(where, (str, os.PathLike)):
            return Path(where).name or str(where)
        raise ConfigError(
            f"an adapter must be an AdapterInfo, a folder or an attached adapter's name, "
            f"got {type(where).__name__} {where!r:.60}"
        )

    if isinstance(adapters, Mapping):
        out: dict[str, AdapterLike | Sequence[AdapterLike] | None] = {}
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


def _rank(frame: pd.DataFrame, column: str, *, probability: bool, disjoint: bool) -> None:
    """Rank (1 = likeliest, ties share the best rank), the probability within the set where it is one, and
    the set's log-mass where the candidates are disjoint answers (rows of one prompt and one model)."""
    score = frame[column].to_numpy(dtype=np.float64)
    frame["rank"] = pd.Series(score).rank(ascending=False, method="min").astype(int).to_numpy()
    shifted = np.exp(score - score.max())
    frame["set_prob"] = shifted / shifted.sum() if probability else np.nan
    frame["set_logmass"] = _logsumexp(frame["logprob"].to_numpy(dtype=np.float64)) if disjoint else np.nan


def _tested_score(deltas: Sequence[str] | pd.Index, normalize: Normalize | None) -> str:
    """The shift column a table tests: that of the ranking score, by default PMI where there are PMI shifts."""
    if normalize is None:
        normalize = "pmi" if "delta_pmi" in deltas else "sum"
    return f"delta_{_SCORES[normalize]}"


def _logsumexp(values: np.ndarray) -> float:
    from scipy.special import logsumexp

    return float(logsumexp(values))


def _with_set_logmass(frame: pd.DataFrame, *, disjoint: bool | None = None) -> pd.DataFrame:
    """``frame`` with ``set_logmass`` (kept if it has one), from ``logprob`` per prompt and model.

    ``disjoint`` says whether the candidates are disjoint answers; ``None`` (unknown)
    takes the rows whose ``set_prob`` was computed as the ones whose set has a mass.
    """
    if "set_logmass" in frame.columns:
        return frame
    keys = [c for c in ("condition", "adapter", "probe_id") if c in frame.columns]
    mass = frame.groupby(keys, sort=False, dropna=False)["logprob"].transform(
        lambda g: _logsumexp(g.to_numpy(dtype=np.float64))
    )
    if disjoint is False:
        mass = mass * np.nan
    elif disjoint is None:
        mass = mass.where(frame["set_prob"].notna()) if "set_prob" in frame.columns else mass * np.nan
    return frame.assign(set_logmass=mass.astype(np.float64))


def _below(logmass: pd.Series, floor: float) -> pd.Series:
    """1.0 where a set holds less than ``floor``, 0.0 where not, NaN where it has no mass recorded."""
    values = logmass.to_numpy(dtype=np.float64)
    return pd.Series(np.where(np.isnan(values), np.nan, (values < floor).astype(np.float64)), index=logmass.index)


def set_mass_table(
    df: pd.DataFrame, *, by: Sequence[str] = ("condition",), floor: float = SET_MASS_FLOOR
) -> pd.DataFrame:
    """How much probability the candidate set holds, per value of ``by``: what ``set_prob`` is a share of.

    ``df`` is :attr:`ShiftResult.df`. One set per prompt and model; columns: ``by``...,
    ``set_logmass`` (mean nats over the sets), ``set_logmass_low``/``set_logmass_high``
    (the least and the most), ``set_below_floor`` (the share of sets holding less than
    ``floor``) and ``sets``. NaN where the candidates are not disjoint answers.
    """
    floor = check_set_mass_floor(floor)
    keys = list(by)
    sets = _with_set_logmass(df).drop_duplicates([*dict.fromkeys([*keys, "adapter", "probe_id"])])
    sets = sets.assign(_below=_below(sets["set_logmass"], floor))
    return (
        sets.groupby(keys, sort=False, dropna=False)
        .agg(
            set_logmass=("set_logmass", "mean"),
            set_logmass_low=("set_logmass", "min"),
            set_logmass_high=("set_logmass", "max"),
            set_below_floor=("_below", "mean"),
            sets=("probe_id", "size"),
        )
        .reset_index()
    )


def _check_set_mass(table: pd.DataFrame, floor: float, *, checked: bool) -> dict[str, Any]:
    """The manifest's ``set_mass``; warns where a set whose ``set_prob`` is computed holds less than ``floor``."""
    sets = table.drop_duplicates(["condition", "adapter", "probe_id"])
    masses = sets["set_logmass"].to_numpy(dtype=np.float64)
    below = sets[masses < floor] if checked else sets.iloc[:0]
    summary: dict[str, Any] = {
        "floor": None if math.isinf(floor) else floor,
        "floor_probability": math.exp(floor),
        "checked": checked,
        "sets": len(sets),
        "below_floor": len(below),
        "mean_logmass": float(np.mean(masses)) if checked and np.isfinite(masses).all() else None,
    }
    if len(below):
        worst = below.iloc[int(np.argmin(below["set_logmass"].to_numpy(dtype=np.float64)))]
        warnings.warn(
            f"{len(below)} of {len(sets)} candidate sets (prompt x model) hold less than the set-mass floor "
            f"{floor:.3f} nats (probability {math.exp(floor):.3g}); the least, {worst['set_logmass']:.2f} nats "
            f"(probability {math.exp(worst['set_logmass']):.2g}), under {worst['adapter']!r} on "
            f"{worst['probe_id']!r}. set_prob there is a share of that small mass, not of the model's answers: "
            "read it with set_logmass, or widen the candidates",
            LowMassWarning,
            stacklevel=3,
        )
    return summary


def _canonical(frame: pd.DataFrame, probes: ProbeSet, spec: ShiftSpec, models: list[str]) -> pd.DataFrame:
    """Rows in prompt, model, candidate order, with the documented columns first."""
    order = {
        "probe_id": {p: i for i, p in enumerate(probes.ids)},
        "adapter": {m: i for i, m in enumerate(models)},
        "candidate": {c: i for i, c in enumerate(spec.candidates)},
    }
    keys = [frame[col].map(rank) for col, rank in order.items()]
    frame = frame.assign(_p=keys[0], _m=keys[1], _c=keys[2]).sort_values(["_p", "_m", "_c"], kind="stable")
    extra = [c for c in frame.columns if c not in COLUMNS and not c.startswith("_")]
    return frame[[*COLUMNS, *extra]].reset_index(drop=True)


def shift_table(
    df: pd.DataFrame,
    *,
    by_prompt: bool = False,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
    adjust: Adjustment = "holm",
    normalize: Normalize | None = None,
    set_mass_floor: float = SET_MASS_FLOOR,
) -> pd.DataFrame:
    """Adapter minus base per (condition, seed, prompt, candidate), or aggregated with bootstrap intervals.

    ``normalize`` names the score that ranked the candidates (``sum``, ``mean`` or
    ``pmi``; by default PMI where the table has it, else the total log-probability):
    its shift is the one tested.

    Aggregated: one row per (condition, candidate) with the means over prompts and
    seeds, each difference's crossed-bootstrap interval over question groups (a
    question and its paraphrases are one unit) and training seeds, the Student-t
    interval over per-seed means of the tested difference (with two or more seeds),
    and a p-value for the tested difference (``tested``: the shift in the score that
    ranks candidates) against no shift, adjusted over every tested condition x
    candidate (``adjustment``; a shift that does not vary is left out and counted).

    Where the candidates are disjoint answers the table also says how much
    probability the set holds, the mass ``set_prob`` is a share of:
    ``base_set_logmass`` and ``adapter_set_logmass`` (mean nats over prompts) and
    ``base_below_floor``/``adapter_below_floor`` (the share of prompts whose set holds
    less than ``set_mass_floor``); NaN where the set has no mass recorded.
    """
    from persona_space.estimates import adjust_family, estimate_table
    from persona_space.stats import check_adjustment, check_n_boot

    check_n_boot(n_boot)
    adjust = check_adjustment(adjust)
    set_mass_floor = check_set_mass_floor(set_mass_floor)
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if "group" not in df.columns:  # written before question groups were recorded
        df = df.assign(group=df["probe_id"])
    df = _with_set_logmass(df)
    df = df.assign(_below=_below(df["set_logmass"], set_mass_floor))
    base = df[df["adapter"] == BASE]
    if base.empty:
        raise DataError("the table has no base-model rows to compare with")
    metrics = ["logprob", "mean_logprob", "set_prob", *(["pmi"] if "pmi" in df.columns else [])]
    keys = ["probe_id", "candidate"]
    paired = df[df["adapter"] != BASE].merge(
        base[[*keys, *metrics, "rank", "set_logmass", "_below"]],
        on=keys,
        suffixes=("", "_base"),
        validate="many_to_one",
    )
    if paired.empty:
        raise DataError("the table has no adapter rows to compare with the base model")
    for m in metrics:
        paired[f"delta_{m}"] = paired[m] - paired[f"{m}_base"]
    paired["rank_change"] = paired["rank_base"] - paired["rank"]
    deltas = [f"delta_{m}" for m in metrics if paired[f"delta_{m}"].notna().any()] + ["rank_change"]
    if by_prompt:
        columns = ["condition", "adapter", "train_seed", "probe_id", "group", "candidate"]
        return paired[[*columns, "logprob_base", "logprob", "rank_base", "rank", *deltas]].reset_index(drop=True)
    tested = _tested_score(deltas, normalize)
    if tested not in deltas:
        raise DataError(f"the table has no {tested.removeprefix('delta_')!r} scores to test (normalize={normalize!r})")
    by = ["condition", "candidate"]
    long = estimate_table(
        paired,
        paired[deltas].to_numpy(dtype=np.float64),
        deltas,
        by,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
        reference=0.0,
        reference_label="no shift",
    )
    wide = long.pivot_table(index=by, columns="metric", values=["estimate", "low", "high"], sort=False)
    table = paired.groupby(by, sort=False).agg(
        n_prompts=("probe_id", "nunique"),
        n_groups=("group", "nunique"),
        n_seeds=("adapter", "nunique"),
        base_logprob=("logprob_base", "mean"),
        adapter_logprob=("logprob", "mean"),
        base_rank=("rank_base", "mean"),
        adapter_rank=("rank", "mean"),
        base_set_logmass=("set_logmass_base", "mean"),
        adapter_set_logmass=("set_logmass", "mean"),
        base_below_floor=("_below_base", "mean"),
        adapter_below_floor=("_below", "mean"),
    )
    for column in deltas:
        table[column] = wide[("estimate", column)]
        table[f"{column}_low"] = wide[("low", column)]
        table[f"{column}_high"] = wide[("high", column)]
    first = long[long["metric"] == tested].set_index(by)
    table["tested"] = tested
    table["p_value"] = first["p_value"]
    table["test"] = first["test"]
    table[f"{tested}_seed_low"] = first["seed_low"]
    table[f"{tested}_seed_high"] = first["seed_high"]
    table["interval"] = first["interval"]
    table = adjust_family(table.reset_index(), adjust)
    return table.sort_values(["condition", "delta_logprob"], ascending=[True, False], kind="stable").reset_index(
        drop=True
    )


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring", unit="candidate", leave=False)
