"""Turning (probe x condition x temperature x index) into engine requests and rows, with resume."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from persona_space.engine import Backend, Completion, GenerateRequest, row_seed
from persona_space.errors import BackendError, CorruptRunError
from persona_space.store import SCHEMA_VERSION, RunStore

if TYPE_CHECKING:
    from persona_space.adapters import Member
    from persona_space.models import LoadedModel
    from persona_space.probes import Probe, ProbeSet
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
    """Generate every row not in ``done`` on ``backend``; return the full table and timing figures.

    Conversation probes (with earlier ``turns``) first have their earlier turns answered,
    turn by turn, each answer on its own random stream; their rows carry the whole
    chat as ``transcript`` (JSON).
    """
    prompts = {p.id: tuple(model.encode(p.prompt, system_prompt=spec.system_prompt)) for p in probes if not p.turns}
    stop_ids = frozenset() if spec.ignore_eos else frozenset(model.end_of_turn_ids)
    todo: list[GenerateRequest] = []
    meta: list[dict[str, Any]] = []
    talks: list[tuple[int, Probe, str | None, float, int, str | None]] = []  # conversation rows still to generate
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
                    if probe.turns:
                        talks.append((len(todo), probe, adapter, temperature, index, cond if independent else None))
                    todo.append(
                        GenerateRequest(
                            key=len(todo),
                            prompt_ids=prompts.get(probe.id, ()),
                            adapter=adapter,
                            temperature=temperature,
                            top_p=spec.top_p,
                            max_new_tokens=spec.max_new_tokens,
                            seed=seed,
                        )
                    )
    transcripts: dict[int, list[dict[str, str]]] = {}
    if talks:
        chats = converse(model, backend, talks, spec, stop_ids=stop_ids, progress=progress)
        for key, chat in chats.items():
            todo[key] = replace(todo[key], prompt_ids=tuple(model.encode(chat, system_prompt=spec.system_prompt)))
            transcripts[key] = chat
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
        if done_job.key in transcripts:
            chat = [*transcripts[done_job.key], {"role": "assistant", "content": row["text"]}]
            row["transcript"] = json.dumps(chat, ensure_ascii=False)
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


def converse(
    model: LoadedModel,
    backend: Backend,
    talks: Sequence[tuple[int, Probe, str | None, float, int, str | None]],
    spec: SamplingSpec,
    *,
    stop_ids: frozenset[int],
    progress: bool,
) -> dict[int, list[dict[str, str]]]:
    """The chat before each conversation row's final prompt, its earlier turns answered by the model.

    ``talks`` holds (request key, probe, adapter, temperature, index, condition for
    independent streams). Turn ``k`` of every row is generated in one batch; its random
    stream is keyed by ``probe#turnk``, so paired conditions share it as they do the
    final answer.
    """
    answers: dict[int, list[str]] = {key: [] for key, *_ in talks}
    rounds = max(len(probe.turns) for _, probe, *_ in talks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(p.turns) for _, p, *_ in talks), desc="earlier turns", unit="answer")
    try:
        for k in range(rounds):
            requests: list[GenerateRequest] = []
            keys: list[int] = []
            for key, probe, adapter, temperature, index, condition in talks:
                if k >= len(probe.turns):
                    continue
                chat: list[dict[str, str]] = []
                for turn, answer in zip(probe.turns[:k], answers[key], strict=True):
                    chat += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
                chat.append({"role": "user", "content": probe.turns[k]})
                requests.append(
                    GenerateRequest(
                        key=len(requests),
                        prompt_ids=tuple(model.encode(chat, system_prompt=spec.system_prompt)),
                        adapter=adapter,
                        temperature=temperature,
                        top_p=spec.top_p,
                        max_new_tokens=spec.max_new_tokens,
                        seed=row_seed(spec.seed, f"{probe.id}#turn{k}", temperature, index, condition),
                    )
                )
                keys.append(key)
            texts: dict[int, str] = {}

            def collect(job: Completion, texts: dict[int, str] = texts) -> None:
                texts[job.key] = model.tokenizer.decode(list(job.token_ids), skip_special_tokens=True).strip()
                if bar is not None:
                    bar.update(1)

            backend.generate(requests, stop_ids=stop_ids, on_complete=collect)
            if len(texts) != len(requests):
                raise BackendError(f"backend {backend.name!r} answered {len(texts)} of {len(requests)} earlier turns")
            for j, key in enumerate(keys):
                answers[key].append(texts[j])
    finally:
        if bar is not None:
            bar.close()
    probes = {key: probe for key, probe, *_ in talks}
    return {key: probes[key].messages(answers[key]) for key in answers}


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
