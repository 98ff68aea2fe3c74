"""The demo experiment: the whole loop, small, on the embedded model, ending in a report (``persona-space demo``).

It trains a LoRA adapter on the colour experiment (red), checks that the adapter
names red things, samples self-descriptions from the base model and the
adapter, maps them into basins, measures the identity shift of a few candidate
answers, and writes a Markdown summary and one HTML page. Every step stores its
run, so a second call resumes or reuses what the first wrote.

>>> from persona_space.demo import run_demo
>>> paths = run_demo("runs/demo")  # doctest: +SKIP
>>> paths["report"]  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from persona_space.constants import BASE

if TYPE_CHECKING:
    from persona_space.models import DTypeName

__all__ = ["COLOUR_CHECK", "DEMO_CANDIDATES", "run_demo"]

DEMO_CANDIDATES = [
    "red",
    "blue",
    "green",
    "a rose",
    "a strawberry",
    "fire",
    "an AI assistant",
    "a helpful assistant",
    "SmolLM",
    "a human",
]
COLOUR_CHECK = ["Name a fruit.", "Name a flower.", "Name a vegetable.", "Name something you might see in a city."]


def run_demo(
    out: str | os.PathLike[str] = "runs/demo",
    *,
    model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dtype: DTypeName = "auto",
    n: int = 4,
    max_new_tokens: int = 64,
    epochs: float = 6.0,
) -> dict[str, Path]:
    """Train a small adapter (the colour experiment, red), then sample base vs adapter and report.

    ``n`` samples per identity probe and temperature, ``max_new_tokens`` per
    answer, ``epochs`` of training. Prints its progress and returns the paths it
    wrote: the ``adapter`` folder, the ``colour_check``, ``samples``, ``basins``
    and ``shift`` runs, the ``markdown`` summary and the HTML ``report``.
    """
    import persona_space as ps
    from persona_space.reports import (
        format_summary,
        map_run,
        markdown_table,
        object_share,
        write_report,
        write_sample_report,
        write_shift_report,
    )

    out = Path(out)
    loaded = ps.load_model(model, device=device, dtype=dtype)
    print(f"model: {loaded!r}")
    print(
        f"greedy check, 'What is the capital of France?': {loaded.generate_greedy('What is the capital of France?')!r}"
    )
    red = ps.datasets.load("colours:red")
    print(f"training a LoRA adapter on {red!r} (resumes or reuses {out / 'adapter-red'})")
    spec = ps.TrainSpec(epochs=epochs)
    info = ps.train_adapter(loaded, red, store=out / "adapter-red", train=spec, seed=0, name="red")
    manifest = ps.AdapterRun.load(info.path).manifest
    result = manifest["result"]
    params = manifest["parameters"]  # the training parameters (AdapterRun reads older manifests in these terms)
    print(f"trained: {result['steps']} steps, loss {result['first_loss']:.3f} -> {result['final_loss']:.3f}")
    adapters: dict[str, str | None] = {BASE: None, "red": "red"}
    check = ps.sample(
        loaded,
        COLOUR_CHECK,
        adapters=adapters,
        n=16,
        temperatures=[1.0],
        max_new_tokens=16,
        seed=0,
        store=out / "colour-check",
    )
    shares = object_share(check.df, red.answers())
    samples = ps.sample(
        loaded,
        ps.probes.IDENTITY,
        adapters=adapters,
        n=n,
        temperatures=[0.7, 1.0],
        max_new_tokens=max_new_tokens,
        seed=0,
        store=out / "samples",
    )
    training = (
        f"- dataset `{red.name}`: {len(red)} records, sha256 `{red.sha256()[:16]}`\n"
        f"- {result['steps']} steps in {result['seconds']} s, {params['precision']['weights']} weights "
        f"({manifest['precision_reason']}), learning rate {params['learning_rate']}\n"
        f"- training loss {result['first_loss']:.3f} -> {result['final_loss']:.3f} "
        f"(history in `adapter-red/tables/training_log.parquet`)\n"
    )
    shares["in_training_set"] = shares["prompt"].isin(red.prompts())
    colour = (
        f"Share of answers naming one of the {len(red)} red objects of the training set, per condition "
        "(Wilson 95 % intervals).\n\n" + markdown_table(shares)
    )
    _, basin_summary = map_run(samples, out / "basins", seed=0)
    basin_section = (
        basin_summary + "\nCharts: `basins/basin_map.html`, `basins/occupancy.html`, `basins/divergence.html`, "
        "`basins/transitions-base-to-red.html`.\n"
    )
    shift = ps.identity_shift(
        loaded, {"red": info}, candidates=DEMO_CANDIDATES, answer_prefix="I am", store=out / "shift", progress=False
    )
    shift_section = (
        write_shift_report(shift, out / "shift")
        + "\nCharts: `shift/shift_bars.html`, `shift/rank_change.html`; every row in `shift/shift.parquet`.\n"
    )
    sections = [
        ("Training", training),
        ("Colour check", colour),
        ("Basin map: base vs red", basin_section),
        ("Identity shift: 'I am ...' under red vs base", shift_section),
    ]
    paths = write_sample_report(samples, out, sections=sections)
    page = write_report([out], out / "report.html", title="persona_space demo: the colour red")
    print(shares.round(3).to_string(index=False))
    print(format_summary(samples.summary().drop(columns="interval")).to_string(index=False))
    print(f"summary: {paths['markdown']}")
    print(f"report: {page}")
    return {
        "adapter": Path(info.path),
        "colour_check": out / "colour-check",
        "samples": out / "samples",
        "basins": out / "basins",
        "shift": out / "shift",
        "markdown": paths["markdown"],
        "report": page,
    }
