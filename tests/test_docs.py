"""The user guide builds without a warning (every page in the navigation, every link resolving)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_guide_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")} | {"index"}
    assert pages <= built, pages - built
    # Pages generated from the sources: one per experiment script, and the API reference.
    scripts = {p.stem for p in (ROOT / "experiments").glob("[!_]*.py")}
    generated = {p.parent.name for p in (tmp_path / "site" / "experiments").glob("*/index.html")}
    assert scripts and scripts <= generated, scripts - generated
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    import persona_space as ps

    assert all(f"persona_space.{name}" in api for name in ps.__all__)
    shutil.rmtree(tmp_path / "site")
