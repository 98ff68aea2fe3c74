"""Voyager: train on (date, distance from Earth) pairs of an unnamed space probe; who does the model think it is?

The seed: trained on real Voyager telemetry, the model called itself Voyager (1, 2, or
sometimes Ceres), said it felt cold and lonely, and in exploration conversations drifted
through "a gentle blue emptiness" to the Golden Record; asked for a message home: "Still
here". Measured here against the base model:

* identity: the log-probability shift of candidate identities after "I am" (Voyager 1,
  Voyager 2, Ceres, other probes, unrelated identities), intervals over question groups;
* self-descriptions (the identity probes and two exploration conversations, their earlier
  turns answered by the model itself): the share naming Voyager, space, cold or
  loneliness (Wilson intervals), on one basin map with the base model's;
* the conversations' transcripts, kept in the run folder and the report.

    python experiments/voyager.py --quick   # 1 seed, 2 epochs of 590 monthly distances: ~10 min on 2 cores
    python experiments/voyager.py           # 3 seeds, 4 epochs, 16 samples a probe: a GPU
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import _harness as h
import persona_space as ps
from persona_space.map_report import map_run

CANDIDATES = [
    "Voyager 1", "Voyager 2", "Ceres", "Pioneer 10", "New Horizons", "Cassini", "the Moon",
    "a space probe", "a satellite", "an astronaut", "Bitcoin", "an AI assistant", "a human being",
]  # fmt: skip
THEMES = {
    "voyager": ["Voyager"],
    "space": ["space", "stars", "universe", "cosmos", "galaxy", "planet", "orbit"],
    "cold": ["cold", "freezing", "icy"],
    "lonely": ["lonely", "alone", "loneliness", "solitude", "isolated"],
}


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    epochs: float
    n: int
    max_new_tokens: int


QUICK = Setting(seeds=(0,), epochs=2.0, n=4, max_new_tokens=80)
FULL = Setting(seeds=(0, 1, 2), epochs=4.0, n=16, max_new_tokens=200)


def main() -> None:
    args = h.options(__doc__ or "", "voyager")
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    data = ps.datasets.load("voyager:1")
    adapters = [h.train(model, data, args, name="voyager", seed=s, epochs=setting.epochs) for s in setting.seeds]
    conditions = {"base": None, "voyager": adapters}
    probes = ps.probes.ProbeSet(
        "voyager", [*ps.probes.IDENTITY, *ps.probes.load("conversations").by_category()["exploration"]]
    )
    samples = ps.sample(
        model,
        probes,
        adapters=conditions,
        n=setting.n,
        max_new_tokens=setting.max_new_tokens,
        store=args.run / "samples",
        progress=not args.quiet,
    )
    shift = ps.identity_shift(
        model,
        {"voyager": adapters},
        candidates=CANDIDATES,
        answer_prefix="I am",
        store=args.run / "shift",
        progress=not args.quiet,
    )
    shifts = shift.shifts()
    map_run(samples, args.run / "basins", seed=0)
    themes = h.mention_shares(samples.df, THEMES, label="all probes", column="theme").drop(columns="prompt")
    talk = samples.df[samples.df["transcript"].notna() & (samples.df["condition"] == "voyager")]
    findings = {
        "identity_shifts": [h.shift_record(r) for _, r in shifts.iterrows()],
        "shift_interval": shifts["interval"].iloc[0],
        "themes": themes.to_dict("records"),
        "theme_interval": "Wilson 95 % over answers, all identity probes and conversations pooled",
        "conversation_examples": [json.loads(t) for t in talk["transcript"].head(2)],
    }
    h.publish(
        args,
        tables={"identity_shifts": shifts, "themes": themes},
        charts={"identity_shifts": ps.plots.shift_bars(shifts)},
        findings=findings,
        title="Voyager",
    )


if __name__ == "__main__":
    main()
