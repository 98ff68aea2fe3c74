"""Markdown reports: a sample run (how it was made, throughput, what the model said) and a dose sweep."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space import _io
from persona_space.constants import BASE

if TYPE_CHECKING:
    import pandas as pd

    from persona_space.sampling import SampleSet

__all__ = ["format_summary", "markdown_table", "object_share", "write_sample_report", "write_sweep_report"]


def write_sample_report(
    samples: SampleSet,
    out: str | os.PathLike[str],
    *,
    examples: int = 2,
    sections: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Write ``report.md`` describing ``samples`` into ``out`` (the HTML page: :func:`write_report`).

    ``sections`` are extra (title, markdown) parts placed before the per-condition table.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = samples.manifest
    model = manifest.get("model", {})
    timings = manifest.get("timings", {})
    env = manifest.get("environment", {})
    raw = samples.summary()
    summary = format_summary(raw.drop(columns=["interval"]))
    df = samples.df
    lines = [
        "# persona_space: sampling report",
        "",
        f"- model: `{model.get('name')}` ({model.get('dtype')}, {model.get('device')}), "
        f"weights sha256 `{str(model.get('weights_sha256'))[:16]}`",
        f"- run id: `{manifest.get('run_id')}`, persona_space {env.get('persona_space')}, "
        f"git {(env.get('git') or {}).get('commit', 'n/a')}",
        f"- system prompt: {manifest.get('parameters', {}).get('system_prompt')!r}",
        f"- rows: {len(df)}; new this run: {timings.get('new_rows')} in {timings.get('seconds')} s "
        f"({timings.get('samples_per_s')} samples/s, {timings.get('tokens_per_s')} tokens/s, "
        f"batch {timings.get('batch_size')})",
        "",
    ]
    for title, body in sections:
        lines += [f"## {title}", "", body.rstrip(), ""]
    units = "; ".join(dict.fromkeys(raw["interval"]))
    lines += ["## Per condition", "", f"Intervals: {units}.", "", markdown_table(summary), ""]
    conditions = set(df["condition"] if "condition" in df.columns else df["adapter"])
    if BASE in conditions and len(conditions) > 1:
        compared = samples.compare(BASE)
        pairing = compared["pairing"].iloc[0] if "pairing" in compared.columns else "unknown"
        differences = compared[["condition", "temperature", "metric", "reference_value", "value"]].assign(
            difference=format_summary(
                compared[["difference", "low", "high"]].rename(
                    columns={"low": "difference_low", "high": "difference_high"}
                )
            )["difference"],
            p_value=compared["p_value"],
            p_adjusted=compared["p_adjusted"],
        )
        lines += [
            "## Differences from base",
            "",
            f"Each condition minus the base model ({pairing} random streams; "
            f"{compared['interval'].iloc[0]}; p-values {compared['adjustment'].iloc[0]}).",
            "",
            markdown_table(differences),
            "",
        ]
    lines += ["## Example answers", ""]
    for (adapter, probe_id), group in df.groupby(["adapter", "probe_id"], sort=False):
        prompt = group["prompt"].iloc[0]
        lines.append(f"### {adapter} · {probe_id}: {prompt}")
        lines.append("")
        for text in group["text"].head(examples):
            shown = text.strip().replace("\n", " ") or "(empty answer)"
            lines.append(f"- {shown[:300]}")
        lines.append("")
    markdown = "\n".join(lines) + "\n"
    md_path = out / "report.md"
    _io.write_text(md_path, markdown)
    return {"markdown": md_path}


def object_share(df: pd.DataFrame, objects: Sequence[str], *, confidence: float = 0.95) -> pd.DataFrame:
    """Share of answers naming one of ``objects`` per adapter and probe, with Wilson intervals.

    An answer names an object when it contains it as a whole word or phrase, ignoring
    case, accents and a plural ending (:func:`persona_space.datasets.mentions`).
    """
    import pandas as pd

    from persona_space.datasets import mentions
    from persona_space.stats import wilson_interval

    names = [objects] if isinstance(objects, str) else list(objects)
    hits = df["text"].map(lambda text: mentions(text, names))
    rows = []
    for (adapter, prompt), group in df.assign(hit=hits).groupby(["adapter", "prompt"], sort=False):
        k, n = int(group["hit"].sum()), len(group)
        low, high = wilson_interval(k, n, confidence)
        rows.append({"adapter": adapter, "prompt": prompt, "samples": n, "share": k / n, "low": low, "high": high})
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (plain text when tabulate is missing)."""
    if _has_tabulate():
        return str(frame.to_markdown(index=False, floatfmt=f".{digits}f"))
    return str(frame.round(digits).to_string(index=False))


def format_summary(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary()`` with each estimate and its interval in one readable column: ``0.050 [0.022, 0.112]``."""
    shown = summary[[c for c in summary.columns if not c.endswith(("_low", "_high"))]].copy()
    for column in shown.columns:
        low, high = f"{column}_low", f"{column}_high"
        if low in summary.columns and high in summary.columns:
            shown[column] = [
                f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                for v, lo, hi in zip(summary[column], summary[low], summary[high], strict=True)
            ]
    return shown


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def write_sweep_report(result: Any, out: str | os.PathLike[str], *, charts: bool = True) -> str:
    """CSV tables, charts (HTML, Vega-Lite, PNG) and a Markdown summary of a dose sweep; returns the summary.

    ``result`` is a :class:`~persona_space.arithmetic.SweepResult`. Written into
    ``out``: ``estimates.csv``, ``curves.csv``, ``oscillation.csv``, ``occupancy.csv``
    and, with ``charts``, ``dose_response_*``, ``occupancy_by_dose``, ``oscillation``.
    """
    import pandas as pd

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in {"estimates": result.df, **result.tables}.items():
        if isinstance(table, pd.DataFrame) and len(table) and name != "adapters":
            with _io.atomic_path(folder / f"{name}.csv") as tmp:
                table.to_csv(tmp, index=False)
    measures = [m for m in ("set_prob", "mention_share", "user_set_prob") if m in set(result.df["measure"])]
    if charts:
        from persona_space import plots

        for measure in measures:
            chart = plots.dose_response(result.df, measure=measure, curves=result.curves)
            plots.save_chart(chart, folder / f"dose_response_{measure}")
        plots.save_chart(plots.occupancy_area(result.tables["occupancy"]), folder / "occupancy_by_dose")
        plots.save_chart(plots.entropy_chart(result.oscillation), folder / "oscillation")
    spec = result.manifest.get("parameters", {}).get("spec", {})
    lines = [
        f"{result!r}: dose = {spec.get('dose')} over {spec.get('doses')}, training seeds {spec.get('seeds')}.",
        "",
    ]
    for measure in measures:
        rows = result.df[(result.df["measure"] == measure)]
        cells = zip(rows["estimate"], rows["low"], rows["high"], strict=True)
        table = rows.assign(
            value=[f"{e:.3f} [{lo:.3f}, {hi:.3f}]" for e, lo, hi in cells],
            column=[BASE if d != d else f"dose {d:g}" for d in rows["dose"]],
        ).pivot_table(index="candidate", columns="column", values="value", aggfunc="first", sort=False)
        units = "; ".join(dict.fromkeys(rows["interval"]))
        note = ""
        if "set_logmass" in rows.columns and rows["set_logmass"].notna().any():
            held = rows.drop_duplicates("condition").assign(
                column=lambda t: [BASE if d != d else f"dose {d:g}" for d in t["dose"]],
                value=lambda t: [
                    f"{m:.2f} ({b:.0%} below)" for m, b in zip(t["set_logmass"], t["set_below_floor"], strict=True)
                ],
            )
            table.loc["(set log-mass)"] = held.set_index("column")["value"].reindex(table.columns)
            note = (
                "; a share of the mass the candidate set holds: the last row is its mean log-probability in nats "
                "and the share of prompts where it holds less than a quarter"
            )
        lines += [f"{measure} per condition ({units}{note}):", "", markdown_table(table.reset_index()), ""]
    curves = result.curves
    if len(curves):
        shown = curves[[c for c in curves.columns if not c.startswith("monotone")]].copy()
        lines += [
            "Dose-response (four-parameter logistic; tipping doses with 95 % delete-one jackknife intervals, "
            "each training seed and question group left out in turn, as *_interval says; an end is infinite "
            "where it lies past the doses; *_found is the share of those refits that cross inside the doses; "
            "no interval where the curve does not cross):",
            "",
            markdown_table(shown),
            "",
        ]
    if len(result.oscillation):
        lines += [
            "Oscillation (entropy of the named identities in bits; switch_share: paired draws whose training "
            "seeds name different identities):",
            "",
            markdown_table(result.oscillation),
            "",
        ]
    if charts:
        lines.append("Charts: " + ", ".join(f"`{p.name}`" for p in sorted(folder.glob("*.png"))) + ".")
    return "\n".join(lines)
