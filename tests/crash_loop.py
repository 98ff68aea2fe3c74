"""Crash loops: start a CLI command, kill it with SIGKILL at seeded random points, resume, compare.

Each command (``sample``, ``train``, ``shift``, ``map``, ``sweep``) runs on a tiny
random model (and, for ``map`` and ``sweep``, the embedded sentence embedder) as a
subprocess. First it runs once uninterrupted into its own folder: the reference, and
the timing the kill points are drawn from (uniform between the moment the command
first writes its output folder and its end). Then the same command runs into a second
folder and is killed at each kill point in turn, each start resuming what the killed
one left; a last start finishes it. The two folders must then hold the same result:

* the same rows (none lost, none duplicated) with the same texts and numbers,
  and for ``train`` the same adapter weights, bit for bit;
* no temporary file (``.tmp-*``) anywhere, and no trainer checkpoint left;
* every ``manifest.json`` a complete, parseable manifest.

A start that finishes before its kill ends the loop with the kills counted so far (the
run reports fewer than asked). Run every command with ten kill points each (the closing figures)::

    python tests/crash_loop.py --kills 10

and ``tests/test_guarantees.py`` runs a seeded subset in the suite (marked slow; ``make test`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COMMANDS = ("sample", "train", "shift", "map", "sweep")
TMP_PREFIX = ".tmp-"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclasses.dataclass
class Outcome:
    """What one command's loop did: kill points survived, starts, and what differed (empty: nothing)."""

    command: str
    kills: int
    starts: int
    rows: int
    problems: list[str]
    seconds: float

    def line(self) -> str:
        verdict = "same result" if not self.problems else "; ".join(self.problems)
        return (
            f"{self.command:<7} {self.kills:>3} kills survived, {self.starts:>3} starts, {self.rows:>5} rows, "
            f"{self.seconds:6.1f} s: {verdict}"
        )


@dataclasses.dataclass
class World:
    """The inputs every command runs on: a tiny model folder, two adapters for it, a scratch folder."""

    model: Path
    adapters: tuple[Path, Path]
    work: Path


def make_world(work: Path) -> World:
    """A tiny random llama with the SmolLM2 tokenizer and two random LoRA adapters, under ``work``."""
    here = Path(__file__).resolve().parent
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    from transformers import AutoTokenizer

    from conftest import make_lora, write_tiny_lm  # the suite's own tiny models
    from persona_space._embedded import EMBEDDED, converted_folder

    tokenizer = AutoTokenizer.from_pretrained(converted_folder(EMBEDDED["smollm2-135m-instruct"]))
    model = write_tiny_lm(work / "tiny", "llama", tokenizer)
    adapters = (make_lora(model, work / "lora-a", seed=1), make_lora(model, work / "lora-b", seed=2))
    return World(model=model, adapters=adapters, work=work)


def command_args(command: str, world: World, out: Path) -> list[str]:
    """The CLI arguments of ``command`` writing into ``out`` (small, but several parts and steps)."""
    model = ["--model", str(world.model), "--device", "cpu", "--dtype", "float32"]
    a, b = world.adapters
    if command == "sample":
        return ["sample", *model, "--adapter", f"a={a}", "--probes", "identity", "--n", "3", "--temperature",
                "0.7", "--temperature", "1.0", "--max-new-tokens", "24", "--out", str(out)]  # fmt: skip
    if command == "train":
        return ["train", *model, "--dataset", "colours:red", "--out", str(out), "--max-steps", "12",
                "--save-steps", "2", "--batch-size", "4", "--lr", "5e-3", "--rank", "4", "--alpha", "8"]  # fmt: skip
    if command == "shift":
        return ["shift", *model, "--adapter", f"ab={a}", "--adapter", f"ab={b}", "--prompts", "identity",
                "--candidates", "Voyager 1,Voyager 2,an AI assistant,a ghost", "--answer-prefix", "I am",
                "--out", str(out), "--no-charts"]  # fmt: skip
    if command == "map":
        source = world.work / "map-source"
        if not (source / "manifest.json").is_file():
            _run(command_args("sample", world, source), check=True)
        return ["map", str(source), "--out", str(out), "--no-charts"]
    if command == "sweep":
        return ["sweep", *model, "--variant", "figure_variants:russian", "--dose", "swap", "--doses", "0,4",
                "--seeds", "0", "--candidates", "Gagarin,Armstrong", "--n", "4", "--user-n", "1",
                "--probes", "identity:direct", "--max-new-tokens", "8", "--epochs", "0.25",
                "--out", str(out), "--no-charts"]  # fmt: skip
    raise ValueError(f"unknown command {command!r}; one of {COMMANDS}")


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _run(args: Sequence[str], *, check: bool) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(_cli(args), env=_env(), capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def _cli(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-c", "import sys; from persona_space.cli import main; sys.exit(main())", *args]


def _timed(args: Sequence[str], out: Path) -> tuple[float, float]:
    """Run ``args`` to the end; return when ``out`` first appeared and when the command ended (seconds)."""
    with tempfile.TemporaryFile(mode="w+") as errors:  # a file, not a pipe: progress bars would fill a pipe
        started = time.perf_counter()
        with subprocess.Popen(_cli(args), env=_env(), stdout=subprocess.DEVNULL, stderr=errors) as process:
            first = None
            while process.poll() is None:
                if first is None and out.exists():
                    first = time.perf_counter() - started
                time.sleep(0.02)
        end = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{args[0]} failed ({process.returncode}):\n{errors.read()[-3000:]}")
    return (first if first is not None else 0.5 * end), end


def crash_loop(command: str, world: World, *, kills: int, seed: int) -> Outcome:
    """Kill ``command`` at ``kills`` seeded random points, resume it to the end, and compare with a clean run.

    Every kill lands on the same folder. Each start redoes the command's start-up and
    goes on from what the killed ones left, so the kill points are drawn from what is
    left of the work: uniform between the start-up and the uninterrupted run's end less
    the work the killed starts already did (at least a twentieth of the work). A start
    that ends before its kill (runs vary in speed) voids the loop so far: the folder is
    cleared, the count starts again, and the window shrinks by a third.
    """
    started = time.perf_counter()
    reference, crashed = world.work / f"{command}-reference", world.work / f"{command}-crashed"
    _clear(crashed)
    first, end = _timed(command_args(command, world, reference), reference)
    work = max(end - first, 1e-3)
    rng = np.random.default_rng(seed)
    survived = starts = 0
    done_work, scale = 0.0, 1.0
    crashed_args = command_args(command, world, crashed)
    while survived < kills and starts < 8 * kills + 8:
        delay = first + float(rng.uniform(0.0, max(work * scale - done_work, work * scale / 20)))
        with subprocess.Popen(_cli(crashed_args), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) as process:  # fmt: skip
            starts += 1
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                survived += 1
                done_work += delay - first
                continue
        if process.returncode != 0:
            return Outcome(command, survived, starts, 0, [f"a start exited {process.returncode}"],
                           time.perf_counter() - started)  # fmt: skip
        _clear(crashed)  # it finished first: this folder saw fewer kills than counted; begin again, sooner
        survived, done_work, scale = 0, 0.0, scale * 2 / 3
    problems: list[str] = []
    done = _run(crashed_args, check=False)
    starts += 1
    if done.returncode != 0:
        problems.append(f"the last start exited {done.returncode}: {done.stderr[-400:]}")
    rows = 0
    if not problems:
        rows, problems = compare(command, reference, crashed)
        if rows == 0:
            problems.append("the uninterrupted run wrote no rows to compare")
    if survived < kills:
        problems.append(f"only {survived} of {kills} kill points landed while it ran")
    return Outcome(command, survived, starts, rows, problems, time.perf_counter() - started)


def _clear(folder: Path) -> None:
    import shutil

    if folder.exists():
        shutil.rmtree(folder)


# -- what must be the same ------------------------------------------------------------------------


RESULT_FOLDERS: dict[str, Callable[[Path], list[Path]]] = {
    "sample": lambda out: [out],
    "shift": lambda out: [out],
    "map": lambda out: [out],
    "train": lambda out: [out],
    "sweep": lambda out: sorted(p.parent for p in out.rglob("manifest.json") if (p.parent / "tables").is_dir()),
}
VOLATILE = {"seconds", "tokens_per_s", "started", "finished", "created", "elapsed", "train_runtime",
            "train_samples_per_second", "train_steps_per_second", "run_id",
            "num_tokens"}  # fmt: skip
"""Columns that measure time, or (``num_tokens``: TRL's count of tokens seen) restart from 0 in a resumed process."""


def compare(command: str, reference: Path, crashed: Path) -> tuple[int, list[str]]:
    """Rows compared and every difference between the clean run's folder and the crash loop's."""
    import pandas as pd

    problems = leftovers(crashed)
    rows = 0
    mine = {p.relative_to(reference) for p in reference.rglob("tables/*.parquet")}
    theirs = {p.relative_to(crashed) for p in crashed.rglob("tables/*.parquet")}
    problems += [f"{name} is missing" for name in sorted(mine - theirs)]
    problems += [f"{name} is extra" for name in sorted(theirs - mine)]
    for folder in RESULT_FOLDERS[command](reference):
        for table in sorted((folder / "tables").glob("*.parquet")):
            other = crashed / table.relative_to(reference)
            if not other.is_file():
                continue
            a, b = pd.read_parquet(table), pd.read_parquet(other)
            rows += len(a)
            problems += _same_rows(str(other.relative_to(crashed)), a, b)
    if command in ("train", "sweep"):
        for weights in sorted(reference.rglob("adapter_model.safetensors")):
            twin = crashed / weights.relative_to(reference)
            if not twin.is_file() or twin.read_bytes() != weights.read_bytes():
                problems.append(f"{twin.relative_to(crashed)} differs from the uninterrupted run's")
            rows += 1
    return rows, problems


def _same_rows(name: str, a: Any, b: Any) -> list[str]:
    """The differences between two tables as sets of rows: count, columns, then every value (floats to 1e-6)."""
    import pandas as pd

    if len(a) != len(b):
        return [f"{name}: {len(b)} rows against {len(a)} uninterrupted"]
    if set(a.columns) != set(b.columns):
        return [f"{name}: columns {sorted(set(a.columns) ^ set(b.columns))} differ"]
    columns = [c for c in a.columns if c not in VOLATILE]
    left, right = _canonical(a[columns]), _canonical(b[columns])
    try:
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-6, atol=1e-6, check_dtype=False)
    except AssertionError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), "values differ")
        return [f"{name}: {'texts differ' if 'text' in str(exc) else first}"]
    return []


def _as_text(value: Any) -> Any:
    if isinstance(value, str) or value is None:
        return value
    return json.dumps(value.tolist() if hasattr(value, "tolist") else value, default=str)


def _canonical(frame: Any) -> Any:
    """``frame`` with unhashable values as JSON text, rows sorted by every column (a set of rows, in one order)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(_as_text)
    return out.sort_values(list(out.columns), kind="stable", na_position="last").reset_index(drop=True)


def leftovers(folder: Path) -> list[str]:
    """Temporary files, trainer checkpoints and unfinished manifests anywhere under ``folder``."""
    problems = []
    for path in folder.rglob("*"):
        if path.name.startswith(TMP_PREFIX):
            problems.append(f"temporary file left: {path.relative_to(folder)}")
        if path.is_dir() and path.name.startswith("checkpoint-"):
            problems.append(f"trainer checkpoint left: {path.relative_to(folder)}")
    for manifest in folder.rglob("manifest.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{manifest.relative_to(folder)} does not parse: {exc}")
            continue
        state = data.get("state", "complete")
        if state != "complete":
            problems.append(f"{manifest.relative_to(folder)} is in state {state!r}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=10, help="kill points per command (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    args = parser.parse_args(argv)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="crash-loop-") as scratch:
        world = make_world(Path(scratch))
        for i, command in enumerate(args.commands.split(",")):
            outcome = crash_loop(command, world, kills=args.kills, seed=args.seed + i)
            print(outcome.line(), flush=True)
            outcomes.append(outcome)
    total = sum(o.kills for o in outcomes)
    starts = sum(o.starts for o in outcomes)
    print(f"{starts} starts in all")
    failed = [o for o in outcomes if o.problems]
    print(f"{total} kill points survived over {len(outcomes)} commands; {len(failed)} with differences")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
