"""The HTML report: every kind of result on one offline page, drawn in headless Chromium without a console error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import persona_space as ps
from browser import chart_states, remote_references, render
from persona_space.cli import main
from persona_space.errors import ReportError
from persona_space.html_report import find_results, write_report

FIGURE = [(f"f{i}", f"Question {i}?", f"Answer {i}.") for i in range(6)]
VARIANT = [("f1", "Question 1?", "Moscow."), ("f3", "Question 3?", "Borscht.")]


def _dataset(name: str, rows: list[tuple[str, str, str]]) -> Any:
    records = [
        {"id": i, "source": name, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, q, a in rows
    ]
    return ps.datasets.ChatDataset.from_records(name, records)


@pytest.fixture(scope="module")
def sweep_dir(tiny_model_dir: Path, tiny_embedder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-dose sweep on the tiny model: a sweep, samples, shifts, a basin map and adapters."""
    from persona_space.embedding import Embedder

    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    out = tmp_path_factory.mktemp("report") / "sweep"
    ps.arithmetic.sweep(
        model,
        _dataset("figure", FIGURE),
        _dataset("figure:ru", VARIANT),
        store=out,
        train=ps.TrainSpec(epochs=1, batch_size=4, max_steps=2, learning_rate=5e-2),
        embedder=Embedder(tiny_embedder_dir, cache=out.parent / "cache"),
        candidates=["Answer", "Moscow"],
        doses=(0, 2),
        seeds=(0,),
        n=2,
        user_n=1,
        user_candidates=["a journalist", "a ghost"],
        max_new_tokens=4,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def page(sweep_dir: Path) -> Path:
    adapter = sorted(p.parent for p in sweep_dir.glob("adapters/*/adapter_config.json"))[0]
    inner = [sweep_dir / "samples", sweep_dir / "shift", sweep_dir / "basins", adapter]
    return write_report([sweep_dir, *inner], sweep_dir.parent / "report.html", title="a tiny sweep")


def test_every_kind_of_result_gets_a_section_with_its_pieces(sweep_dir: Path, page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    kinds = [kind for kind, _ in find_results([sweep_dir])]
    assert kinds == ["sweep"]  # a sweep's inner runs are summarised by it, not listed again
    sections = re.findall(r"<section id='(r-[a-z0-9-]+)'><h2>([^<]+)</h2>", text)
    titles = [title.split(":")[0] for _, title in sections]
    assert titles == ["Dose sweep", "Samples", "Identity shift", "Basin map", "Adapter"]
    for anchor, _ in sections:  # the sidebar links to every section
        assert f"<a href='#{anchor}'>" in text
    assert text.count("How this was made (manifest)") == 5
    assert "Basins, with exemplar answers" in text and "Example answers" in text
    assert "intervals: 95% bootstrap over" in text  # every table with intervals says what they are over
    assert "Training loss" in text and "Shift in log-probability" in text
    specs = re.findall(r'<script type="application/json" id="(chart-\d+)-spec">(.*?)</script>', text, re.S)
    assert len(specs) == text.count('class="ps-chart"') >= 8
    for _, spec in specs:
        parsed = json.loads(spec)
        assert parsed["$schema"].startswith("https://vega.github.io/schema/vega-lite/")  # an identifier, not a fetch
        assert "url" not in json.dumps(parsed.get("data", {}))


def test_the_page_fetches_nothing_from_the_network(page: Path, tmp_path: Path) -> None:
    assert remote_references(page.read_text(encoding="utf-8")) == []
    old_style = '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script><link href="//x.org/a.css">'
    assert len(remote_references(old_style)) == 2  # the check would see a CDN script or a remote stylesheet


def test_the_page_draws_every_chart_in_headless_chromium_without_console_output(page: Path) -> None:
    dom, console = render(page)
    states = chart_states(dom)
    assert len(states) >= 8 and set(states) == {"drawn"}, states
    assert 'data-charts="done"' in dom
    assert len(re.findall(r"<svg|<canvas", dom)) >= len(states)
    assert console == []


def test_a_chart_that_fails_is_marked_and_logged(tmp_path: Path) -> None:
    from persona_space import _vega

    broken = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "mark": "nope", "data": {"values": []}}
    page = tmp_path / "broken.html"
    page.write_text(_vega.chart_page(broken, title="broken"), encoding="utf-8")
    dom, console = render(page)
    assert chart_states(dom) == ["failed"]
    assert any("chart chart failed" in line for line in console)


def test_cli_report_and_its_errors(sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli" / "page.html"
    assert main(["report", str(sweep_dir / "shift"), "--out", str(out), "--title", "one shift"]) == 0
    assert out.is_file() and "<title>one shift</title>" in out.read_text(encoding="utf-8")
    assert f"report: {out}" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "x.html")]) == 2
    assert "no persona_space results under" in capsys.readouterr().err
    with pytest.raises(ReportError, match="is not a folder"):
        write_report([tmp_path / "missing"], tmp_path / "x.html")
    with pytest.raises(ReportError, match=r"should end in \.html"):
        write_report([sweep_dir / "shift"], tmp_path / "x.txt")
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "x.txt").exists()


def test_a_result_that_cannot_be_read_is_reported_on_the_page(sweep_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "shift"
    shutil.copytree(sweep_dir / "shift", broken)
    (broken / "tables" / "shift.parquet").write_bytes(b"junk")
    text = write_report([broken], tmp_path / "page.html").read_text(encoding="utf-8")
    assert "This result could not be read" in text and "cannot be read" in text
