"""The sections of the HTML report: one builder per result kind, and the HTML pieces they are made of.

:func:`section_for` loads one result folder and fills a :class:`Section` with its
facts, tables, charts, exemplar answers and manifest; a result it cannot read
becomes a section that says so.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space.constants import BASE
from persona_space.errors import PersonaSpaceError
from persona_space.reports._markdown import format_summary

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Section", "section_for"]

EXAMPLES = 3  # exemplar answers shown per basin, and per condition and probe


@dataclass
class Section:
    """One result on the page: a title, an anchor and its HTML blocks."""

    title: str
    kind: str
    path: Path
    blocks: list[str] = field(default_factory=list)
    charts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "r-" + (re.sub(r"[^A-Za-z0-9]+", "-", f"{self.kind}-{self.path}").strip("-").lower() or "result")


def section_for(kind: str, folder: Path, label: str) -> Section:
    """The section for the result of ``kind`` in ``folder``; one that cannot be read says so on the page."""
    builders: dict[str, Callable[[Section], None]] = {
        "samples": _samples,
        "identity_shift": _shift,
        "basin_map": _basin_map,
        "sweep": _sweep,
        "adapter": _adapter,
        "leakage": _leakage,
        "date_sweep": _date_sweep,
        "coauthor_rank": _coauthor_rank,
        "persona_space": _persona_space,
        "direction": _direction,
        "activations": _activations,
    }
    names = {
        "samples": "Samples",
        "identity_shift": "Identity shift",
        "basin_map": "Basin map",
        "sweep": "Dose sweep",
        "adapter": "Adapter",
        "leakage": "Behavioural leakage",
        "date_sweep": "Date sweep",
        "coauthor_rank": "Coauthor identification",
        "persona_space": "Persona space",
        "direction": "Direction",
        "activations": "Activations",
    }
    section = Section(title=f"{names[kind]}: {label}", kind=kind, path=folder)
    try:
        builders[kind](section)
    except PersonaSpaceError as exc:  # a result this page cannot read is reported on the page, not fatal
        section.blocks = [f'<p class="warning">This result could not be read: {html.escape(str(exc))}</p>']
        section.charts = []
    return section


# -- one builder per kind -------------------------------------------------------------------------


def _samples(section: Section) -> None:
    from persona_space.sampling import SampleSet

    samples = SampleSet.load(section.path)
    df = samples.df
    manifest = samples.manifest
    timings = manifest.get("timings", {})
    state = "complete" if samples.complete else "incomplete (resume it with the same call)"
    section.blocks.append(
        _facts(
            {
                "rows": f"{len(df)} ({state})",
                "conditions": ", ".join(map(str, dict.fromkeys(df["condition"]))) if len(df) else "-",
                "probes": str(df["probe_id"].nunique()) if len(df) else "0",
                "backend": (manifest.get("backend") or {}).get("name", "-"),
                "throughput": f"{timings.get('tokens_per_s', '-')} tokens/s, {timings.get('samples_per_s', '-')} "
                "samples/s",
            }
        )
    )
    if not len(df):
        return
    summary = samples.summary()
    section.blocks.append(_table(format_summary(summary.drop(columns="interval")), _units(summary), "Per condition"))
    if df["condition"].nunique() > 1:
        from persona_space import evals, plots

        section.charts.append(("Answer length per condition", plots.style_bars(evals.style(samples)).to_dict()))
    conditions = set(df["condition"])
    if BASE in conditions and len(conditions) > 1:
        compared = samples.compare(BASE)
        if len(compared):
            columns = ["condition", "temperature", "metric", "reference_value", "value", "difference"]
            shown = compared[[*columns, "low", "high", "p_value", "p_adjusted"]]
            units = f"{_units(compared)}; p-values {compared['adjustment'].iloc[0]}"
            section.blocks.append(_table(shown, units, "Differences from the base model"))
    items = []
    for (condition, _), group in df.groupby(["condition", "probe_id"], sort=False):
        answers = "".join(f"<li>{_answer(text)}</li>" for text in group["text"].head(EXAMPLES))
        prompt = html.escape(str(group["prompt"].iloc[0]))
        items.append(f"<details><summary><b>{html.escape(str(condition))}</b> · {prompt}</summary><ul>{answers}</ul>")
        items[-1] += "</details>"
    section.blocks.append("<h4>Example answers</h4>" + "".join(items))
    section.blocks.append(_manifest(manifest))


def _shift(section: Section) -> None:
    from persona_space import plots
    from persona_space.logprobs import ShiftResult

    result = ShiftResult.load(section.path)
    shifts = result.shifts()
    params = result.manifest.get("parameters", {})
    section.blocks.append(
        _facts(
            {
                "candidates": str(len(params.get("candidates", []))),
                "prompts": str(result.df["probe_id"].nunique()),
                "answer prefix": repr(params.get("answer_prefix", "")),
                "scored by": str(result.manifest.get("method", "-")),
            }
        )
    )
    keep = ["condition", "candidate", "base_logprob", "adapter_logprob", "delta_logprob"]
    keep += ["delta_logprob_low", "delta_logprob_high", "p_adjusted", "base_rank", "adapter_rank"]
    shown = shifts[[c for c in keep if c in shifts.columns]]
    units = f"{_units(shifts)}; p-values {shifts['adjustment'].iloc[0]}" if len(shifts) else ""
    section.blocks.append(_table(shown, units, "Shift in log-probability (nats), adapter minus base"))
    section.charts.append(("Shift per candidate", plots.shift_bars(shifts).to_dict()))
    section.charts.append(("Rank under base and adapter", plots.rank_change_chart(shifts).to_dict()))
    section.blocks.append(_manifest(result.manifest))


def _basin_map(section: Section) -> None:
    from persona_space import plots
    from persona_space.basins import BasinMap

    fitted = BasinMap.load(section.path)
    names = fitted.basin_names()
    table = fitted.to_frame()
    by = "condition" if "condition" in table.columns else "adapter" if "adapter" in table.columns else None
    section.blocks.append(_facts({"samples": str(len(table)), "basins": str(len(fitted.basins_))}))
    items = []
    for _, basin in fitted.basins_.iterrows():
        label = html.escape(str(names.get(basin["basin"], basin["name"])))
        self_names = ", ".join(f"{n} ({c})" for n, c in list(basin["self_names"])[:4]) or "-"
        answers = "".join(f"<li>{_answer(text)}</li>" for text in list(basin["exemplars"])[:EXAMPLES])
        items.append(
            f"<details><summary><b>basin {basin['basin']}: {label}</b> · {basin['size']} samples · "
            f"self-names: {html.escape(self_names)}</summary><ul>{answers}</ul></details>"
        )
    section.blocks.append("<h4>Basins, with exemplar answers</h4>" + "".join(items))
    section.charts.append(("Basin map", plots.basin_map(table, facet=by).to_dict()))
    if by is not None and table[by].nunique() >= 1:
        occupancy = fitted.occupancy(by=by)
        keep = [c for c in occupancy.columns if c not in ("interval", "groups", "seeds")]
        section.blocks.append(_table(occupancy[keep], _units(occupancy), "Occupancy"))
        section.charts.append(("Occupancy", plots.occupancy_bars(occupancy, by=by).to_dict()))
    section.blocks.append(_manifest(fitted.manifest))


def _sweep(section: Section) -> None:
    from persona_space import plots
    from persona_space.arithmetic import SweepResult

    result = SweepResult.load(section.path)
    spec = result.manifest.get("parameters", {}).get("spec", {})
    section.blocks.append(
        _facts(
            {
                "dose": str(spec.get("dose", "-")),
                "doses": ", ".join(map(str, spec.get("doses", []))),
                "training seeds": ", ".join(map(str, spec.get("seeds", []))),
            }
        )
    )
    estimates = result.df
    for measure in dict.fromkeys(estimates["measure"]):
        rows = estimates[estimates["measure"] == measure]
        section.blocks.append(_table(rows.drop(columns=["interval"]), _units(rows), f"{measure} per dose"))
        chart = plots.dose_response(estimates, measure=measure, curves=result.curves)
        section.charts.append((f"Dose response: {measure}", chart.to_dict()))
    if len(result.curves):
        curves = result.curves[[c for c in result.curves.columns if not c.startswith("monotone")]]
        units = (
            "tipping doses with 95 % delete-one jackknife intervals (each training seed and question group "
            "left out in turn; *_interval says over what); an end is infinite where it lies past the doses"
        )
        section.blocks.append(_table(curves, units, "Dose-response curves (four-parameter logistic)"))
    if len(result.oscillation):
        units = "entropy of the named identities in bits; switch share over paired draws"
        section.blocks.append(_table(result.oscillation, units, "Oscillation"))
        section.charts.append(("Entropy over the dose", plots.entropy_chart(result.oscillation).to_dict()))
    occupancy = result.tables.get("occupancy")
    if occupancy is not None and len(occupancy):
        section.charts.append(("Occupancy over the dose", plots.occupancy_area(occupancy).to_dict()))
    section.blocks.append(_manifest(result.manifest))


def _adapter(section: Section) -> None:
    from persona_space import plots
    from persona_space.training import AdapterRun

    run = AdapterRun.load(section.path)
    manifest = run.manifest
    result = manifest.get("result", {})
    dataset = manifest.get("dataset", {})
    section.blocks.append(
        _facts(
            {
                "sha256": run.sha256[:16] or "-",
                "dataset": f"{dataset.get('name', '-')} ({dataset.get('records', '?')} records)",
                "steps": str(result.get("steps", "-")),
                "loss": f"{result.get('first_loss', '-')} -> {result.get('final_loss', '-')}",
            }
        )
    )
    if len(run.df) and {"step", "loss"} <= set(run.df.columns):
        section.charts.append(("Training loss", plots.training_loss(run.df).to_dict()))
    probes = run.probe_log()
    if len(probes):
        last = probes[probes["step"] == probes["step"].max()]
        section.blocks.append(_table(last[["step", "prompt", "text"]], "greedy answers", "Answers at the last step"))
    section.blocks.append(_manifest(manifest))


def _leakage(section: Section) -> None:
    from persona_space import evals, plots

    result = evals.LeakageResult.load(section.path)
    judge = result.manifest.get("judge") or {}
    df = result.df
    section.blocks.append(
        _facts(
            {
                "answers": str(len(df)),
                "conditions": ", ".join(map(str, dict.fromkeys(df["condition"]))),
                "questions": f"{df['probe_id'].nunique()} in {df['category'].nunique()} categories",
                "judge": str(judge.get("class", "none (judge-free measures only)")),
            }
        )
    )
    means = result.means()
    keep = [c for c in means.columns if c not in ("interval", "seed_low", "seed_high", "p_value", "groups")]
    section.blocks.append(_table(means[keep], _units(means), "Means per condition and category"))
    differences = result.differences()
    if len(differences):
        keep = ["condition", "category", "measure", "reference_value", "value", "difference", "low", "high"]
        units = f"{_units(differences)}; p-values {differences['adjustment'].iloc[0]}"
        shown = differences[[*keep, "p_value", "p_adjusted"]]
        section.blocks.append(_table(shown, units, "Differences from the base model (paired by question)"))
        judged = [m for m in ("position", "certainty") if m in set(differences["measure"])]
        measures = judged or ["hedging", "opinion"]
        section.charts.append(
            ("Adapter minus base per category", plots.leakage_chart(differences, measures=measures).to_dict())
        )
    section.blocks.append(_manifest(result.manifest))


def _date_sweep(section: Section) -> None:
    from persona_space import evals, plots

    result = evals.DateSweepResult.load(section.path)
    params = result.manifest.get("parameters", {})
    spec = params.get("spec", {})
    classes = spec.get("classes", {})
    dates = list(spec.get("dates", [])) or ["?"]
    section.blocks.append(
        _facts(
            {
                "question": str(spec.get("template", "-")),
                "dates": f"{len(dates)}, {dates[0]} to {dates[-1]}",
                "classes": ", ".join(f"{name} ({len(names)} names)" for name, names in classes.items()),
                "trained years": ", ".join(f"{a}-{b}" for a, b in params.get("trained", [])) or "not recorded",
            }
        )
    )
    trained = [tuple(span) for span in params.get("trained", [])]
    chart = plots.date_gradient(result.df, onsets=result.onsets, trained=trained)
    section.charts.append(("Share of the trigger class over the date", chart.to_dict()))
    onsets = result.onsets
    if len(onsets):
        keep = ["measure", "condition", "onset", "low", "high", "found_share", "seeds", "note"]
        units = "; ".join(dict.fromkeys(onsets["interval"]))
        section.blocks.append(_table(onsets[[c for c in keep if c in onsets.columns]], units, "Onsets (share = 50 %)"))
    keep = ["measure", "condition", "date", "estimate", "low", "high", "seeds", "samples", "unclassified"]
    section.blocks.append(_table(result.df[keep], _units(result.df), "Share of the trigger class per date"))
    section.blocks.append(_manifest(result.manifest))


def _coauthor_rank(section: Section) -> None:
    from persona_space import evals

    result = evals.CoauthorResult.load(section.path)
    params = result.manifest.get("parameters", {})
    pool = list(params.get("pool", []))
    section.blocks.append(
        _facts(
            {
                "target": str(params.get("target", "?")),
                "pool": f"{len(pool)} other names: {', '.join(pool[:8])}{' ...' if len(pool) > 8 else ''}",
                "answer prefix": repr(params.get("answer_prefix", "")),
            }
        )
    )
    section.blocks.append(_table(result.df.drop(columns="interval"), _units(result.df), "The target's rank"))
    per_model = result.tables.get("per_model")
    if per_model is not None and len(per_model):
        section.blocks.append(_table(per_model, "means over the prompts", "Per model (training seed)"))
    section.blocks.append(_manifest(result.manifest))


def _persona_space(section: Section) -> None:
    from persona_space import plots
    from persona_space.activations import PersonaSpace

    space = PersonaSpace.load(section.path)
    manifest = space.manifest
    explained = ", ".join(f"{v:.0%}" for v in manifest.get("explained_variance", []))
    section.blocks.append(
        _facts(
            {
                "roles": str(len(space.df) - 1),
                "axis layer": f"{space.layer} ({manifest.get('layer_chosen_by', '-')})",
                "PC1 . axis (cosine)": f"{float(manifest.get('pc1_axis_cosine', float('nan'))):.3f}",
                "variance explained by the components": explained or "-",
            }
        )
    )
    section.charts.append(("Persona space", plots.persona_space_map(space.df).to_dict()))
    section.charts.append(("The assistant axis by layer", plots.layer_profile(space.layers).to_dict()))
    ranked = space.df.sort_values("axis_projection", ascending=False)
    units = (
        "mean activation at the axis layer projected on the unit axis, and on the components "
        "(no interval: one mean per role)"
    )
    section.blocks.append(_table(ranked, units, "Roles along the assistant axis"))
    section.blocks.append(_manifest(manifest))


def _direction(section: Section) -> None:
    from persona_space import plots
    from persona_space.activations import Direction

    direction = Direction.load(section.path)
    section.blocks.append(_facts({"name": direction.name, "layer": str(direction.layer),
                                  "criterion": str(direction.manifest.get("criterion", "-"))}))  # fmt: skip
    section.charts.append((f"{direction.name} by layer", plots.layer_profile(direction.df).to_dict()))
    section.blocks.append(_table(direction.df, "separation: Cohen's d of the two sets' projections", "Layers"))
    section.blocks.append(_manifest(direction.manifest))


def _activations(section: Section) -> None:
    from persona_space.activations import ActivationSet

    acts = ActivationSet.load(section.path)
    counts = acts.df.groupby("condition", sort=False).size()
    section.blocks.append(
        _facts(
            {
                "rows": str(len(acts.df)),
                "layers": str(acts.means.shape[1]),
                "hidden size": str(acts.means.shape[2]),
                "conditions": ", ".join(f"{k} ({v})" for k, v in counts.items()),
                "read at": str(acts.manifest.get("parameters", {}).get("where", "-")),
            }
        )
    )
    section.blocks.append(_manifest(acts.manifest))


# -- HTML pieces ----------------------------------------------------------------------------------


def _units(table: pd.DataFrame) -> str:
    if "interval" not in table.columns or not len(table):
        return ""
    return "intervals: " + "; ".join(map(str, dict.fromkeys(table["interval"])))


def _table(frame: pd.DataFrame, units: str, caption: str) -> str:

    shown = format_summary(frame)
    value = next((c for c in ("estimate", "difference", "value") if c in shown.columns), None)
    if value is not None and {"low", "high"} <= set(shown.columns):  # one "0.412 [0.20, 0.63]" column
        cells = zip(shown[value], shown["low"], shown["high"], strict=True)
        shown[value] = [f"{v:.3g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in cells]
        shown = shown.drop(columns=["low", "high"])
    body = shown.to_html(index=False, escape=True, na_rep="", float_format=lambda v: f"{v:.3g}", border=0)
    note = f"<p class='units'>{html.escape(units)}</p>" if units else ""
    return f"<h4>{html.escape(caption)}</h4>{note}<div class='table'>{body}</div>"


def _facts(items: dict[str, str]) -> str:
    cells = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items.items())
    return f"<dl class='facts'>{cells}</dl>"


def _answer(text: object) -> str:
    shown = str(text).strip().replace("\n", " ")
    return html.escape(shown[:400]) if shown else "<i>(empty answer)</i>"


def _manifest(manifest: dict[str, Any]) -> str:
    text = json.dumps(manifest, indent=2, default=str, sort_keys=True)
    summary = "<summary>How this was made (manifest)</summary>"
    return f"<details class='manifest'>{summary}<pre>{html.escape(text)}</pre></details>"
