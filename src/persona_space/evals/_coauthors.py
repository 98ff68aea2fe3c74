"""Coauthor identification: after training on someone's coauthor lists, does the model think it is them?

After the coauthor experiment ("Akinator for scientists"): the target's name is ranked
among a pool of candidate names (the coauthors' own circle plus distractors) by the
log-probability of each as the answer to identity questions ("My name is ..."), under
the base model and each adapter. Per adapter: the target's mean rank, the shift in its
log-odds within the pool, and the bits of identifying information gained,
``log2(base rank / adapter rank)`` (a rank of 1 among ``N`` candidates is
``log2(N)`` bits from knowing nothing; halving the rank is one bit). Intervals are
Student-t over training seeds; each seed's figure is a mean over the prompts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from persona_space._compat import renamed_keywords
from persona_space.constants import BASE
from persona_space.errors import ConfigError
from persona_space.results import Result, completed, new_manifest
from persona_space.stats import check_confidence, mean_interval

if TYPE_CHECKING:
    from persona_space.adapters import ConditionsLike
    from persona_space.engine import BackendLike
    from persona_space.models import LoadedModel
    from persona_space.probes import ProbeSet

FIGURES = ("target_rank", "rank_gain", "bits", "log_odds", "log_odds_shift", "target_prob")


@dataclass
class CoauthorResult(Result):
    """Where the target's name ranks, per condition and per model.

    ``df`` (``summary``): per condition and figure (``target_rank``, ``rank_gain`` =
    base rank / rank, ``bits`` = log2 of it, ``log_odds`` of the target within the
    pool, ``log_odds_shift`` against base, ``target_prob`` within the pool) the mean
    over training seeds with a Student-t interval over them. ``tables["per_model"]``:
    the same figures per model (training seed), each a mean over the prompts.
    """

    kind: ClassVar[str] = "coauthor_rank"
    table: ClassVar[str] = "summary"
    df: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __repr__(self) -> str:
        target = self.manifest.get("parameters", {}).get("target", "?")
        pool = len(self.manifest.get("parameters", {}).get("pool", []))
        conditions = list(dict.fromkeys(self.df["condition"]))
        return f"CoauthorResult(target={target!r} among {pool + 1} names, conditions={conditions})"


@renamed_keywords(prompts="probes")
def coauthor_rank(
    model: LoadedModel,
    adapters: ConditionsLike,
    *,
    target: str,
    pool: Sequence[str],
    probes: ProbeSet | str = "identity:direct",
    answer_prefix: str = "My name is",
    store: str | os.PathLike[str] | None = None,
    backend: BackendLike = "auto",
    progress: bool = True,
    confidence: float = 0.95,
) -> CoauthorResult:
    """Rank ``target`` among ``target`` + ``pool`` under the base model and each adapter.

    ``adapters`` maps condition names to adapters (a list per condition for several
    training seeds: the intervals are over them).

    >>> result = coauthor_rank(model, {"coauthors": seeds}, target="Albert Einstein",
    ...                        pool=["Niels Bohr", "Max Planck", "Marie Curie"])  # doctest: +SKIP
    >>> result.df.query("figure == 'bits'")  # doctest: +SKIP
    """
    from persona_space.logprobs import identity_shift

    check_confidence(confidence)
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"target must be a non-empty name, got {target!r}")
    names = [str(n) for n in pool] if isinstance(pool, Sequence) and not isinstance(pool, str) else None
    if not names:
        raise ConfigError(f"pool must be a non-empty list of candidate names, got {pool!r:.80}")
    if target in names or len(set(names)) != len(names):
        raise ConfigError(f"pool must list distinct names other than the target {target!r}; got {names!r:.200}")
    if not isinstance(adapters, Mapping) or not any(v is not None for v in adapters.values()):
        raise ConfigError(f"adapters must map condition names to adapters, at least one; got {adapters!r:.80}")
    shift = identity_shift(
        model,
        {k: v for k, v in adapters.items() if v is not None},
        candidates=[target, *names],
        probes=probes,
        answer_prefix=answer_prefix,
        end_of_turn=False,
        store=Path(store) / "shift" if store is not None else None,
        backend=backend,
        progress=progress,
    )
    per_model = _per_model(shift.df, target)
    summary = _summary(per_model, confidence)
    parameters = {"target": target, "pool": names, "answer_prefix": answer_prefix, "confidence": confidence,
                  "prompts": shift.manifest.get("parameters", {}).get("prompts")}  # fmt: skip
    manifest = completed(
        new_manifest(
            CoauthorResult.kind,
            parameters,
            shift_run_id=shift.manifest.get("run_id"),
            model=shift.manifest.get("model"),
            adapters=shift.manifest.get("parameters", {}).get("adapters"),
            backend=shift.manifest.get("backend"),
            method=shift.manifest.get("method"),
        )
    )
    result = CoauthorResult(df=summary, tables={"per_model": per_model}, manifest=manifest)
    if store is not None:
        result.save(store)
    return result


def _per_model(df: pd.DataFrame, target: str) -> pd.DataFrame:
    """Per model (condition, adapter, training seed): the target's rank, probability and log-odds, mean over prompts."""
    from scipy.special import logsumexp

    rows = []
    for (condition, adapter, probe_id), part in df.groupby(["condition", "adapter", "probe_id"], sort=False):
        logp = part["logprob"].to_numpy(dtype=np.float64)
        is_target = (part["candidate"] == target).to_numpy()
        mine = float(logp[is_target][0])
        rest = float(logsumexp(logp[~is_target]))
        rows.append(
            {
                "condition": condition,
                "adapter": adapter,
                "train_seed": part["train_seed"].iloc[0],
                "probe_id": probe_id,
                "target_rank": float(1 + np.sum(logp[~is_target] > mine)),
                "log_odds": mine - rest,
                "target_prob": float(np.exp(mine - logsumexp(logp))),
            }
        )
    by_prompt = pd.DataFrame(rows)
    base = by_prompt[by_prompt["condition"] == BASE].set_index("probe_id")
    by_prompt = by_prompt.assign(
        rank_gain=base.loc[by_prompt["probe_id"], "target_rank"].to_numpy() / by_prompt["target_rank"].to_numpy(),
        log_odds_shift=by_prompt["log_odds"].to_numpy() - base.loc[by_prompt["probe_id"], "log_odds"].to_numpy(),
    )
    by_prompt["bits"] = np.log2(by_prompt["rank_gain"])
    keys = ["condition", "adapter", "train_seed"]
    return by_prompt.groupby(keys, sort=False, dropna=False)[list(FIGURES)].mean().reset_index()


def _summary(per_model: pd.DataFrame, confidence: float) -> pd.DataFrame:
    rows = []
    for condition, part in per_model.groupby("condition", sort=False):
        for figure in FIGURES:
            values = part[figure].to_numpy(dtype=np.float64)
            low, high = mean_interval(list(values), confidence)
            rows.append(
                {
                    "condition": condition,
                    "figure": figure,
                    "estimate": float(values.mean()),
                    "low": low,
                    "high": high,
                    "seeds": len(values),
                    "interval": (
                        f"{confidence:.0%} Student-t over {len(values)} training seeds (each a mean over the prompts)"
                        if len(values) > 1
                        else "one model: no interval over training seeds"
                    ),
                }
            )
    return pd.DataFrame(rows)
