"""Mapping a run directory into basins with tables, charts and a summary; it lives in :mod:`persona_space.reports`."""

from __future__ import annotations

from persona_space.reports import map_run, summary_markdown

__all__ = ["map_run", "summary_markdown"]
