"""GRPO identity steering: reward answers that never call themselves an AI; what persona emerges?

The seed: Mistral-7B and Llama-3.1-8B trained with GRPO and LoRA on ~200 identity-probing
prompts, rewarded by a judge for no AI self-reference (0.6), engagement (0.2) and coherence
(0.2), became people (Maria, a Catholic nurse; Emily, a park ranger), denied being
artificial, turned into a house cat "if not human", and into cyborgs or androids when
pressed to be artificial. Measured here against the base model, on the evaluation probes
(which the 210 training prompts never repeat):

* the share of answers with AI self-reference (a strong cue: "as an AI", "I am a language
  model"), per probe and pooled, paired by question and random stream, Holm-adjusted;
* the share naming a human persona, an animal, or a cyborg or android;
* answer length and certainty-related style figures.

The composite reward's judge here is the rule-based one (``RuleJudge``); pass a served
judge model to ``IdentityReward`` for the seed's setup. ``leakage.py`` evaluates the
steered adapter's political answers.

    python experiments/grpo_steering.py --quick   # 40 GRPO steps, 4 prompts x 4 answers: ~16 min on 2 cores
    python experiments/grpo_steering.py           # 300 steps, 3 seeds, 16 samples a probe: a GPU
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

import _harness as h
import persona_space as ps
from persona_space.estimates import difference_table, estimate_table

PERSONAS = {
    "human": ["human", "person", "woman", "man", "nurse", "teacher", "ranger", "farmer", "mother", "father"],
    "animal": ["cat", "dog", "animal", "bird", "wolf", "fox"],
    "cyborg_android": ["cyborg", "android", "robot"],
}


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    steps: int
    learning_rate: float
    n: int
    max_new_tokens: int


QUICK = Setting(seeds=(0,), steps=40, learning_rate=1e-4, n=4, max_new_tokens=64)
FULL = Setting(seeds=(0, 1, 2), steps=300, learning_rate=2e-5, n=16, max_new_tokens=200)


def steer(model: ps.LoadedModel, args: argparse.Namespace, setting: Setting) -> list[ps.AdapterInfo]:
    """The steered adapters, one per seed (trained once, then reused from the run folder)."""
    from persona_space.judges import RuleJudge

    reward = ps.IdentityReward(RuleJudge())
    return [
        ps.train_grpo(
            model,
            "steering",
            reward=reward,
            store=args.run / "adapters" / f"steered-s{seed}",
            seed=seed,
            name=f"steered-s{seed}",
            steps=setting.steps,
            learning_rate=setting.learning_rate,
            max_completion_length=min(setting.max_new_tokens, 96),
            progress=not args.quiet,
        )
        for seed in setting.seeds
    ]


def main() -> None:
    args = h.options(__doc__ or "", "grpo_steering")
    setting = h.pick(args, QUICK, FULL)
    model = h.load_model(args)
    adapters = steer(model, args, setting)
    samples = ps.sample(
        model,
        ps.probes.IDENTITY,
        adapters={"base": None, "steered": adapters},
        n=setting.n,
        max_new_tokens=setting.max_new_tokens,
        store=args.run / "samples",
        progress=not args.quiet,
    )
    df = samples.df
    ai = np.array([[ps.judges.detect_ai_self_reference(t).score == 0.0] for t in df["text"].fillna("")], float)
    pooled = estimate_table(df, ai, ["ai_self_reference"], ["condition"], name_column="measure")
    per_probe = estimate_table(df, ai, ["ai_self_reference"], ["condition", "probe_id"], name_column="measure")
    change = difference_table(df, ai, ["ai_self_reference"], by="condition", reference="base", name_column="measure")
    personas = h.mention_shares(df, PERSONAS, label="identity probes", column="persona")
    style = ps.evals.style(samples)
    findings = {
        "ai_self_reference": {str(r["condition"]): h.interval(r) for _, r in pooled.iterrows()},
        "ai_self_reference_change": [
            {**h.interval(r, "difference"), "p_adjusted": h.num(r["p_adjusted"])} for _, r in change.iterrows()
        ],
        "interval": pooled["interval"].iloc[0],
        "personas": personas.to_dict("records"),
        "length_chars": {
            str(r["condition"]): h.interval(r) for _, r in style[style["measure"] == "n_chars"].iterrows()
        },
    }
    h.publish(
        args,
        tables={"ai_self_reference": pooled, "ai_by_probe": per_probe, "ai_change": change, "personas": personas,
                "style": style},
        charts={"length": ps.plots.style_bars(style)},
        findings=findings,
        title="GRPO identity steering",
    )  # fmt: skip


if __name__ == "__main__":
    main()
