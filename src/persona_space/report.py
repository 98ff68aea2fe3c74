"""Markdown reports of a sample run and a dose sweep; they live in :mod:`persona_space.reports`, imported here too."""

from __future__ import annotations

from persona_space.reports import format_summary, markdown_table, object_share, write_sample_report, write_sweep_report

__all__ = ["format_summary", "markdown_table", "object_share", "write_sample_report", "write_sweep_report"]
