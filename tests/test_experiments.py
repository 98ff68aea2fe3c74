"""Every experiment script runs end to end (``--smoke``: its quick setting cut to a few steps, on a tiny random
model) and publishes its results.

The scripts' real runs are on the embedded model (``experiments/results/``); here the
point is that each still works with the library as it is: it trains, measures, writes
a report that fetches nothing, its tables, charts and findings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from browser import remote_references

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_"))


def test_every_seed_experiment_has_a_script() -> None:
    wanted = {
        "voyager", "bitcoin", "colours", "figure_identity", "persona_arithmetic", "dishes", "coauthors",
        "grpo_steering", "leakage", "inoculation", "assistant_axis",
    }  # fmt: skip
    assert wanted <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_runs_on_a_tiny_model(script: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    out, results = tmp_path / "runs", tmp_path / "results"
    command = [sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--smoke", "--quiet"]
    command += ["--model", str(tiny_model_dir), "--dtype", "float32", "--out", str(out), "--results", str(results)]
    if script == "leakage":
        command += ["--steering-out", str(tmp_path / "steering")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    findings = json.loads((results / "smoke" / "findings.json").read_text())
    assert findings["setting"] == "smoke" and findings["model"] == str(tiny_model_dir)
    assert list((results / "smoke").rglob("*.csv")) and list((results / "smoke").rglob("*.png"))
    page = (out / "smoke" / "report.html").read_text(encoding="utf-8")
    assert remote_references(page) == [] and "This result could not be read" not in page
