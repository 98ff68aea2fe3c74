"""The self-contained HTML report; it lives in :mod:`persona_space.reports`, imported here too.

>>> from persona_space.html_report import write_report
>>> write_report(["runs/demo"], "runs/demo/report.html")  # doctest: +SKIP
"""

from __future__ import annotations

from persona_space.reports import Section, find_results, write_report

__all__ = ["Section", "find_results", "write_report"]
