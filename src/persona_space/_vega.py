"""Vega-Lite charts in HTML that needs no network: the Vega JavaScript is inlined, never fetched.

The bundle (Vega, Vega-Lite and vega-embed, about 0.9 MB) comes from ``vl-convert``,
which carries it; it is built once per process and cached. Each chart sits in a
``<div class="ps-chart">`` whose ``data-state`` becomes ``drawn`` once Vega has
rendered it, or ``failed`` (with the error on the console), so a browser test can
tell that every chart drew.
"""

from __future__ import annotations

import functools
import html
import json
import re
from typing import Any

from persona_space.errors import ReportError

# Export menu without the "open in the Vega editor" entry, which would send the spec to a web site.
EMBED_OPTIONS: dict[str, Any] = {"actions": {"export": True, "source": True, "compiled": False, "editor": False}}

_STYLE = """
.ps-chart{margin:1em 0;overflow-x:auto}
.ps-chart.vega-embed{display:block}
.ps-chart-failed{color:#b00020;font-family:monospace;white-space:pre-wrap}
"""

_DRAW = """
function psDrawCharts(root) {
  const options = %s;
  const charts = Array.from((root || document).querySelectorAll(".ps-chart[data-spec]"));
  return Promise.all(charts.map((div) => {
    const spec = JSON.parse(document.getElementById(div.dataset.spec).textContent);
    return vegaEmbed(div, spec, options)
      .then((result) => result.view.runAsync())
      .then(() => { div.dataset.state = "drawn"; })
      .catch((error) => {
        div.dataset.state = "failed";
        const note = document.createElement("div");
        note.className = "ps-chart-failed";
        note.textContent = "chart failed: " + error;
        div.appendChild(note);
        console.error("chart " + div.id + " failed:", error);
      });
  }));
}
"""


def vegalite_version() -> str | None:
    """The Vega-Lite version of the installed Altair, if vl-convert carries it (else vl-convert's default)."""
    import altair as alt
    import vl_convert

    version = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    return version if version in vl_convert.get_vegalite_versions() else None


@functools.cache
def bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script, safe to place inside ``<script>``."""
    import vl_convert

    code = vl_convert.javascript_bundle(vl_version=vegalite_version())  # type: ignore[call-arg]  # stub: snippet required; runtime: optional
    # Only "</script" ends a script element; the bundle has none today, and a rewrite would be wrong inside
    # a regular expression, so refuse rather than patch.
    if re.search(r"</script|<!--", code, re.IGNORECASE):
        raise ReportError("the Vega bundle from vl-convert contains '</script' or '<!--' and cannot be inlined")
    return code


def head() -> str:
    """``<style>`` and ``<script>`` elements a page needs once to draw any number of charts."""
    return (
        f"<style>{_STYLE}</style>\n"
        f"<script>\n{bundle()}\n</script>\n"
        f"<script>\n{_DRAW % json.dumps(EMBED_OPTIONS)}\n</script>\n"
    )


def chart_div(spec: dict[str, Any], element_id: str, *, title: str = "") -> str:
    """The placeholder for one chart with its spec beside it as JSON (drawn by :func:`draw_script`)."""
    label = f' aria-label="{html.escape(title)}"' if title else ""
    return (
        f'<script type="application/json" id="{element_id}-spec">{json_for_script(spec)}</script>\n'
        f'<div class="ps-chart" id="{element_id}" data-spec="{element_id}-spec" data-state="pending"{label}></div>\n'
    )


def draw_script() -> str:
    """The call that draws every chart on the page, placed at the end of ``<body>``."""
    return '<script>psDrawCharts(document).then(() => { document.body.dataset.charts = "done"; });</script>\n'


def chart_page(spec: dict[str, Any], *, title: str = "chart") -> str:
    """A complete page showing one chart, with everything it needs inlined."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"{head()}</head>\n<body>\n{chart_div(spec, 'chart', title=title)}{draw_script()}</body></html>\n"
    )


def json_for_script(value: Any) -> str:
    """``value`` as JSON that cannot end the ``<script>`` element holding it (every ``<`` written ``\\u003c``)."""
    return json.dumps(value, allow_nan=False).replace("<", "\\u003c")
