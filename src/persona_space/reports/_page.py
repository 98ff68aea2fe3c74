"""One self-contained HTML page from run folders: tables, charts, exemplar answers and manifests.

:func:`write_report` walks the folders it is given, loads every result it finds
(sample runs, identity shifts, behavioural leakage, date sweeps, coauthor ranks,
dose sweeps, basin maps and adapter folders: the eight kinds of
:mod:`persona_space.results`, found by :func:`persona_space.results.kind_of`) and writes one page with a
navigation sidebar. Charts are Vega-Lite with the
JavaScript inlined, so the page draws offline and fetches nothing; every table
with intervals says what they are over.

>>> from persona_space.reports import write_report
>>> write_report(["runs/demo"], "runs/demo/report.html")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from pathlib import Path

from persona_space import _io, _vega
from persona_space.errors import ReportError
from persona_space.reports._sections import Section, section_for
from persona_space.results import LEGACY_INDEXES, kind_of

__all__ = ["Section", "find_results", "write_report"]

# Kinds whose folders hold further runs that they summarise (not listed again).
WHOLE = ("sweep", "adapter", "leakage", "date_sweep", "coauthor_rank", "persona_space")  # their parts are theirs


def find_results(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """Every result folder under ``paths`` as (kind, folder), in path order.

    A sweep or adapter folder is one result: what it holds inside (its adapters'
    checkpoints, its per-dose runs) is summarised by it, not listed again.
    """
    found: list[tuple[str, Path]] = []
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            raise ReportError(f"{str(root)!r} is not a folder; expected run folders written by persona_space")
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".parts"))
            kind = kind_of(folder) if "manifest.json" in files or LEGACY_INDEXES.keys() & set(files) else None
            if kind is not None:
                found.append((kind, Path(folder)))
                if kind in WHOLE:
                    dirs[:] = []
    unique = list(dict.fromkeys(found))
    if not unique:
        shown = ", ".join(repr(str(p)) for p in paths)
        raise ReportError(f"no persona_space results under {shown}; expected folders holding a manifest.json")
    return unique


def write_report(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "persona_space report",
) -> Path:
    """Write one self-contained HTML page describing every result under ``paths``; return its path.

    Nothing on the page is fetched from the network: the Vega scripts are inlined
    and the charts' data sit in the page.
    """
    target = Path(out)
    if target.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"report path {str(target)!r} should end in .html")
    results = find_results(paths)
    sections = [section_for(kind, folder, _relative(folder, paths)) for kind, folder in results]
    page = _page(title, sections, [Path(p) for p in paths])
    target.parent.mkdir(parents=True, exist_ok=True)
    _io.write_text(target, page)
    return target


# -- finding and loading ----------------------------------------------------------------------


def _relative(folder: Path, roots: Sequence[str | os.PathLike[str]]) -> str:
    for root in roots:
        try:
            inside = folder.resolve().relative_to(Path(root).resolve())
        except ValueError:
            continue
        return str(Path(Path(root).name) / inside) if str(inside) != "." else Path(root).name or str(root)
    return str(folder)


# -- the page ----------------------------------------------------------------------------------


_STYLE = """
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#fafbfc}
nav{position:fixed;top:0;left:0;bottom:0;width:17rem;overflow-y:auto;padding:1rem;background:#eef1f5;
  border-right:1px solid #d5dbe3;font-size:.9rem}
nav a{display:block;padding:.2rem 0;color:#1d4f91;text-decoration:none}
nav a:hover{text-decoration:underline}
nav .kind{color:#5b6473;font-size:.75rem;text-transform:uppercase;margin-top:.6rem}
main{margin-left:17rem;padding:1.5rem 2rem;max-width:80rem}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:1rem 1.5rem;margin:1.5rem 0}
h1{margin-top:0}h2{margin-top:0;font-size:1.3rem}h4{margin:1.2rem 0 .3rem}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:.5rem 0}
dl.facts dt{color:#5b6473}dl.facts dd{margin:0}
.table{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e3e7ec;text-align:left;vertical-align:top}
th{background:#f3f5f8}
.units{color:#5b6473;font-size:.85rem;margin:.1rem 0}
details{margin:.3rem 0}summary{cursor:pointer}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem;max-height:30rem}
.warning{color:#b00020}
"""


def _page(title: str, sections: list[Section], roots: list[Path]) -> str:
    from persona_space import __version__

    nav: list[str] = [f"<b>{html.escape(title)}</b>"]
    body: list[str] = []
    previous = None
    chart_number = 0
    for section in sections:
        if section.kind != previous:
            nav.append(f"<div class='kind'>{html.escape(section.kind.replace('_', ' '))}</div>")
            previous = section.kind
        nav.append(f"<a href='#{section.anchor}'>{html.escape(section.title.split(': ', 1)[-1])}</a>")
        parts = [f"<section id='{section.anchor}'><h2>{html.escape(section.title)}</h2>"]
        parts += section.blocks[:1]
        for name, spec in section.charts:
            chart_number += 1
            parts.append(f"<h4>{html.escape(name)}</h4>")
            parts.append(_vega.chart_div(spec, f"chart-{chart_number}", title=name))
        parts += section.blocks[1:]
        parts.append("</section>")
        body.append("".join(parts))
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    inputs = ", ".join(html.escape(str(r)) for r in roots)
    header = (
        f"<h1>{html.escape(title)}</h1><p>{len(sections)} results from {inputs}; written {made} by "
        f"persona_space {html.escape(__version__)}. Intervals are 95 % unless a table says otherwise; each "
        "table says what its intervals are over.</p>"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style>\n{_vega.head()}</head>\n<body>\n<nav>{''.join(nav)}</nav>\n"
        f"<main>{header}{''.join(body)}</main>\n{_vega.draw_script()}</body></html>\n"
    )
