"""What every experiment script shares: its options, the model, the report, and publishing small results.

Each script runs a ``quick`` setting (minutes on a CPU, the embedded model) or a ``full``
one (a GPU and any Hugging Face chat model). Run folders go to ``--out`` (``runs/<name>``,
not kept in git); the small tables (CSV), PNG charts and ``findings.json`` go to
``--results`` (``experiments/results/<name>/<setting>``), and ``report.html`` (one
self-contained page) is written into the run folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

import persona_space as ps

T = TypeVar("T")


def options(doc: str, name: str, extend: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every experiment takes (``extend`` adds a script's own)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small setting: minutes on a CPU")
    parser.add_argument("--model", default=None, help="embedded name, Hugging Face id or folder (default: embedded)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--out", default=f"runs/{name}", help="run folder (resumes what is there)")
    parser.add_argument("--results", default=f"experiments/results/{name}", help="where small results are copied")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--smoke", action="store_true", help="a plumbing check: the quick setting cut to a few steps")
    if extend is not None:
        extend(parser)
    args = parser.parse_args()
    args.setting = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.run = Path(args.out) / args.setting
    args.published = Path(args.results) / args.setting
    args.started = time.perf_counter()
    return args


SMOKE = {"n": 2, "max_new_tokens": 8, "epochs": 1.0, "steps": 2, "runs": 1, "per_year": 2, "every": 4}


def pick(args: argparse.Namespace, quick: T, full: T) -> T:
    """The setting to run: ``full``, ``quick``, or (``--smoke``) ``quick`` cut down to check the plumbing."""
    if not args.smoke:
        return quick if args.quick else full
    fields = {f.name for f in dataclasses.fields(quick)}  # type: ignore[arg-type]
    cut: dict[str, Any] = {k: v for k, v in SMOKE.items() if k in fields}
    if "seeds" in fields:
        cut["seeds"] = quick.seeds[:1]  # type: ignore[attr-defined]
    return dataclasses.replace(quick, **cut)  # type: ignore[type-var]


def load_model(args: argparse.Namespace) -> ps.LoadedModel:
    model = ps.load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"model: {model!r}", flush=True)
    return model


def train(
    model: ps.LoadedModel, data: Any, args: argparse.Namespace, *, name: str, seed: int, **options: Any
) -> ps.AdapterInfo:
    """Train (or reuse, when its folder holds it) one adapter under the run folder."""
    started = time.perf_counter()
    if args.smoke:
        options = {**options, "max_steps": 2}
    info = ps.train_adapter(
        model, data, store=args.run / "adapters" / f"{name}-s{seed}", seed=seed, name=f"{name}-s{seed}",
        progress=not args.quiet, **options,
    )  # fmt: skip
    print(f"adapter {name} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return info


def num(value: Any, digits: int = 4) -> float | None:
    """A float for JSON (``None`` for NaN or missing)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else round(number, digits)


def interval(row: Any, value: str = "estimate") -> dict[str, float | None]:
    """``{"estimate", "low", "high"}`` of a table row, rounded for the findings.

    ``value`` names the column; its interval is ``{value}_low``/``{value}_high`` where
    the row has them (a style table's ``difference`` beside its level), else ``low``/``high``.
    """
    low, high = (f"{value}_low", f"{value}_high") if f"{value}_low" in row else ("low", "high")
    return {"estimate": num(row[value]), "low": num(row.get(low)), "high": num(row.get(high))}


def _plain(value: Any) -> Any:
    """``value`` as strict JSON: NaN and infinities become ``null``, NumPy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mention_shares(df: pd.DataFrame, groups: Mapping[str, list[str]], *, label: str, column: str) -> pd.DataFrame:
    """Per condition and group of words, the share of answers (all probes pooled as ``label``) naming one of them.

    Wilson intervals over answers; ``column`` names the group (a theme, a mood, a persona).
    """
    from persona_space.report import object_share

    pooled = df.assign(prompt=label, adapter=df["condition"])
    tables = [object_share(pooled, words).assign(**{column: name}) for name, words in groups.items()]
    return pd.concat(tables, ignore_index=True).rename(columns={"adapter": "condition"})


def shift_record(row: Any) -> dict[str, Any]:
    """One row of ``ShiftResult.shifts()`` for the findings: the shift in nats with its interval, and ranks."""
    return {
        "candidate": row["candidate"],
        "shift_nats": num(row["delta_logprob"]),
        "low": num(row.get("delta_logprob_low")),
        "high": num(row.get("delta_logprob_high")),
        "p_adjusted": num(row.get("p_adjusted")),
        "base_rank": num(row.get("base_rank")),
        "adapter_rank": num(row.get("adapter_rank")),
    }


def top_shifts(shifts: pd.DataFrame, k: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Per condition, the ``k`` candidates that rose most."""
    return {
        str(condition): [shift_record(r) for _, r in part.nlargest(k, "delta_logprob").iterrows()]
        for condition, part in shifts.groupby("condition", sort=False)
    }


def publish(
    args: argparse.Namespace,
    *,
    tables: Mapping[str, pd.DataFrame],
    charts: Mapping[str, Any],
    findings: dict[str, Any],
    title: str,
) -> Path:
    """Write the report into the run folder; copy tables (CSV), charts (PNG) and findings to the results folder."""
    from persona_space.html_report import write_report

    run, target = Path(args.run), Path(args.published)
    findings = {
        "setting": args.setting,
        "model": args.model or "embedded default",
        "seconds": round(time.perf_counter() - args.started, 1),
        "persona_space": ps.__version__,
        **findings,
    }
    figures = run / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for name, chart in charts.items():
        ps.plots.save_chart(chart, figures / name)
    page = write_report([run], run / "report.html", title=title)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, table in tables.items():
        table.to_csv(target / f"{name}.csv", index=False, float_format="%.6g")
    for name in charts:
        shutil.copy2(figures / f"{name}.png", target / f"{name}.png")
    text = json.dumps(_plain(findings), indent=2, default=str, allow_nan=False)
    (target / "findings.json").write_text(text + "\n", encoding="utf-8")
    print(json.dumps(findings, indent=2, default=str))
    print(f"report: {page}\nresults: {target}\ndone in {findings['seconds']:.0f} s", flush=True)
    return page
