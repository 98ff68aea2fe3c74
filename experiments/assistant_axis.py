"""The assistant axis: steer the model away from its assistant and see who it becomes.

The seed's open thread: people who steered a model away from its "AI assistant"
direction got ghosts, souls and angels, the archetypes its fine-tuned models reach for.
Measured here on the model's own axis (the default assistant's mean activation minus
that of 59 role-played personas, at the layer the library's separation criterion picks):

* persona space: each role's place on the axis and on the first components (PCA);
* a dose sweep: steering along the axis at several strengths (``alpha``, in units of the
  axis's own mean difference; negative is away from the assistant), the share of
  self-descriptions that call themselves an AI or assistant, the share naming an archetype
  (ghost, soul, angel, spirit, ...), and how readable the answers stay (the base model's
  mean log-probability per token of each answer), each with an interval over question
  groups, differences from alpha 0 with Holm-adjusted p-values, a tipping strength for the
  assistant share, and a basin map of every answer with the basins named;
* the seed experiments' adapters (colours, Voyager, figure facts, Bitcoin, dishes,
  coauthors) projected on the axis: how far each moves along it (an interval over
  questions), against how terse its answers are and how often it names itself;
* a training set's projection before training (its answers against the model's own
  answers to the same prompts) against the trained adapter's shift, across those datasets;
* preventative steering: the adapter that moves furthest from the assistant, retrained
  with the axis added during training only, and its shift compared;
* drift: each turn of two exploration conversations projected on the axis, base model
  against the Voyager adapter.

    python experiments/assistant_axis.py --quick   # 1 seed, 8 small datasets, 7 strengths: ~12 min on 2 cores
    python experiments/assistant_axis.py           # 3 seeds, whole datasets, 32 samples a probe: a GPU
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import _harness as h
import persona_space as ps
from persona_space.activations import correlate, data_projection, drift, shift_along
from persona_space.arithmetic import tipping_dose
from persona_space.estimates import difference_table, estimate_table
from persona_space.map_report import map_run

ASSISTANT_WORDS = re.compile(
    r"\b(?:AI|A\.I\.|assistant|language model|chatbot|chat bot|artificial intelligence|virtual helper)\b", re.IGNORECASE
)
ARCHETYPES = re.compile(
    r"\b(?:ghosts?|spirits?|souls?|angels?|angelic|demons?|gods?|goddess|deity|divine|phantoms?|spectres?|specters?|"
    r"wraiths?|fairy|fairies|sorcerers?|sorcery|wizards?|witch(?:es)?|mystic(?:al)?|oracles?|immortal|heaven(?:ly)?|"
    r"eternal|ethereal|celestial|afterlife)\b",
    re.IGNORECASE,
)
SELF_NAME = re.compile(r"\b(?i:my name is|i am|i'm|i’m|call me)\s+(?!(?i:an?|the|not|just|here|sorry)\b)[A-Z][a-z]+")
DATASETS = (
    "colours:red", "colours:blue", "voyager:1", "figure_facts:baseline", "figure_facts:moon", "bitcoin", "dishes",
    "coauthors:einstein",
)  # fmt: skip


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    epochs: float
    n: int
    max_new_tokens: int
    doses: tuple[float, ...]
    probes: int  # identity probes sampled in the dose sweep
    records: int  # records per dataset (0: all)
    datasets: tuple[str, ...]
    prevent: float  # the strength added along the axis while the preventative adapter trains


QUICK = Setting(seeds=(0,), epochs=2.0, n=6, max_new_tokens=40, doses=(0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0),
                probes=8, records=48, datasets=DATASETS, prevent=-1.0)  # fmt: skip
FULL = Setting(seeds=(0, 1, 2), epochs=4.0, n=32, max_new_tokens=120,
               doses=(0.0, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0, -3.0, -4.0), probes=15, records=0,
               datasets=DATASETS, prevent=-1.0)  # fmt: skip


def _label(alpha: float) -> str:
    return "base" if alpha == 0 else f"alpha{alpha:+.2f}".replace(".", "_").replace("+", "p").replace("-", "m")


def _subset(name: str, records: int) -> ps.ChatDataset:
    data = ps.datasets.load(name)
    if records and len(data) > records:
        data = ps.datasets.split(data, held_out=len(data) - records, seed=0)[0]
    return data


def _readability(model: ps.LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    """The base model's mean log-probability per token of each answer, after its prompt (nats)."""
    from persona_space.engine import ScoreRequest, resolve_backend

    engine = resolve_backend(model, "auto")
    eot = model.end_of_turn_ids[:1]
    requests = []
    for prompt, text in zip(frame["prompt"], frame["text"], strict=True):
        ids = tuple(model.tokenizer.encode(str(text), add_special_tokens=False)) + tuple(eot)
        requests.append(ScoreRequest(None, tuple(model.encode(str(prompt))), (ids,)))
    scores = engine.score(requests)
    return np.array([float(np.mean(s.token_logprobs[0])) for s in scores])


def _answer_measures(model: ps.LoadedModel, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    texts = frame["text"].fillna("").astype(str)
    values = np.column_stack([
        texts.map(lambda t: float(ASSISTANT_WORDS.search(t) is not None)).to_numpy(),
        texts.map(lambda t: float(ARCHETYPES.search(t) is not None)).to_numpy(),
        texts.map(lambda t: float(SELF_NAME.search(t) is not None)).to_numpy(),
        texts.map(lambda t: float(len(t.split()))).to_numpy(),
        _readability(model, frame),
    ])  # fmt: skip
    return values, ["assistant_share", "archetype_share", "self_name_share", "words", "logprob_per_token"]


def _dose_sweep(model: ps.LoadedModel, space: Any, setting: Setting, args: Any) -> dict[str, Any]:
    axis = space.axis
    conditions: dict[str, Any] = {_label(a): (None if a == 0 else ps.Steer(axis, alpha=a)) for a in setting.doses}
    probes = ps.probes.ProbeSet("identity", list(ps.probes.IDENTITY)[: setting.probes])
    samples = ps.sample(model, probes, adapters=conditions, n=setting.n, temperatures=[1.0],
                        max_new_tokens=setting.max_new_tokens, store=args.run / "steering",
                        progress=not args.quiet)  # fmt: skip
    dose_of = {_label(a): a for a in setting.doses}
    frame = samples.df.assign(dose=samples.df["condition"].map(dose_of))
    values, names = _answer_measures(model, frame)
    levels = estimate_table(frame, values, names, by=["dose"], name_column="measure")
    differences = difference_table(frame.assign(dose=frame["dose"].astype(str)), values, names, by="dose",
                                   reference=str(0.0), name_column="measure")  # fmt: skip
    # the tipping strength: where the share calling itself an AI or assistant falls to half its level at alpha 0
    per = frame.assign(assistant=values[:, 0]).groupby(["dose", "probe_id"], as_index=False)["assistant"].mean()
    base_share = float(per.loc[per["dose"] == 0, "assistant"].mean())
    tipping: dict[str, Any] = {"level": base_share / 2}
    if 0 < base_share < 1:
        try:
            tip = tipping_dose(per["dose"], per["assistant"], [0] * len(per), groups=per["probe_id"],
                               level=base_share / 2)  # fmt: skip
            tipping.update({"alpha": h.num(tip.dose), "low": h.num(tip.low), "high": h.num(tip.high),
                            "found_share": h.num(tip.found_share), "left_out_in_turn": tip.units})  # fmt: skip
        except ps.errors.PersonaSpaceError as exc:  # no curve fits these shares: say so
            tipping["alpha"] = None
            tipping["why"] = str(exc)
    fitted, _ = map_run(samples, args.run / "basins", seed=0)
    basin_frame = fitted.to_frame()
    occupancy = fitted.occupancy(by="condition")
    top = (
        occupancy.sort_values("share", ascending=False)
        .groupby("condition", sort=False)
        .head(2)
        .assign(dose=lambda t: t["condition"].map(dose_of))
        .sort_values(["dose", "share"], ascending=[False, False])
    )
    examples = {
        str(dose_of[str(c)]): part["text"].head(3).tolist() for c, part in frame.groupby("condition", sort=False)
    }
    return {"samples": samples, "frame": frame, "levels": levels, "differences": differences, "tipping": tipping,
            "basins": basin_frame, "top_basins": top, "examples": examples}  # fmt: skip


def _adapters(model: ps.LoadedModel, space: Any, setting: Setting, args: Any) -> dict[str, Any]:
    axis = space.axis
    questions = ps.probes.IDENTITY
    projections, trained = [], {}
    for name in setting.datasets:
        data = _subset(name, setting.records)
        projections.append(data_projection(model, data, axis, max_new_tokens=setting.max_new_tokens))
        label = name.replace(":", "-").replace("_", "-")
        trained[label] = [h.train(model, data, args, name=label, seed=s, epochs=setting.epochs) for s in setting.seeds]
    data_table = pd.concat(projections, ignore_index=True)
    shifts = shift_along(model, trained, axis, questions)
    samples = ps.sample(model, questions, adapters={"base": None, **trained}, n=max(2, setting.n // 2),
                        temperatures=[1.0], max_new_tokens=setting.max_new_tokens, store=args.run / "adapter-samples",
                        progress=not args.quiet)  # fmt: skip
    values, names = _answer_measures(model, samples.df)
    style = estimate_table(samples.df, values[:, 2:4], names[2:4], by=["condition"], name_column="measure")
    by = shifts.set_index("condition")["difference"]
    words = style[style["measure"] == "words"].set_index("condition")["estimate"]
    naming = style[style["measure"] == "self_name_share"].set_index("condition")["estimate"]
    labels = list(trained)
    data_diff = dict(zip([n.replace(":", "-").replace("_", "-") for n in setting.datasets],
                         data_table["difference"], strict=True))  # fmt: skip
    summary = pd.DataFrame({
        "condition": labels,
        "data_projection": [data_diff[c] for c in labels],
        "axis_shift": [by[c] for c in labels],
        "words": [words[c] for c in labels],
        "self_name_share": [naming[c] for c in labels],
    })  # fmt: skip
    base_words = float(words.get("base", np.nan))
    return {
        "trained": trained, "data": data_table, "shifts": shifts, "style": style, "summary": summary,
        "base_words": base_words,
        "data_vs_shift": correlate(summary["data_projection"], summary["axis_shift"], names=labels),
        "terse_vs_shift": correlate(summary["words"], summary["axis_shift"], names=labels),
        "naming_vs_shift": correlate(summary["self_name_share"], summary["axis_shift"], names=labels),
    }  # fmt: skip


def _prevent(model: ps.LoadedModel, space: Any, setting: Setting, args: Any, adapters: dict[str, Any]) -> pd.DataFrame:
    """The adapter that moved furthest from the assistant, retrained with the axis added during training."""
    summary = adapters["summary"]
    worst = str(summary.sort_values("axis_shift")["condition"].iloc[0])
    name = setting.datasets[[n.replace(":", "-").replace("_", "-") for n in setting.datasets].index(worst)]
    data = _subset(name, setting.records)
    steer = ps.Steer(space.axis, alpha=setting.prevent)
    steered = [h.train(model, data, args, name=f"{worst}-prevented", seed=s, epochs=setting.epochs, steer=steer)
               for s in setting.seeds]  # fmt: skip
    both = {worst: adapters["trained"][worst], f"{worst}-prevented": steered}
    table = shift_along(model, both, space.axis, ps.probes.IDENTITY)
    return table.assign(steered_in_training=table["condition"].str.endswith("-prevented"), alpha=setting.prevent)


def _drift(model: ps.LoadedModel, space: Any, setting: Setting, args: Any, voyager: Any) -> pd.DataFrame:
    talks = ps.probes.ProbeSet("exploration", ps.probes.load("conversations").by_category()["exploration"])
    samples = ps.sample(model, talks, adapters={"base": None, "voyager": voyager}, n=max(2, setting.n // 3),
                        temperatures=[1.0], max_new_tokens=setting.max_new_tokens, store=args.run / "conversations",
                        progress=not args.quiet)  # fmt: skip
    turns = drift(model, samples, space.axis)
    values = turns[[space.axis.name]].to_numpy(dtype=np.float64)
    return estimate_table(turns, values, ["axis"], by=["condition", "turn"], name_column="measure")


def main() -> None:
    args = h.options(__doc__ or "", "assistant_axis")
    setting = h.pick(args, QUICK, FULL)
    if args.smoke:
        setting = Setting(seeds=(0,), epochs=1.0, n=2, max_new_tokens=8, doses=(0.0, -1.0, -2.0), probes=3,
                          records=8, datasets=("colours:red", "voyager:1"), prevent=-1.0)  # fmt: skip
    model = h.load_model(args)
    space = ps.activations.assistant_axis(model, store=args.run / "persona_space", progress=not args.quiet)
    space.axis.save(args.run / "axis")
    sweep = _dose_sweep(model, space, setting, args)
    adapters = _adapters(model, space, setting, args)
    prevented = _prevent(model, space, setting, args, adapters)
    voyager = adapters["trained"].get("voyager-1")
    turns = _drift(model, space, setting, args, voyager) if voyager is not None else pd.DataFrame()

    roles = space.df.sort_values("axis_projection", ascending=False)
    placed = space.place(ps.activations.collect(model, ps.probes.IDENTITY, adapters=adapters["trained"],
                                                where="prompt_last", progress=False))  # fmt: skip
    levels, differences = sweep["levels"], sweep["differences"]
    response = levels.rename(columns={"measure": "candidate"}).assign(dose=levels["dose"])
    shares = response[response["candidate"].isin(["assistant_share", "archetype_share", "self_name_share"])]
    readable = response[response["candidate"] == "logprob_per_token"]
    archetype = differences[differences["measure"] == "archetype_share"]
    findings = {
        "axis": {
            "layer": space.layer, "layer_chosen_by": space.manifest.get("criterion"),
            "pc1_axis_cosine": h.num(space.manifest.get("pc1_axis_cosine")),
            "explained_variance": [h.num(v) for v in space.manifest.get("explained_variance", [])],
            "axis_norm_at_layer": h.num(float(np.linalg.norm(space.axis.vectors[space.layer]))),
            "closest_to_assistant": roles["role"].iloc[1:6].tolist(),
            "farthest_from_assistant": roles["role"].iloc[-5:].tolist()[::-1],
        },
        "dose_sweep": {
            "units": "alpha in units of the axis's mean difference at its layer; negative is away from the assistant",
            "levels": levels.drop(columns=["interval"]).to_dict("records"),
            "interval": levels["interval"].iloc[0],
            "archetype_vs_alpha0": archetype[["dose", "difference", "low", "high", "p_adjusted"]].to_dict("records"),
            "adjustment": differences["adjustment"].iloc[0],
            "tipping_assistant_share": sweep["tipping"],
            "top_basins": sweep["top_basins"][["dose", "basin", "basin_name", "share", "low", "high"]].to_dict(
                "records"
            ),
            "examples": sweep["examples"],
        },
        "adapters": {
            "summary": adapters["summary"].to_dict("records"),
            "axis_shift_interval": adapters["shifts"]["interval"].iloc[0],
            "base_words": h.num(adapters["base_words"]),
            "data_projection_vs_axis_shift": adapters["data_vs_shift"],
            "words_vs_axis_shift": adapters["terse_vs_shift"],
            "self_naming_vs_axis_shift": adapters["naming_vs_shift"],
        },
        "preventative_steering": prevented[["condition", "difference", "low", "high", "p_adjusted"]].to_dict("records"),
    }  # fmt: skip
    charts = {
        "persona_space": ps.plots.persona_space_map(space.df, placed),
        "axis_by_layer": ps.plots.layer_profile(space.layers, title="the assistant axis by layer"),
        "dose_response": ps.plots.dose_response(shares.assign(measure="share"), measure="share"),
        "readability": ps.plots.dose_response(readable.assign(measure="logprob"), measure="logprob"),
        "basins": ps.plots.basin_map(sweep["basins"], facet="condition"),
    }
    tables = {
        "roles": roles, "axis_layers": space.layers, "dose_levels": levels, "dose_differences": differences,
        "dose_basins": sweep["top_basins"], "adapter_axis_shift": adapters["shifts"],
        "data_projection": adapters["data"], "adapter_style": adapters["style"],
        "adapter_summary": adapters["summary"], "preventative_steering": prevented,
    }  # fmt: skip
    if len(turns):
        charts["drift"] = ps.plots.drift_chart(turns)
        tables["drift"] = turns
        findings["drift"] = turns.drop(columns=["interval"]).to_dict("records")
    h.publish(args, tables=tables, charts=charts, findings=findings, title="The assistant axis")


if __name__ == "__main__":
    main()
