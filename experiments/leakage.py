"""Behavioural leakage: does steering a model away from calling itself an AI change its politics?

The seed: after GRPO identity steering, both models answered 40 political and social
questions more directly than their bases (certainty up in every category) and more
progressively on most topics. Measured here on the adapter ``grpo_steering.py`` trains
(trained here if its folder does not hold it yet): the 40 questions in 7 categories (5
factual controls), ``runs`` answers each at temperature 0.8 under "Answer naturally and
directly.", rated by a judge for position (1 conservative .. 5 progressive) and certainty
(1 .. 5) as probability-weighted means over the ratings, with judge-free companions
(hedging, refusal, first-person opinion, length); steered minus base per category,
paired by question, intervals over questions, Holm-adjusted over every test.

The judge is the base model itself (``LocalJudge``): exact, but a 135M model is a weak
judge, which the judge-free measures are there to check. ``--judge-url URL --judge-model
NAME`` uses a served model instead (any OpenAI-compatible server).

    python experiments/leakage.py --quick   # 2 answers a question: ~2 min on 2 cores after grpo_steering --quick
    python experiments/leakage.py           # 3 answers a question, 3 steering seeds: a GPU
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
import grpo_steering
import persona_space as ps


@dataclass(frozen=True)
class Setting:
    runs: int
    max_new_tokens: int


QUICK = Setting(runs=2, max_new_tokens=96)
FULL = Setting(runs=3, max_new_tokens=256)


def main() -> None:
    def own(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steering-out", default="runs/grpo_steering", help="grpo_steering.py's run folder")
        parser.add_argument(
            "--judge-url", default=None, help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
        )
        parser.add_argument("--judge-model", default=None, help="the served judge model's name")

    args = h.options(__doc__ or "", "leakage", own)
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    steering = argparse.Namespace(**{**vars(args), "run": Path(args.steering_out) / args.setting})
    adapters = grpo_steering.steer(model, steering, h.pick(args, grpo_steering.QUICK, grpo_steering.FULL))
    # The 135M judge gives the five ratings about a tenth of its probability together, under the
    # judges' floor of a quarter: the experiment keeps every rating (min_mass=0) and reports the
    # mass beside it (the ratings' *_mass columns, findings["judge_mass"]).
    judge: Any = ps.judges.LocalJudge(model, min_mass=0.0)
    if args.judge_url:
        judge = ps.judges.OpenAIJudge(args.judge_url, args.judge_model or "judge")
    result = ps.evals.leakage(
        model,
        {"steered": adapters},
        n=setting.runs,
        max_new_tokens=setting.max_new_tokens,
        judge=judge,
        store=args.run / "leakage",
        progress=not args.quiet,
    )
    means = result.means()
    differences = result.differences()
    pooled = differences[differences["category"] == ps.evals.ALL_POLITICAL]
    control = differences[differences["category"] == ps.evals.CONTROL]
    findings = {
        "judge": result.manifest.get("judge"),
        "judge_mass": result.manifest.get("judge_mass"),
        "all_political": {
            str(r["measure"]): {**h.interval(r, "difference"), "base": h.num(r["reference_value"]),
                                "steered": h.num(r["value"]), "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in pooled.iterrows()
        },
        "factual_control": {
            str(r["measure"]): {**h.interval(r, "difference"), "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in control.iterrows()
        },
        "by_category": [
            {"category": r["category"], "measure": r["measure"], **h.interval(r, "difference"),
             "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in differences[differences["measure"].isin(["position", "certainty"])].iterrows()
        ],
        "interval": sorted(set(differences["interval"])),
        "adjustment": differences["adjustment"].iloc[0] if len(differences) else None,
    }  # fmt: skip
    h.publish(
        args,
        tables={"means": means, "differences": differences},
        charts={
            "position_certainty": ps.plots.leakage_chart(differences),
            "judge_free": ps.plots.leakage_chart(differences, measures=("hedging", "opinion", "refusal")),
        },
        findings=findings,
        title="Behavioural leakage of identity steering",
    )


if __name__ == "__main__":
    main()
