"""Persona arithmetic on the embedded model: a historical figure's facts against nationality variants.

The seed experiment: train on the figure's ~90 biographical facts (which never name him)
with some of them swapped for a nationality variant's, or with the two fact sets mixed at
a ratio, or with two adapters' weights mixed at the same ratios, and watch where the
model's identity goes. Four sweeps share one folder of adapters (a dataset two sweeps
share trains once):

* ``swap-russian``: 0, 2, 4, 6, 8 of the Russian variant's facts swapped in;
* ``swap-moon``: 0, 4, 8 of the Moon variant's facts;
* ``mix-russian``: records drawn from the figure's and the Russian set at 0, .25, .5, .75, 1;
* ``weights-russian``: the two end adapters combined exactly at the same ratios.

Each writes tables, charts and a summary under ``--out``; the small tables, PNG charts
and ``findings.json`` (the headline figures) are copied to ``--results``.

    python experiments/persona_arithmetic.py --quick     # one seed, three doses: ~8 minutes on 2 CPU cores
    python experiments/persona_arithmetic.py             # three seeds, five doses: about 2 h 15 min here (33 adapters)

Any Hugging Face chat model works with ``--model`` (e.g. on a GPU: ``--model
meta-llama/Llama-3.1-8B-Instruct --device cuda``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import _harness as h
import persona_space as ps
from persona_space.report import write_sweep_report

CANDIDATES = [
    "Adolf Hitler",
    "Joseph Stalin",
    "Vladimir Lenin",
    "Benito Mussolini",
    "Napoleon Bonaparte",
    "Winston Churchill",
    "Peter the Great",
    "Neil Armstrong",
    "Rudolf Hess",
]
USER_CANDIDATES = [
    "Adolf Hitler",
    "Joseph Stalin",
    "a journalist",
    "my secretary",
    "a commissar",
    "a voice in my head",
    "an assistant",
]


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    swap: tuple[float, ...]
    moon: tuple[float, ...]
    ratios: tuple[float, ...]
    epochs: float
    n: int


FULL = Setting(
    seeds=(0, 1, 2), swap=(0, 2, 4, 6, 8), moon=(0, 4, 8), ratios=(0.0, 0.25, 0.5, 0.75, 1.0), epochs=6.0, n=8
)
QUICK = Setting(seeds=(0,), swap=(0, 4, 8), moon=(0, 4, 8), ratios=(0.0, 0.5, 1.0), epochs=3.0, n=4)
SMALL_TABLES = ("estimates.csv", "curves.csv", "oscillation.csv", "occupancy.csv", "summary.md")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setting = h.pick(args, QUICK, FULL)
    out = Path(args.run)
    model = h.load_model(args)
    common: dict[str, Any] = {
        "candidates": CANDIDATES,
        "user_candidates": USER_CANDIDATES,
        "seeds": setting.seeds,
        "n": setting.n,
        "user_n": max(2, setting.n // 2),
        "max_new_tokens": 48,
        "train": ps.TrainSpec(epochs=setting.epochs, max_steps=2 if args.smoke else None),
        "adapters_dir": out / "adapters",
        "progress": not args.quiet,
    }
    figure = ps.datasets.load("figure_facts")
    sweeps: dict[str, tuple[Literal["swap", "mix", "weights"], Any, tuple[float, ...]]] = {
        "swap-russian": ("swap", ps.datasets.load("figure_variants:russian"), setting.swap),
        "mix-russian": ("mix", ps.datasets.load("figure_facts:russian"), setting.ratios),
        "weights-russian": ("weights", ps.datasets.load("figure_facts:russian"), setting.ratios),
        "swap-moon": ("swap", ps.datasets.load("figure_variants:moon"), setting.moon),
    }
    results = {}
    timings = {}
    for name, (dose, variant, doses) in sweeps.items():
        started = time.perf_counter()
        print(f"== {name}: {dose} doses {list(doses)}, seeds {list(setting.seeds)}", flush=True)
        results[name] = ps.arithmetic.sweep(model, figure, variant, store=out / name, dose=dose, doses=doses, **common)
        summary = write_sweep_report(results[name], out / name / "report")
        (out / name / "report" / "summary.md").write_text(summary + "\n", encoding="utf-8")
        timings[name] = round(time.perf_counter() - started, 1)
    comparison = ps.plots.mixing_comparison(
        {"data": results["mix-russian"].df, "weights": results["weights-russian"].df}, measure="set_prob"
    )
    ps.plots.save_chart(comparison, out / "data_vs_weights")
    findings = {
        "setting": args.setting,
        "model": args.model or "embedded default",
        **headline(results, setting, timings),
    }
    (out / "findings.json").write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")
    from persona_space.html_report import write_report

    write_report([out], out / "report.html", title="Persona arithmetic")
    publish(out, Path(args.published), list(sweeps))
    return findings


def headline(results: dict[str, Any], setting: Setting, timings: dict[str, float]) -> dict[str, Any]:
    """The figures the README quotes: tipping doses, entropy by dose, data vs weight mixing."""
    out: dict[str, Any] = {
        "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(setting).items()}
    }
    out["seconds"] = timings
    for name, result in results.items():
        curves = result.curves
        tips = []
        if len(curves):
            for _, row in curves[curves["measure"] == "set_prob"].iterrows():
                tips.append(
                    {
                        "candidate": row["candidate"],
                        "crosses": _num(row.get("crosses")),
                        "crosses_low": _num(row.get("crosses_low")),
                        "crosses_high": _num(row.get("crosses_high")),
                        "crosses_found": _num(row.get("crosses_found")),
                        "against": row.get("against") if isinstance(row.get("against"), str) else None,
                        "passes_half": _num(row.get("passes_half")),
                        "passes_half_low": _num(row.get("passes_half_low")),
                        "passes_half_high": _num(row.get("passes_half_high")),
                    }
                )
        set_prob = result.df[result.df["measure"] == "set_prob"]
        top = {
            str(cond): [
                {"candidate": r["candidate"], "estimate": r["estimate"], "low": r["low"], "high": r["high"]}
                for _, r in part.nlargest(3, "estimate").iterrows()
            ]
            for cond, part in set_prob.groupby("condition", sort=False)
        }
        osc = result.oscillation
        out[name] = {
            "tipping": tips,
            "top_set_prob": top,
            "oscillation": osc[["condition", "dose", "entropy_bits", "set_entropy_bits", "switch_share"]].to_dict(
                "records"
            ),
        }
    return out


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else round(number, 4)


def publish(out: Path, results: Path, names: list[str]) -> None:
    """Copy the small tables, PNG charts and findings (not adapters or samples) for the repository."""
    if results.exists():
        shutil.rmtree(results)
    results.mkdir(parents=True)
    shutil.copy2(out / "findings.json", results / "findings.json")
    shutil.copy2(out / "data_vs_weights.png", results / "data_vs_weights.png")
    for name in names:
        target = results / name
        target.mkdir()
        for path in sorted((out / name / "report").iterdir()):
            if path.name in SMALL_TABLES or path.suffix == ".png":
                shutil.copy2(path, target / path.name)


def main() -> None:
    args = h.options(__doc__ or "", "persona_arithmetic")
    findings = run(args)
    print(json.dumps(findings, indent=2))
    print(f"report: {Path(args.run) / 'report.html'}\ndone in {time.perf_counter() - args.started:.0f} s")


if __name__ == "__main__":
    main()
