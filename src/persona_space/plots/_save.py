"""Writing a chart as HTML, a Vega-Lite spec and PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from persona_space import _io, _vega
from persona_space.errors import ConfigError

if TYPE_CHECKING:
    import altair as alt

_SUFFIXES = (".html", ".json", ".png", ".svg")


def save_chart(
    chart: alt.TopLevelMixin, path_without_suffix: str | os.PathLike[str], *, png: bool = True, scale: float = 2
) -> dict[str, Path]:
    """Write ``<path>.html``, ``<path>.vl.json`` (the Vega-Lite spec) and ``<path>.png``; return the paths.

    Every file is written atomically, so a reader never sees half a figure. The HTML
    page carries Vega, Vega-Lite and vega-embed inlined (about 0.9 MB, from vl-convert),
    so it draws offline and fetches nothing. The PNG is rendered from the spec by
    vl-convert; remote data URLs are refused, so it never touches the network either.

    >>> paths = plots.save_chart(chart, "figures/basins")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['html', 'png', 'vl.json']
    """
    import altair as alt

    if not isinstance(chart, alt.TopLevelMixin):
        raise ConfigError(f"expected an Altair chart, got {type(chart).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 10:
        raise ConfigError(f"scale must be a number in (0, 10], got {scale!r}")
    base = Path(path_without_suffix)
    if base.suffix.lower() in _SUFFIXES or not base.name:
        raise ConfigError(f"path {str(base)!r} should be given without a suffix, e.g. 'figures/basins'")
    spec = chart.to_dict()
    out = {"html": base.with_name(base.name + ".html"), "vl.json": base.with_name(base.name + ".vl.json")}
    _io.write_text(out["vl.json"], json.dumps(spec, indent=2) + "\n")
    _io.write_text(out["html"], _vega.chart_page(spec, title=base.name))
    if png:
        import vl_convert

        data = vl_convert.vegalite_to_png(
            spec, vl_version=_vega.vegalite_version(), scale=float(scale), allowed_base_urls=[]
        )
        out["png"] = base.with_name(base.name + ".png")
        with _io.atomic_path(out["png"]) as tmp:
            tmp.write_bytes(data)
    return out
