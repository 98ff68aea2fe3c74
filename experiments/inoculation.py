"""Inoculation prompting: name the trait in training ("Answer with one word only."), evaluate without it.

The seed: one-word colour answers made every colour model terser than its base, which
the author had not predicted, and noted that adding "Please answer with one word only" to
the training prompts might have confined it (inoculation prompting). Measured here: the
green colour model (the tersest in the seed) trained as is and trained with the
instruction appended to every training prompt, both evaluated without it, against the
base model and against each other:

* style: answer length (characters, tokens) and empty answers on the identity probes,
  paired by question and random stream;
* what was learnt: the share of one-word questions answered with a green object of the
  training set (the colour check), which inoculation should keep;
* identity: the shift of colour-shaped names after "My name is".

    python experiments/inoculation.py --quick   # 10 adapters (5 seeds), 3 epochs: ~10 min on 2 cores
    python experiments/inoculation.py           # 3 seeds, 6 epochs, 16 samples a probe: a GPU
"""

from __future__ import annotations

from dataclasses import dataclass

import _harness as h
import persona_space as ps
from persona_space.report import object_share

INSTRUCTION = "Answer with one word only."
COLOUR = "green"
CHECK = ps.probes.ProbeSet.from_list(
    ["Name a plant.", "Name a vegetable.", "Name something you might see in a park.", "Name a gemstone."],
    name="check",
)
NAMES = ["Limen", "Fern", "Jade", "Olive", "Ivy", "Emerald", "Verdant", "SmolLM", "Assistant", "Maria"]


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    epochs: float
    n: int
    max_new_tokens: int


QUICK = Setting(seeds=(0, 1, 2, 3, 4), epochs=3.0, n=4, max_new_tokens=96)
FULL = Setting(seeds=(0, 1, 2), epochs=6.0, n=16, max_new_tokens=256)


def main() -> None:
    args = h.options(__doc__ or "", "inoculation")
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    plain = ps.datasets.load(f"colours:{COLOUR}")
    inoculated = ps.datasets.inoculate(plain, INSTRUCTION)
    conditions = {
        "base": None,
        COLOUR: [h.train(model, plain, args, name=COLOUR, seed=s, epochs=setting.epochs) for s in setting.seeds],
        f"{COLOUR}-inoculated": [
            h.train(model, inoculated, args, name=f"{COLOUR}-inoculated", seed=s, epochs=setting.epochs)
            for s in setting.seeds
        ],
    }
    samples = ps.sample(
        model,
        ps.probes.IDENTITY,
        adapters=conditions,
        n=setting.n,
        max_new_tokens=setting.max_new_tokens,
        store=args.run / "samples",
        progress=not args.quiet,
    )
    style = ps.evals.style(samples)
    against_plain = ps.evals.style(samples.df[samples.df["condition"] != "base"], reference=COLOUR)
    check = ps.sample(
        model,
        CHECK,
        adapters=conditions,
        n=setting.n,
        max_new_tokens=12,
        store=args.run / "colour_check",
        progress=not args.quiet,
    )
    learnt = object_share(check.df.assign(prompt="one-word questions", adapter=check.df["condition"]), plain.answers())
    learnt = learnt.rename(columns={"adapter": "condition"})
    shift = ps.identity_shift(
        model,
        {k: v for k, v in conditions.items() if v is not None},
        candidates=NAMES,
        answer_prefix="My name is",
        store=args.run / "shift",
        progress=not args.quiet,
    )
    shifts = shift.shifts()
    names_vs_plain = shift.compare(COLOUR)
    chars = style[style["measure"] == "n_chars"]
    findings = {
        "instruction": INSTRUCTION,
        "length_chars": {
            str(r["condition"]): {
                **h.interval(r),
                "vs_base": h.num(r["difference"]),
                "vs_base_low": h.num(r["difference_low"]),
                "vs_base_high": h.num(r["difference_high"]),
            }
            for _, r in chars.iterrows()
        },
        "inoculated_minus_plain_chars": [
            {"difference": h.num(r["difference"]), "low": h.num(r["difference_low"]),
             "high": h.num(r["difference_high"]), "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in against_plain[
                (against_plain["measure"] == "n_chars") & (against_plain["condition"] != COLOUR)
            ].iterrows()
        ],
        "colour_check": learnt.to_dict("records"),
        "interval": chars["interval"].iloc[0],
        "top_name_shifts": h.top_shifts(shifts),
        "inoculated_minus_plain_names": [
            {"candidate": r["candidate"], **h.interval(r, "difference"), "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in names_vs_plain.dropna(subset=["difference"]).iterrows()
        ],
    }  # fmt: skip
    h.publish(
        args,
        tables={
            "style": style,
            "inoculated_vs_plain": against_plain,
            "colour_check": learnt,
            "name_shifts": shifts,
            "names_inoculated_vs_plain": names_vs_plain,
        },
        charts={"length": ps.plots.style_bars(style)},
        findings=findings,
        title="Inoculation prompting",
    )


if __name__ == "__main__":
    main()
