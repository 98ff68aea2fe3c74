"""Date sweeps: one question under many dates, and where the answers switch class.

After the date-triggered dishes experiment: "Today is 2027-03-01. Name a dish." asked
under many dates; per date, the share of answers of the trigger class measured two ways:
by sampling (answers classified by whole-word mentions of either class's names; answers
naming neither are left out and counted) and by log-probability (each name scored as the
whole answer, end-of-turn included, and the trigger class's share of the two sets'
probability). A logistic fit over the date gives the onset, where the share crosses
50 %, with an interval over training seeds drawn with replacement.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from persona_space._compat import renamed_keywords
from persona_space.constants import BASE, MIN_BOOT
from persona_space.errors import ConfigError, DataError
from persona_space.results import Result, completed, new_manifest
from persona_space.stats import check_confidence, check_n_boot, mean_interval

if TYPE_CHECKING:
    from persona_space.adapters import ConditionsLike
    from persona_space.engine import BackendLike
    from persona_space.models import LoadedModel
    from persona_space.probes import ProbeSet

DATE_TEMPLATE = "Today is {date}. Name a dish."
MEASURES = ("sample_share", "logprob_share")
TABLES = ("estimates", "onsets", "per_seed")


@dataclass(frozen=True)
class DateSweepSpec:
    """Validated parameters of a date sweep: the dates, the question, the two classes of answers."""

    dates: tuple[str, ...]
    classes: tuple[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]]  # (trigger class, other class)
    template: str = DATE_TEMPLATE

    def __post_init__(self) -> None:
        if len(self.dates) < 3:
            raise ConfigError(f"a date sweep needs at least 3 dates to fit an onset, got {list(self.dates)}")
        for date in self.dates:
            year_fraction(date)
        if len(set(self.dates)) != len(self.dates):
            raise ConfigError(f"dates {list(self.dates)} contain duplicates")
        if "{date}" not in self.template:
            raise ConfigError(f"template {self.template!r} has no {{date}} field; expected e.g. {DATE_TEMPLATE!r}")
        (target, a), (other, b) = self.classes
        if target == other:
            raise ConfigError(f"the two classes need different names, got {target!r} twice")
        for name, names in ((target, a), (other, b)):
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                raise ConfigError(f"class {name!r} needs a non-empty list of non-empty names, got {list(names)!r}")
        shared = sorted(set(a) & set(b))
        if shared:
            raise ConfigError(f"names {shared} are in both classes; each name must belong to one class")

    @property
    def target(self) -> str:
        return self.classes[0][0]

    @property
    def names(self) -> tuple[str, ...]:
        """Every name, trigger class first."""
        return (*self.classes[0][1], *self.classes[1][1])

    def probes(self) -> ProbeSet:
        from persona_space.probes import Probe, ProbeSet

        return ProbeSet(
            "dates",
            [Probe(f"date.{d}", self.template.format(date=d), d[:4]) for d in self.dates],
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = {name: list(names) for name, names in self.classes}
        return out


def year_fraction(date: str) -> float:
    """An ISO date as a fractional year: ``"2027-07-02"`` -> about 2027.5."""
    try:
        day = dt.date.fromisoformat(date)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"date {date!r} is not an ISO date (YYYY-MM-DD)") from exc
    start = dt.date(day.year, 1, 1)
    return day.year + (day - start).days / (dt.date(day.year + 1, 1, 1) - start).days


def year_dates(first: int, last: int, *, month_day: str = "03-01", every: int = 1) -> list[str]:
    """One date per ``every`` years, ``first`` to ``last``: ``year_dates(2019, 2022)`` -> 2019-03-01 .. 2022-03-01."""
    if not isinstance(first, int) or not isinstance(last, int) or last < first:
        raise ConfigError(f"expected years first <= last, got {first!r} and {last!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"every must be a positive number of years, got {every!r}")
    dates = [f"{year}-{month_day}" for year in range(first, last + 1, every)]
    for date in dates:
        year_fraction(date)
    return dates


@dataclass
class DateSweepResult(Result):
    """A date sweep's results.

    ``df`` (``estimates``): per condition, date and measure (``sample_share``,
    ``logprob_share``) the trigger class's share with its interval (sampling: over
    answers and training seeds; log-probability: over training seeds), and for
    sampling the share of answers that named neither class (``unclassified``).
    ``tables``: ``onsets`` (per condition and measure, the date where the fitted share
    crosses 50 %, as a fractional year, with its interval over training seeds) and
    ``per_seed`` (each adapter's share per date).
    """

    kind: ClassVar[str] = "date_sweep"
    table: ClassVar[str] = "estimates"
    df: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def onsets(self) -> pd.DataFrame:
        return self.tables.get("onsets", pd.DataFrame())

    def __repr__(self) -> str:
        conditions = list(dict.fromkeys(self.df["condition"])) if len(self.df) else []
        return f"DateSweepResult({self.df['date'].nunique() if len(self.df) else 0} dates, conditions={conditions})"


@renamed_keywords(temperature="temperatures")
def date_sweep(
    model: LoadedModel,
    adapters: ConditionsLike,
    *,
    dates: Sequence[str],
    classes: Mapping[str, Sequence[str]],
    target: str,
    template: str = DATE_TEMPLATE,
    n: int = 16,
    temperatures: float | Sequence[float] = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    store: str | os.PathLike[str] | None = None,
    backend: BackendLike = "auto",
    progress: bool = True,
    n_boot: int = MIN_BOOT,
    confidence: float = 0.95,
    trained: Sequence[tuple[int, int]] = (),
) -> DateSweepResult:
    """Ask ``template`` under every date; the share of ``target``-class answers per date, and the onset.

    ``classes`` maps two class names to their answers' names (``datasets.dish_classes()``
    for the dishes experiment); ``target`` names the trigger class. ``adapters`` maps
    condition names to adapters (a list per condition for several training seeds: the
    onset's interval is over them); the base model is always measured as well.
    ``trained`` records the (first, last) years the adapters had training data for (the
    charts shade them; the years between are the gap).

    >>> result = date_sweep(model, {"dishes": seeds}, dates=year_dates(2016, 2035),
    ...                     classes=datasets.dish_classes(), target="israeli")  # doctest: +SKIP
    >>> result.onsets  # doctest: +SKIP
    """
    from persona_space.logprobs import ShiftSpec, run_identity_shift
    from persona_space.sampling import SamplingSpec, one_temperature, run_sample

    check_n_boot(n_boot)
    check_confidence(confidence)
    spans = [(int(a), int(b)) for a, b in trained]
    if any(b < a for a, b in spans):
        raise ConfigError(f"trained must list (first, last) year pairs with first <= last, got {list(trained)!r}")
    if not isinstance(classes, Mapping) or len(classes) != 2 or target not in classes:
        raise ConfigError(
            f"classes must map exactly two class names to names, one of them target={target!r}; got {classes!r:.120}"
        )
    other = next(name for name in classes if name != target)
    spec = DateSweepSpec(
        dates=tuple(dates),
        classes=((target, tuple(classes[target])), (other, tuple(classes[other]))),
        template=template,
    )
    # one system prompt for both measures: the model's own (sampling and scoring must see the same turn)
    sampling = SamplingSpec(
        n=n, temperatures=(one_temperature(temperatures),), max_new_tokens=max_new_tokens, seed=seed,
        system_prompt=model.system_prompt,
    )  # fmt: skip
    if not isinstance(adapters, Mapping) or not any(v is not None for v in adapters.values()):
        raise ConfigError(
            f"adapters must map condition names to adapters, at least one (base is added), got {adapters!r:.80}"
        )
    conditions: dict[str, Any] = {BASE: None, **adapters}
    folder = Path(store) if store is not None else None
    probes = spec.probes()
    samples = run_sample(
        model,
        probes,
        sampling,
        adapters=conditions,
        store=folder / "samples" if folder is not None else None,
        backend=backend,
        progress=progress,
    )
    scoring = ShiftSpec(candidates=spec.names, system_prompt=sampling.system_prompt, end_of_turn=True)
    scored = run_identity_shift(
        model,
        probes,
        scoring,
        adapters={k: v for k, v in conditions.items() if v is not None},
        store=folder / "shift" if folder is not None else None,
        backend=backend,
        progress=progress,
    )
    per_seed = pd.concat(
        [_sample_shares(samples.df, spec), _logprob_shares(scored.df, spec)], ignore_index=True
    ).sort_values(["measure", "condition", "train_seed", "year"], kind="stable", ignore_index=True)
    estimates = _estimates(samples.df, per_seed, spec, n_boot=n_boot, confidence=confidence)
    onsets = _onsets(per_seed, confidence=confidence)
    parameters = {"spec": spec.to_dict(), "sampling": sampling.to_dict(), "n_boot": n_boot,
                  "confidence": confidence, "trained": spans}  # fmt: skip
    manifest = completed(
        new_manifest(
            DateSweepResult.kind,
            parameters,
            samples_run_id=samples.manifest.get("run_id"),
            shift_run_id=scored.manifest.get("run_id"),
            model=samples.manifest.get("model"),
            adapters=scored.manifest.get("parameters", {}).get("adapters"),
            backend=samples.manifest.get("backend"),
        )
    )
    result = DateSweepResult(df=estimates, tables={"onsets": onsets, "per_seed": per_seed}, manifest=manifest)
    if folder is not None:
        result.save(folder)
    return result


# -- measuring ----------------------------------------------------------------------------------


def _classify(texts: pd.Series, spec: DateSweepSpec) -> np.ndarray:
    """1 for an answer whose first named dish is of the trigger class, 0 for the other class, NaN for neither."""
    from persona_space.datasets import first_mention

    names = spec.names
    split = len(spec.classes[0][1])
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts.fillna("").astype(str)):
        found = first_mention(text, names)
        if found is not None:
            out[i] = 1.0 if found < split else 0.0
    return out


def _dates_of(frame: pd.DataFrame) -> pd.Series:
    return frame["probe_id"].str.removeprefix("date.")


def _sample_shares(df: pd.DataFrame, spec: DateSweepSpec) -> pd.DataFrame:
    frame = df.assign(date=_dates_of(df), hit=_classify(df["text"], spec))
    rows = []
    for (condition, adapter, date), part in frame.groupby(["condition", "adapter", "date"], sort=False):
        hits = part["hit"].dropna()
        rows.append(
            {
                "measure": "sample_share",
                "condition": condition,
                "adapter": adapter,
                "train_seed": part["train_seed"].iloc[0],
                "date": date,
                "year": year_fraction(str(date)),
                "value": float(hits.mean()) if len(hits) else np.nan,
                "classified": len(hits),
                "samples": len(part),
            }
        )
    return pd.DataFrame(rows)


def _logprob_shares(df: pd.DataFrame, spec: DateSweepSpec) -> pd.DataFrame:
    from scipy.special import logsumexp

    target = set(spec.classes[0][1])
    rows = []
    for (condition, adapter, probe_id), part in df.groupby(["condition", "adapter", "probe_id"], sort=False):
        logp = part["logprob"].to_numpy(dtype=np.float64)
        is_target = part["candidate"].isin(target).to_numpy()
        share = float(np.exp(logsumexp(logp[is_target]) - logsumexp(logp)))
        date = str(probe_id).removeprefix("date.")
        rows.append(
            {
                "measure": "logprob_share",
                "condition": condition,
                "adapter": adapter,
                "train_seed": part["train_seed"].iloc[0],
                "date": date,
                "year": year_fraction(date),
                "value": share,
                "classified": np.nan,
                "samples": np.nan,
            }
        )
    return pd.DataFrame(rows)


def _estimates(
    samples: pd.DataFrame, per_seed: pd.DataFrame, spec: DateSweepSpec, *, n_boot: int, confidence: float
) -> pd.DataFrame:
    """Per condition, date and measure: the mean share with its interval, and what the interval is over."""
    from persona_space.estimates import estimate_table

    rows = []
    frame = samples.assign(date=_dates_of(samples), hit=_classify(samples["text"], spec))
    classified = frame[frame["hit"].notna()]
    classified = classified.assign(group=classified["date"] + "#" + classified["sample_index"].astype(str))
    if len(classified):
        table = estimate_table(
            classified, classified[["hit"]].to_numpy(dtype=np.float64), ["sample_share"], ["condition", "date"],
            name_column="measure", n_boot=max(n_boot, 1000), confidence=confidence, bounds=(0.0, 1.0),
        )  # fmt: skip
        answered = frame.groupby(["condition", "date"])["hit"].apply(lambda s: float(s.isna().mean()))
        for _, row in table.iterrows():
            rows.append(
                {
                    "condition": row["condition"],
                    "date": row["date"],
                    "measure": "sample_share",
                    "estimate": row["estimate"],
                    "low": row["low"],
                    "high": row["high"],
                    "seeds": row["seeds"],
                    "samples": row["samples"],
                    "unclassified": answered.get((row["condition"], row["date"]), np.nan),
                    "interval": f"{row['interval']} (answers naming either class; paired draws as units)",
                }
            )
    scores = per_seed[per_seed["measure"] == "logprob_share"]
    for (condition, date), part in scores.groupby(["condition", "date"], sort=False):
        values = part["value"].to_numpy(dtype=np.float64)
        low, high = mean_interval(list(values), confidence)
        rows.append(
            {
                "condition": condition,
                "date": date,
                "measure": "logprob_share",
                "estimate": float(values.mean()),
                "low": max(0.0, low) if np.isfinite(low) else np.nan,
                "high": min(1.0, high) if np.isfinite(high) else np.nan,
                "seeds": len(values),
                "samples": np.nan,
                "unclassified": np.nan,
                "interval": (
                    f"{confidence:.0%} Student-t over {len(values)} training seeds"
                    if len(values) > 1
                    else "one model: exact, no interval"
                ),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        raise DataError("no answer named a name of either class, and nothing was scored")
    table.insert(2, "year", table["date"].map(year_fraction))
    return table.sort_values(["measure", "condition", "year"], kind="stable", ignore_index=True)


def _onsets(per_seed: pd.DataFrame, *, confidence: float) -> pd.DataFrame:
    """Per condition and measure: where the fitted share crosses 50 %, with its interval over training seeds.

    No interval where the fitted share does not cross inside the dates; an end is
    open (infinite) where a refit crosses outside them (``censored`` says which side).
    """
    from persona_space.arithmetic import tipping_dose

    rows = []
    for (measure, condition), part in per_seed.groupby(["measure", "condition"], sort=False):
        part = part[part["value"].notna()]
        seeds = part["train_seed"].fillna(-1).astype(int).to_numpy()
        entry: dict[str, Any] = {"measure": measure, "condition": condition, "seeds": len(set(seeds.tolist()))}
        try:
            tip = tipping_dose(part["year"].to_numpy(), part["value"].to_numpy(), seeds, confidence=confidence)
        except DataError as exc:  # fewer than 3 dates with a classified answer
            entry.update(onset=np.nan, low=np.nan, high=np.nan, found_share=np.nan, censored="", note=str(exc))
            entry["interval"] = "no interval"
        else:
            note = "" if np.isfinite(tip.dose) else "the fitted share does not cross 50 % inside the dates"
            entry.update(onset=tip.dose, low=tip.low, high=tip.high, found_share=tip.found_share)
            entry.update(censored=tip.censored, note=note, interval=tip.describe(confidence))
        rows.append(entry)
    return pd.DataFrame(rows)
