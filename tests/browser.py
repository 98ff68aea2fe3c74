"""Headless Chromium for tests: render a local page offline, read back its DOM and console."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Flags that keep Chromium from reaching out (its background services would try, and fail, on a closed network).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # any name lookup fails: a page that fetches anything logs an error
)
REMOTE = (
    r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""",  # elements that load from elsewhere
    r"""url\(\s*["']?\s*(?:https?:)?//""",  # CSS that loads from elsewhere
    r"@import",
    r""""url"\s*:\s*"(?:https?:)?//""",  # Vega-Lite data fetched from elsewhere
)


def chromium() -> str:
    """The Chromium executable, or skip (``.ci/run`` installs Debian's ``chromium`` where it is missing)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "no Chromium on this machine (install Debian's 'chromium' package; .ci/run does)"
    if os.environ.get("PERSONA_SPACE_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


def render(page: Path, *, budget_ms: int = 30000) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and every console message it printed."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                f"--virtual-time-budget={budget_ms}",
                "--window-size=1400,1000",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def remote_references(text: str) -> list[str]:
    """Every place in an HTML page that would fetch something from the network."""
    return [m.group(0) for pattern in REMOTE for m in re.finditer(pattern, text, re.IGNORECASE)]


def chart_states(dom: str) -> list[str]:
    """The ``data-state`` of every chart placeholder in a rendered DOM."""
    return re.findall(r'<div class="ps-chart[^"]*"[^>]*?data-state="([a-z]+)"', dom)
