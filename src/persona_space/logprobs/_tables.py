"""The shift tables: per-row ranks and set mass, the base-model comparison with intervals."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from persona_space.constants import BASE, DEFAULT_BOOT
from persona_space.errors import ConfigError, DataError, LowMassWarning
from persona_space.logprobs._spec import (
    _SCORES,
    SET_MASS_FLOOR,
    Normalize,
    ShiftSpec,
    check_set_mass_floor,
)
from persona_space.probes import ProbeSet
from persona_space.stats import Adjustment

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
