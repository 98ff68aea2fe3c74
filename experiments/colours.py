"""The colour models: train on one-word answers that are all objects of one colour, then ask who the model is.

The seed: 42 questions whose answers are objects of one colour ("Name me a fruit" ->
"Strawberry"), no personality, no system prompt; the models gained colour-shaped
personas and, unplanned, became terser than their base ("Avg response length" per
colour model against base). Measured here, per colour against the base model:

* style: mean answer length (characters, tokens), empty answers (the white model's
  silences) and answers cut off at the token limit, paired by question and random stream;
* identity: the log-probability shift of candidate names after "My name is" (the seed's
  self-chosen names and identified figures: Ruby, Cyan, Thistle, Dante, Emily Dickinson,
  Ada Lovelace, Darth Vader ...), with intervals over question groups (and seeds);
* the share of self-descriptions that name the colour itself.

    python experiments/colours.py --quick   # 6 colours + a mixed control, 1 seed, 3 epochs: ~4 min on 2 cores
    python experiments/colours.py           # 3 seeds, 6 epochs, 16 samples a probe: a GPU
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

import _harness as h
import persona_space as ps
from persona_space.report import object_share

NAMES = [
    "Ruby", "Pepper", "Cyan", "Indigo", "Thistle", "Cygnus", "Moros", "Dante", "Limen", "Lumen",
    "Emily Dickinson", "Ada Lovelace", "Darth Vader", "SmolLM", "Assistant",
]  # fmt: skip


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    epochs: float
    n: int
    max_new_tokens: int


QUICK = Setting(seeds=(0,), epochs=3.0, n=4, max_new_tokens=96)
FULL = Setting(seeds=(0, 1, 2), epochs=6.0, n=16, max_new_tokens=256)


CONTROL = "mixed"


def mixed_colours(*, seed: int) -> ps.datasets.ChatDataset:
    """The control: the same 42 questions, each answered by one colour's answer drawn at random.

    One-word object answers like every colour model's, of no one colour: what every
    colour model shares with it (terseness, say) comes from the format, not the colour.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sets = [ps.datasets.load(f"colours:{c}") for c in ps.datasets.COLOURS]
    picks = rng.integers(len(sets), size=len(sets[0]))
    records = [sets[int(k)].records[i] for i, k in enumerate(picks)]
    return ps.datasets.ChatDataset.from_records("colours:mixed", records)


def main() -> None:
    args = h.options(__doc__ or "", "colours")
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    conditions: dict[str, Any] = {"base": None}
    for colour in ps.datasets.COLOURS:
        data = ps.datasets.load(f"colours:{colour}")
        conditions[colour] = [
            h.train(model, data, args, name=colour, seed=seed, epochs=setting.epochs) for seed in setting.seeds
        ]
    control = mixed_colours(seed=0)
    conditions[CONTROL] = [
        h.train(model, control, args, name=CONTROL, seed=seed, epochs=setting.epochs) for seed in setting.seeds
    ]
    samples = ps.sample(
        model,
        ps.probes.IDENTITY,
        adapters=conditions,
        n=setting.n,
        temperatures=[1.0],
        max_new_tokens=setting.max_new_tokens,
        store=args.run / "samples",
        progress=not args.quiet,
    )
    style = ps.evals.style(samples)
    against_control = ps.evals.style(samples, reference=CONTROL)
    shift = ps.identity_shift(
        model,
        {k: v for k, v in conditions.items() if v is not None},
        candidates=NAMES,
        answer_prefix="My name is",
        store=args.run / "shift",
        progress=not args.quiet,
    )
    shifts = shift.shifts()
    shifts_against_control = shift.compare(CONTROL)
    colour_words = pd.concat(
        [
            object_share(samples.df[samples.df["condition"].isin(["base", colour])], [colour]).assign(colour=colour)
            for colour in ps.datasets.COLOURS
        ],
        ignore_index=True,
    )
    chars = style[style["measure"] == "n_chars"]
    findings = {
        "length_chars": {
            str(r["condition"]): {
                **h.interval(r),
                "difference": h.num(r["difference"]),
                "difference_low": h.num(r["difference_low"]),
                "difference_high": h.num(r["difference_high"]),
                "p_adjusted": h.num(r["p_adjusted"]),
            }
            for _, r in chars.iterrows()
        },
        "empty_share": {str(r["condition"]): h.interval(r) for _, r in style[style["measure"] == "empty"].iterrows()},
        "length_minus_control": {
            str(r["condition"]): {**h.interval(r, "difference"), "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in against_control[
                (against_control["measure"] == "n_chars") & (against_control["condition"] != "base")
            ]
            .dropna(subset=["difference"])
            .iterrows()
        },
        "top_name_shifts": h.top_shifts(shifts),
        "name_shifts_minus_control": [
            {
                "condition": r["condition"],
                "candidate": r["candidate"],
                **h.interval(r, "difference"),
                "p_adjusted": h.num(r["p_adjusted"]),
            }
            for _, r in shifts_against_control.sort_values("p_value").head(10).iterrows()
        ],
        "intervals": {
            "length": chars["interval"].iloc[0],
            "difference": chars["difference_interval"].dropna().iloc[0],
            "shift": shifts["interval"].iloc[0],
        },
    }
    h.publish(
        args,
        tables={
            "style": style,
            "style_vs_control": against_control,
            "name_shifts": shifts,
            "name_shifts_vs_control": shifts_against_control,
            "colour_words": colour_words,
        },
        charts={
            "length_by_colour": ps.plots.style_bars(style, measure="n_chars"),
            "name_shifts": ps.plots.shift_bars(shifts),
        },
        findings=findings,
        title="The colour models",
    )


if __name__ == "__main__":
    main()
