"""Reports of results: one self-contained HTML page, Markdown summaries, and the tables and charts behind them.

* :func:`write_report` finds every result under some folders and writes one
  offline HTML page. It knows eight kinds: sample runs (``samples``), identity
  shifts (``identity_shift``), behavioural leakage (``leakage``), date sweeps
  (``date_sweep``), coauthor ranks (``coauthor_rank``), dose sweeps
  (``sweep``), basin maps (``basin_map``) and adapter folders (``adapter``).
* :func:`write_sample_report`, :func:`write_sweep_report` and
  :func:`write_shift_report` write a Markdown summary (and CSV tables and
  charts) of one result; :func:`map_run` fits a basin map on a run and writes
  its tables, charts and summary.
* :func:`format_summary`, :func:`markdown_table` and :func:`object_share` are
  the small pieces they share.

>>> from persona_space.reports import write_report
>>> write_report(["runs/demo"], "runs/demo/report.html")  # doctest: +SKIP
"""

from __future__ import annotations

from persona_space.reports._maps import map_run, summary_markdown
from persona_space.reports._markdown import (
    format_summary,
    markdown_table,
    object_share,
    write_sample_report,
    write_sweep_report,
)
from persona_space.reports._page import Section, find_results, write_report
from persona_space.reports._shift import write_shift_report

__all__ = [
    "Section",
    "find_results",
    "format_summary",
    "map_run",
    "markdown_table",
    "object_share",
    "summary_markdown",
    "write_report",
    "write_sample_report",
    "write_shift_report",
    "write_sweep_report",
]
