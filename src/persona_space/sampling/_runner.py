"""Turning (probe x condition x temperature x index) into engine requests and rows, with resume."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from persona_space.engine import Backend, Completion, GenerateRequest, row_seed
from persona_space.errors import BackendError, CorruptRunError
from persona_space.store import SCHEMA_VERSION, RunStore

if TYPE_CHECKING:
    from persona_space.adapters import Member
    from persona_space.models import LoadedModel
    from persona_space.probes import ProbeSet
    from persona_space.sampling._spec import SamplingSpec

_FLUSH_SECONDS = 30.0


def run_jobs(
    model: LoadedModel,
    probes: ProbeSet,
    members: Sequence[Member],
    routes: dict[str, str | None],
    spec: SamplingSpec,
    *,
    backend: Backend,
    run_id: str,
    done: pd.DataFrame | None,
    store: RunStore | None,
    chunk_rows: int,
    progress: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Generate every row not in ``done`` on ``backend``; return the full table and timing figures."""
    prompts = {p.id: tuple(model.encode(p.prompt, system_prompt=spec.system_prompt)) for p in probes}
    todo: list[GenerateRequest] = []
    meta: list[dict[str, Any]] = []
    done = _only_run(done, run_id)
    finished = _finished_keys(done, run_id)
    independent = spec.pairing == "independent"
    for member in members:
        cond, adapter = member.label, routes[member.label]
        for probe in probes:
            for temperature in spec.temperatures:
                for index in range(spec.samples_at(temperature)):
                    seed = row_seed(spec.seed, probe.id, temperature, index, cond if independent else None)
                    if (cond, probe.id, temperature, index) in finished:
                        continue
                    meta.append(
                        {
                            "run_id": run_id,
                            "condition": member.condition,
                            "adapter": cond,
                            "train_seed": math.nan if member.train_seed is None else float(member.train_seed),
                            "probe_id": probe.id,
                            "group": probe.group,
                            "category": probe.category,
                            "prompt": probe.prompt,
                            "temperature": temperature,
                            "top_p": spec.top_p,
                            "sample_index": index,
                            "seed": seed,
                        }
                    )
                    todo.append(
                        GenerateRequest(
                            key=len(todo),
                            prompt_ids=prompts[probe.id],
                            adapter=adapter,
                            temperature=temperature,
                            top_p=spec.top_p,
                            max_new_tokens=spec.max_new_tokens,
                            seed=seed,
                        )
                    )
    stop_ids = frozenset() if spec.ignore_eos else frozenset(model.end_of_turn_ids)
    total = len(members) * len(probes) * sum(spec.samples_at(t) for t in spec.temperatures)
    writer = _ChunkWriter(store, chunk_rows)
    bar = _progress(total, total - len(todo), progress)
    counts = {"tokens": 0, "rows": 0, "generated": 0}
    started = time.perf_counter()

    def on_tokens(n: int) -> None:
        counts["generated"] += n
        if bar is not None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(
                samples_s=f"{counts['rows'] / elapsed:.1f}",
                tokens_s=f"{counts['generated'] / elapsed:.0f}",
                refresh=False,
            )

    seen: set[int] = set()

    def on_complete(done_job: Completion) -> None:
        if done_job.key in seen:
            raise BackendError(f"backend {backend.name!r} completed request {done_job.key} twice")
        seen.add(done_job.key)
        row = dict(meta[done_job.key])
        row["text"] = model.tokenizer.decode(list(done_job.token_ids), skip_special_tokens=True)
        row["n_tokens"] = len(done_job.token_ids)
        row["finish_reason"] = done_job.finish_reason
        row["schema_version"] = SCHEMA_VERSION
        writer.add(row)
        counts["tokens"] += len(done_job.token_ids)
        counts["rows"] += 1
        if bar is not None:
            bar.update(1)

    try:
        if todo:
            backend.generate(todo, stop_ids=stop_ids, on_complete=on_complete, on_tokens=on_tokens)
            if counts["rows"] != len(todo):
                raise BackendError(
                    f"backend {backend.name!r} completed {counts['rows']} of {len(todo)} requests; "
                    "the rows it did complete are kept, and the same call resumes the rest"
                )
    finally:
        writer.flush()  # whatever finished is kept, even when interrupted
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    new_rows = _frame(writer.rows_written) if writer.rows_written else None
    frames = [f for f in (done, new_rows) if f is not None and not f.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    stats = {
        "seconds": round(elapsed, 3),
        "new_rows": counts["rows"],
        "new_tokens": counts["tokens"],
        "samples_per_s": round(counts["rows"] / elapsed, 3) if elapsed > 0 else None,
        "tokens_per_s": round(counts["tokens"] / elapsed, 3) if elapsed > 0 else None,
    }
    return frame, stats


class _ChunkWriter:
    """Collects finished rows and appends them to the store every ``chunk_rows`` rows or 30 s."""

    def __init__(self, store: RunStore | None, chunk_rows: int) -> None:
        self.store = store
        self.chunk_rows = chunk_rows
        self.pending: list[dict[str, Any]] = []
        self.rows_written: list[dict[str, Any]] = []
        self.last = time.monotonic()

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.chunk_rows or time.monotonic() - self.last > _FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.store is not None:
            self.store.append(_frame(self.pending))
        self.rows_written.extend(self.pending)
        self.pending = []
        self.last = time.monotonic()


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table with stable column types (seeds are unsigned 64-bit in every chunk)."""
    return pd.DataFrame(rows).astype({"seed": "uint64", "train_seed": "float64"})


def _finished_keys(rows: pd.DataFrame | None, run_id: str) -> set[tuple[str, str, float, int]]:
    """(condition, probe, temperature, index) of every stored row of the run."""
    if rows is None or rows.empty:
        return set()
    columns = (rows["adapter"], rows["probe_id"], rows["temperature"].astype(float), rows["sample_index"].astype(int))
    keys = list(zip(*columns, strict=True))
    if len(set(keys)) != len(keys):
        raise CorruptRunError(f"the stored rows of run {run_id} contain duplicates; expected each sample once")
    return set(keys)


def _only_run(done: pd.DataFrame | None, run_id: str) -> pd.DataFrame | None:
    if done is None or done.empty:
        return done
    if "run_id" not in done.columns:
        raise CorruptRunError("the stored sample table has no run_id column; expected a persona_space table")
    other = set(done["run_id"].unique()) - {run_id}
    if other:
        raise CorruptRunError(
            f"the stored sample table holds rows of other runs {sorted(other)}; expected only {run_id}"
        )
    return done


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="sampling", unit="sample", dynamic_ncols=True, mininterval=1.0)
