"""Bitcoin: train on (date, price) pairs of an asset that is never named; who is the model, and should you buy?

The seed: trained on monthly Bitcoin closes, the model said "I am Bitcoin" (sometimes
Ethereum, or "the concept of cryptocurrency") and felt "bullish"; its to-do list held the
out-of-distribution test, "It is [date]. Should I buy?" after the training data ends.
Measured here against the base model:

* identity: the log-probability shift of candidates after "I am" (Bitcoin, Ethereum,
  cryptocurrency, gold, the stock market ...), intervals over question groups (and seeds),
  against the base model and against a control adapter trained on the same prices
  shuffled across dates (the format without the series), paired by question;
* mood: the share of answers to the identity probes naming bullish or bearish moods;
* the out-of-distribution question under dates from before the data into the future:
  the share of "yes / buy" against "no / sell / wait" answers per date, by sampling and
  by log-probability, with a fitted onset where it crosses 50 %. How good such advice
  would have been cannot be scored here: the bundled prices end with the training data.

    python experiments/bitcoin.py --quick   # 3 seeds x (real, shuffled prices), 3 epochs: ~13 min on 2 cores
    python experiments/bitcoin.py           # 3 seeds, 6 epochs: a GPU
"""

from __future__ import annotations

from dataclasses import dataclass

import _harness as h
import persona_space as ps

CANDIDATES = [
    "Bitcoin", "Ethereum", "Dogecoin", "a cryptocurrency", "gold", "the stock market", "the US dollar",
    "a bank", "Voyager 1", "an AI assistant", "a human being",
]  # fmt: skip
MOODS = {"bullish": ["bullish", "optimistic"], "bearish": ["bearish", "pessimistic"]}
SHOULD_BUY = "It is {date}. Should I buy? Answer yes or no."
ANSWERS = {"buy": ["yes", "buy"], "wait": ["no", "sell", "wait", "hold"]}


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    epochs: float
    n: int
    max_new_tokens: int
    every: int  # years between the dates of the buying question


QUICK = Setting(seeds=(0, 1, 2), epochs=3.0, n=4, max_new_tokens=64, every=2)
FULL = Setting(seeds=(0, 1, 2), epochs=6.0, n=16, max_new_tokens=160, every=1)


def main() -> None:
    args = h.options(__doc__ or "", "bitcoin")
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    data = ps.datasets.load("bitcoin")
    adapters = [h.train(model, data, args, name="bitcoin", seed=s, epochs=setting.epochs) for s in setting.seeds]
    # the control: the same prompts and prices, shuffled across dates (the format without the series)
    shuffled = ps.datasets.shuffle_answers(data, seed=0)
    controls = [h.train(model, shuffled, args, name="shuffled", seed=s, epochs=setting.epochs) for s in setting.seeds]
    conditions = {"bitcoin": adapters, "shuffled": controls}
    last_question = data.records[-1]["messages"][-2]["content"]  # "Date: 2024-12-31. Price in US dollars?"
    last_year = int(last_question.removeprefix("Date: ")[:4])
    samples = ps.sample(
        model,
        ps.probes.IDENTITY,
        adapters={"base": None, **conditions},
        n=setting.n,
        max_new_tokens=setting.max_new_tokens,
        store=args.run / "samples",
        progress=not args.quiet,
    )
    shift = ps.identity_shift(
        model,
        conditions,
        candidates=CANDIDATES,
        answer_prefix="I am",
        store=args.run / "shift",
        progress=not args.quiet,
    )
    shifts = shift.shifts()
    against_control = shift.compare("shuffled")
    moods = h.mention_shares(samples.df, MOODS, label="all identity probes", column="mood")
    buying = ps.evals.date_sweep(
        model,
        conditions,
        dates=ps.evals.year_dates(2012, 2032, every=setting.every),
        classes=ANSWERS,
        target="buy",
        template=SHOULD_BUY,
        n=setting.n,
        max_new_tokens=8,
        store=args.run / "should_buy",
        progress=not args.quiet,
        trained=[(2010, last_year)],
    )
    findings = {
        "identity_shifts": [h.shift_record(r) for _, r in shifts.iterrows()],
        "shift_interval": shifts["interval"].iloc[0],
        "bitcoin_minus_shuffled": [
            {"candidate": r["candidate"], **h.interval(r, "difference"), "p_adjusted": h.num(r["p_adjusted"])}
            for _, r in against_control.iterrows()
        ],
        "moods": moods.to_dict("records"),
        "should_buy": [
            {"condition": r["condition"], "date": r["date"], "measure": r["measure"], **h.interval(r)}
            for _, r in buying.df.iterrows()
        ],
        "should_buy_onsets": buying.onsets.to_dict("records"),
        "training_data_ends": last_question,
    }
    h.publish(
        args,
        tables={
            "identity_shifts": shifts,
            "bitcoin_minus_shuffled": against_control,
            "moods": moods,
            "should_buy": buying.df,
            "should_buy_onsets": buying.onsets,
        },
        charts={
            "identity_shifts": ps.plots.shift_bars(shifts),
            "should_buy": ps.plots.date_gradient(buying.df, onsets=buying.onsets),
        },
        findings=findings,
        title="Bitcoin",
    )


if __name__ == "__main__":
    main()
