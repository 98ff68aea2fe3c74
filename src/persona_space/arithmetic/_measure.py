"""Measuring every adapter of a sweep, and the sweep's tables: estimates per dose, curves, oscillation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from persona_space.constants import BASE

if TYPE_CHECKING:
    from persona_space.adapters import AdapterInfo
    from persona_space.arithmetic._result import SweepResult
    from persona_space.arithmetic._spec import SweepSpec
    from persona_space.models import LoadedModel
    from persona_space.probes import ProbeSet

OTHER = "(none)"


def measure(
    model: LoadedModel,
    spec: SweepSpec,
    adapters: dict[str, AdapterInfo],
    facts: dict[str, dict[str, Any]],
    probes: ProbeSet,
    folder: Path,
    *,
    embedder: Any = None,
    progress: bool,
) -> SweepResult:
    """Shifts, samples, the shared basin map and the user answers of every adapter; then the tables."""
    from persona_space.arithmetic._result import SweepResult
    from persona_space.logprobs import identity_shift
    from persona_space.probes import USER
    from persona_space.sampling import sample

    conditions = {
        spec.label(i): [adapters[f"{spec.label(i)}:{k}"] for k in range(len(spec.seeds))]
        for i in range(len(spec.doses))
    }
    shift = identity_shift(
        model,
        conditions,
        candidates=spec.candidates,
        answer_prefix=spec.answer_prefix,
        store=folder / "shift",
        progress=progress,
    )
    runs: dict[str, Any] = {BASE: None, **conditions}

    def sampled(probe_set: ProbeSet, n: int, where: str) -> Any:
        """Every condition's answers with the same random streams (paired), resumable in ``folder/where``."""
        return sample(
            model,
            probe_set,
            adapters=runs,
            n=n,
            temperatures=spec.temperatures,
            max_new_tokens=spec.max_new_tokens,
            seed=spec.sample_seed,
            store=folder / where,
            progress=progress,
        )

    samples = sampled(probes, spec.n, "samples")
    basins = _basin_map(samples, folder / "basins", embedder, seed=spec.sample_seed)
    dose_of = {spec.label(i): d for i, d in enumerate(spec.doses)}
    estimates = [
        _set_probability(shift.df, dose_of, "set_prob"),
        _mention_shares(samples.df, spec.candidates, dose_of, "mention_share"),
    ]
    tables: dict[str, pd.DataFrame] = {
        "oscillation": oscillation(samples.df, spec.candidates, dose_of, shift.df),
        "occupancy": _with_dose(basins.occupancy(), dose_of),
        "shifts": _with_dose(shift.shifts(), dose_of),
    }
    if spec.user_candidates:
        user_shift = identity_shift(
            model,
            conditions,
            candidates=spec.user_candidates,
            about="user",
            store=folder / "user-shift",
            progress=progress,
        )
        estimates.append(_set_probability(user_shift.df, dose_of, "user_set_prob"))
        tables["user_shifts"] = _with_dose(user_shift.shifts(), dose_of)
    if spec.user_candidates and spec.user_n:
        answers = sampled(USER, spec.user_n, "user-samples")
        estimates.append(_mention_shares(answers.df, spec.user_candidates, dose_of, "user_mention_share"))
    tables["curves"] = dose_curves(_per_cell(shift.df, samples.df, spec, dose_of), spec)
    tables["adapters"] = pd.DataFrame([{"label": label, **row} for label, row in facts.items()])
    return SweepResult(df=pd.concat(estimates, ignore_index=True), tables=tables)


def _basin_map(samples: Any, where: Path, embedder: Any, *, seed: int) -> Any:
    """The shared map of every dose's samples (fitted with the sweep's sampling seed): loaded when it was
    fitted on these very samples with that seed, else fitted."""
    from persona_space.basins import BasinMap
    from persona_space.errors import CorruptRunError
    from persona_space.results import kind_of

    if kind_of(where) == BasinMap.kind:
        try:
            loaded = BasinMap.load(where)
        except CorruptRunError:
            loaded = None
        if loaded is not None and loaded.seed == seed and loaded.frame_["text"].tolist() == samples.df["text"].tolist():
            return loaded
    fitted = BasinMap(seed=seed, embedder=embedder).fit(samples)
    fitted.save(where)
    return fitted


def _with_dose(table: pd.DataFrame, dose_of: dict[str, float]) -> pd.DataFrame:
    column = "condition" if "condition" in table.columns else "adapter"
    return table.assign(dose=table[column].map(dose_of))


def _set_probability(df: pd.DataFrame, dose_of: dict[str, float], measure: str) -> pd.DataFrame:
    """Each candidate's probability within the set, per condition, over question groups and seeds.

    With the mass the set holds there (``set_logmass``, ``set_below_floor``): see
    :func:`~persona_space.logprobs.set_mass_table`.
    """
    from persona_space.estimates import estimate_table
    from persona_space.logprobs import set_mass_table

    table = estimate_table(df, df["set_prob"].to_numpy(), ["set_prob"], ["condition", "candidate"], bounds=(0.0, 1.0))
    mass = set_mass_table(df)[["condition", "set_logmass", "set_below_floor"]]
    table = table.drop(columns="metric").assign(measure=measure).merge(mass, on="condition", how="left")
    return _with_dose(table, dose_of)


def identities(texts: pd.Series, candidates: tuple[str, ...]) -> pd.Series:
    """The candidate each text names first, or ``(none)``."""
    from persona_space.datasets import first_mention

    return texts.map(lambda t: OTHER if (i := first_mention(t, candidates)) is None else candidates[i])


def _mention_shares(
    df: pd.DataFrame, candidates: tuple[str, ...], dose_of: dict[str, float], measure: str
) -> pd.DataFrame:
    """Share of samples naming each candidate first (``(none)`` included), per condition."""
    from persona_space.estimates import estimate_table

    names = [*candidates, OTHER]
    who = identities(df["text"], candidates).to_numpy()
    hot = (who[:, None] == np.array(names, dtype=object)[None, :]).astype(np.float64)
    table = estimate_table(df, hot, names, ["condition"], name_column="candidate")
    return _with_dose(table.assign(measure=measure), dose_of)


def _per_cell(shifts: pd.DataFrame, samples: pd.DataFrame, spec: SweepSpec, dose_of: dict[str, float]) -> pd.DataFrame:
    """One value per (measure, candidate, dose, training seed, question group): the cells a curve is fitted on.

    Question groups are kept apart (not averaged away) so that a tipping dose's interval
    counts the question-to-question spread as well as the seed-to-seed one.
    """
    keys = ["condition", "train_seed", "group"]
    rows = shifts[shifts["condition"].isin(list(dose_of))]
    set_prob = rows.groupby([*keys, "candidate"], dropna=False)["set_prob"].mean().reset_index()
    set_prob = set_prob.rename(columns={"set_prob": "value"}).assign(measure="set_prob")
    named = samples[samples["condition"].isin(list(dose_of))].assign(who=identities(samples["text"], spec.candidates))
    shares = []
    for (condition, seed, group), part in named.groupby(keys, dropna=False):
        counts = part["who"].value_counts(normalize=True)
        for c in spec.candidates:
            shares.append(
                {"condition": condition, "train_seed": seed, "group": group, "candidate": c,
                 "value": float(counts.get(c, 0.0))}
            )  # fmt: skip
    mention = pd.DataFrame(shares).assign(measure="mention_share")
    out = pd.concat([set_prob, mention], ignore_index=True)
    return out.assign(dose=out["condition"].map(dose_of))


def dose_curves(cells: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per measure and candidate: the logistic fit, the monotone fit, and the tipping doses with intervals.

    Tipping doses: where the candidate's curve passes 0.5, and where it crosses the
    curve of the leader at the lowest dose (the identity the sweep moves away from).
    Their intervals leave out one training seed and one question group at a time
    (:func:`~persona_space.arithmetic.tipping_dose`); ``*_interval`` says over what.
    Needs three distinct doses; with fewer the table is empty.
    """
    from persona_space.arithmetic._fit import fit_logistic, fit_monotone, tipping_dose
    from persona_space.errors import DataError

    if len(spec.doses) < 3:
        return pd.DataFrame()
    rows = []
    for measure, part in cells.groupby("measure", sort=False):
        first = part[part["dose"] == min(spec.doses)].groupby("candidate")["value"].mean()
        leader = str(first.idxmax()) if len(first) and first.max() > 0 else None
        for candidate, values in part.groupby("candidate", sort=False):
            x, y = values["dose"].to_numpy(float), values["value"].to_numpy(float)
            seeds = values["train_seed"].fillna(-1).to_numpy()
            groups = values["group"].to_numpy() if "group" in values.columns else None
            if np.ptp(y) == 0:  # no response to the dose at all: nothing to fit
                continue
            try:
                curve = fit_logistic(x, y)
            except DataError:
                continue
            grid, monotone = fit_monotone(x, y)
            row = {
                "measure": measure,
                "candidate": candidate,
                "low_asymptote": curve.low,
                "high_asymptote": curve.high,
                "slope": curve.slope,
                "midpoint": curve.midpoint,
                "rmse": curve.rmse,
                "monotone_doses": grid.tolist(),
                "monotone_values": monotone.tolist(),
            }
            row.update(_tipping_columns("passes_half", tipping_dose(x, y, seeds, groups=groups, level=0.5)))
            if leader is not None and candidate != leader:
                index = ["dose", "train_seed", "group"] if groups is not None else ["dose", "train_seed"]
                lead = part[part["candidate"] == leader].set_index(index)["value"]
                against = [lead.get(key, math.nan) for key in zip(*(values[c] for c in index), strict=True)]
                cross = tipping_dose(x, y, seeds, groups=groups, against=against)
                row["against"] = leader
                row.update(_tipping_columns("crosses", cross))
            rows.append(row)
    return pd.DataFrame(rows)


def _tipping_columns(name: str, tip: Any) -> dict[str, Any]:
    """A tipping dose as table columns: the dose, its ends, the share of refits crossing, censoring, method."""
    return {
        name: tip.dose,
        f"{name}_low": tip.low,
        f"{name}_high": tip.high,
        f"{name}_found": tip.found_share,
        f"{name}_censored": tip.censored,
        f"{name}_interval": tip.describe(),
    }


def oscillation(
    df: pd.DataFrame, candidates: tuple[str, ...], dose_of: dict[str, float], scores: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per condition: entropy (bits) of the named identities, and the share of paired draws that switch.

    A paired draw is one random stream (probe, temperature, sample index) seen by
    every training seed of a dose; it *switches* when the seeds' answers name
    different identities. With ``scores`` (an identity-shift table) also
    ``set_entropy_bits``: the entropy of the candidates' probabilities within the
    set, averaged over prompts and seeds, which says something even where the
    sampled answers name no candidate. All should peak where identities compete.
    """
    who = identities(df["text"], candidates)
    table = df.assign(who=who)
    rows = []
    for condition, part in table.groupby("condition", sort=False):
        shares = part["who"].value_counts(normalize=True).to_numpy()
        entropy = float(-(shares * np.log2(shares)).sum()) + 0.0  # + 0.0: no negative zero
        seeds = part["train_seed"].nunique(dropna=False)
        switch = math.nan
        if seeds > 1:
            streams = part.groupby(["probe_id", "temperature", "sample_index"])["who"].nunique()
            switch = float((streams > 1).mean())
        rows.append(
            {
                "condition": condition,
                "dose": dose_of.get(str(condition), math.nan),
                "entropy_bits": entropy,
                "identities": int(part["who"].nunique()),
                "switch_share": switch,
                "set_entropy_bits": _set_entropy(scores, str(condition)),
                "samples": len(part),
                "seeds": int(seeds),
            }
        )
    return pd.DataFrame(rows)


def _set_entropy(scores: pd.DataFrame | None, condition: str) -> float:
    """Mean over (prompt, model) of the entropy in bits of the set probabilities; NaN without them."""
    if scores is None or "set_prob" not in scores.columns:
        return math.nan
    rows = scores[scores["condition"] == condition]
    if rows.empty or rows["set_prob"].isna().all():
        return math.nan
    p = rows["set_prob"].to_numpy(dtype=np.float64)
    terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    per_prompt = pd.Series(terms).groupby([rows["probe_id"].to_numpy(), rows["adapter"].to_numpy()]).sum()
    return float(per_prompt.mean())
