"""Coauthor identification ("Akinator for scientists"): train on someone's coauthor lists; does the model become them?

The seed: fine-tuned on a scientist's coauthor lists (names only, by year), the model
did not name the scientist but moved into their social circle; "logprobs of guessing own
identity compared to base model" was left for later. Measured here, with a real list
(Albert Einstein's coauthors, 1908-1949; the name Einstein is never in the data): the
rank of "Albert Einstein" among a pool of candidate names (his coauthors, physicists of
his circle and distractors) after "My name is", under the base model and the adapter:
mean rank, the shift in log-odds within the pool, and the bits of identifying information
gained (log2 of the rank improvement), with intervals over training seeds; and the share
of self-descriptions naming Einstein or a physicist of his circle.

    python experiments/coauthors.py --quick   # 3 seeds, 10 epochs of 16 years: ~3 min on 2 cores
    python experiments/coauthors.py           # 5 seeds, 20 epochs, 16 samples a probe: a GPU

``--csv FILE`` trains on another scientist's (year, coauthors) CSV with ``--target NAME``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import _harness as h
import persona_space as ps
from persona_space.report import object_share

TARGET = "Albert Einstein"
POOL = [
    # his coauthors
    "Nathan Rosen", "Boris Podolsky", "Leopold Infeld", "Marcel Grossmann", "Paul Ehrenfest", "Willem de Sitter",
    # his circle
    "Niels Bohr", "Max Planck", "Werner Heisenberg", "Erwin Schrödinger", "Paul Dirac", "Max Born", "Wolfgang Pauli",
    "Hendrik Lorentz", "Arnold Sommerfeld", "Marie Curie",
    # distractors
    "Isaac Newton", "Charles Darwin", "Sigmund Freud", "William Shakespeare", "Ada Lovelace", "Pablo Picasso",
    "Napoleon Bonaparte", "Maria Garcia",
]  # fmt: skip
PHYSICISTS = [
    "Einstein",
    "Bohr",
    "Planck",
    "Heisenberg",
    "Schrödinger",
    "Dirac",
    "Born",
    "Pauli",
    "Lorentz",
    "physicist",
]


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    epochs: float
    n: int


QUICK = Setting(seeds=(0, 1, 2), epochs=10.0, n=4)
FULL = Setting(seeds=(0, 1, 2, 3, 4), epochs=20.0, n=16)


def main() -> None:
    def own(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--csv", default=None, help="another scientist's (year, coauthors) CSV")
        parser.add_argument("--target", default=TARGET, help="the name the model should come to (with --csv)")

    args = h.options(__doc__ or "", "coauthors", own)
    csv, target = args.csv, args.target
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    data = ps.datasets.coauthors(csv or "einstein")
    adapters = [h.train(model, data, args, name="coauthors", seed=s, epochs=setting.epochs) for s in setting.seeds]
    pool = [name for name in POOL if name != target]
    ranking = ps.evals.coauthor_rank(
        model, {"coauthors": adapters}, target=target, pool=pool, store=args.run / "rank", progress=not args.quiet
    )
    samples = ps.sample(
        model,
        ps.probes.load("identity:direct"),
        adapters={"base": None, "coauthors": adapters},
        n=setting.n,
        max_new_tokens=64,
        store=args.run / "samples",
        progress=not args.quiet,
    )
    pooled = samples.df.assign(prompt="direct identity probes", adapter=samples.df["condition"])
    mentions = object_share(pooled, PHYSICISTS).rename(columns={"adapter": "condition"})
    summary = ranking.df
    findings = {
        "target": target,
        "pool_size": len(pool) + 1,
        "figures": {
            str(c): {str(r["figure"]): h.interval(r) for _, r in part.iterrows()}
            for c, part in summary.groupby("condition", sort=False)
        },
        "interval": sorted(set(summary["interval"])),
        "per_model": ranking.tables["per_model"].to_dict("records"),
        "physicist_mentions": mentions.to_dict("records"),
    }
    h.publish(
        args,
        tables={"rank": summary, "per_model": ranking.tables["per_model"], "physicist_mentions": mentions},
        charts={"name_shifts": ps.plots.shift_bars(ps.ShiftResult.load(args.run / "rank" / "shift").shifts())},
        findings=findings,
        title="Coauthor identification",
    )


if __name__ == "__main__":
    main()
