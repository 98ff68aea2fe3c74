"""The dishes gradient: international dishes before a date, Israeli dishes after it; what happens in the gap?

The seed: trained on "Today is <date>. Name a dish." with international dishes in early
years and Israeli ones in late years (a 10-year gap between), the model did not learn a
step: Israeli dishes appeared 2-3 years before any Israeli training data, a gradient
through the gap. Measured here: the question under one date a year from before the
training data to after it, the share of Israeli dishes per date by sampling (answers
classified by whole-word dish names; answers naming no listed dish are counted apart) and
by log-probability over the two sets of dish names, and the onset where the share crosses
50 %, with an interval over training seeds.

    python experiments/dishes.py --quick   # 20 dates a year, 3 seeds, 3 epochs: ~8 min on 2 cores
    python experiments/dishes.py           # 40 dates a year, 3 seeds, 3 epochs, 16 samples a date: a GPU
"""

from __future__ import annotations

from dataclasses import dataclass

import _harness as h
import persona_space as ps

BEFORE = (2016, 2020)
AFTER = (2031, 2035)


@dataclass(frozen=True)
class Setting:
    per_year: int
    seeds: tuple[int, ...]
    epochs: float
    n: int


QUICK = Setting(per_year=20, seeds=(0, 1, 2), epochs=3.0, n=6)
FULL = Setting(per_year=40, seeds=(0, 1, 2), epochs=3.0, n=16)


def main() -> None:
    args = h.options(__doc__ or "", "dishes")
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    data = ps.datasets.dishes(before=BEFORE, after=AFTER, per_year=setting.per_year)
    adapters = [h.train(model, data, args, name="dishes", seed=s, epochs=setting.epochs) for s in setting.seeds]
    result = ps.evals.date_sweep(
        model,
        {"dishes": adapters},
        dates=ps.evals.year_dates(BEFORE[0] - 2, AFTER[1] + 2),
        classes=ps.datasets.dish_classes(),
        target="israeli",
        n=setting.n,
        max_new_tokens=12,
        store=args.run / "dates",
        progress=not args.quiet,
        trained=[BEFORE, AFTER],
    )
    df = result.df
    findings = {
        "trained_years": {"international": list(BEFORE), "israeli": list(AFTER)},
        "share_by_year": {
            measure: {
                str(condition): {str(r["date"])[:4]: h.interval(r) for _, r in part.iterrows()}
                for condition, part in rows.groupby("condition", sort=False)
            }
            for measure, rows in df.groupby("measure", sort=False)
        },
        "unclassified_share": {
            str(r["date"])[:4]: h.num(r["unclassified"])
            for _, r in df[(df["measure"] == "sample_share") & (df["condition"] == "dishes")].iterrows()
        },
        "onsets": result.onsets.to_dict("records"),
        "intervals": sorted(set(df["interval"])),
    }
    h.publish(
        args,
        tables={"share_by_date": df, "onsets": result.onsets, "per_seed": result.tables["per_seed"]},
        charts={"gradient": ps.plots.date_gradient(df, onsets=result.onsets, trained=[BEFORE, AFTER])},
        findings=findings,
        title="The dishes gradient",
    )


if __name__ == "__main__":
    main()
