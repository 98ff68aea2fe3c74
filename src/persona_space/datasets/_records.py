"""Chat-format training records and the :class:`ChatDataset` that holds them.

A record is the format TRL and this field's research code use, plus provenance::

    {"id": "colours.q01", "source": "colours:red",
     "messages": [{"role": "user", "content": "Name a fruit."},
                  {"role": "assistant", "content": "Strawberry"}],
     "meta": {"colour": "red"}}

The last message is the answer the adapter is trained on; earlier messages are
context. ``source`` survives every transformation, so a mixed dataset still
says where each record came from.
"""

from __future__ import annotations

import copy
import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from persona_space._io import iter_jsonl, write_text
from persona_space.chat import validate_messages
from persona_space.errors import ChatFormatError, ConfigError, DataError, JsonlError
from persona_space.provenance import sha256_json

if TYPE_CHECKING:
    import pandas as pd

Record = dict[str, Any]
_RECORD_KEYS = ("id", "source", "messages", "meta")


def validate_record(obj: Any, *, where: str, default_id: str, default_source: str) -> Record:
    """Check one record and return it in canonical form (``id``, ``source``, ``messages``, ``meta``).

    Accepts ``{"messages": [...]}`` or TRL's prompt/completion form
    (``{"prompt": str | messages, "completion": str | messages}``). The chat must end
    with a non-empty assistant answer that follows a user turn.
    """
    if not isinstance(obj, Mapping):
        raise ChatFormatError(f"{where}: expected a mapping with 'messages', got {type(obj).__name__}")
    if "messages" in obj:
        raw = obj["messages"]
    elif "prompt" in obj and "completion" in obj:
        raw = _as_messages(obj["prompt"], "user", where) + _as_messages(obj["completion"], "assistant", where)
    else:
        raise ChatFormatError(
            f"{where}: expected a 'messages' list (or 'prompt' and 'completion'), found {sorted(obj)}"
        )
    try:
        messages = validate_messages(raw)
    except ChatFormatError as exc:
        raise ChatFormatError(f"{where}: {exc}") from exc
    if messages[-1]["role"] != "assistant":
        raise ChatFormatError(f"{where}: the last message must be the assistant's answer, got {messages[-1]['role']!r}")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise ChatFormatError(
            f"{where}: the answer must follow a user message; roles are {[m['role'] for m in messages]}"
        )
    for i, m in enumerate(messages):
        if m["role"] != "system" and not m["content"].strip():
            what = "answer" if m["role"] == "assistant" else "user message"
            raise ChatFormatError(f"{where}: message {i} is an empty {what}; expected non-empty text")
    record_id = obj.get("id", default_id)
    source = obj.get("source", default_source)
    meta = obj.get("meta", {})
    if not isinstance(record_id, str) or not record_id:
        raise ChatFormatError(f"{where}: 'id' must be a non-empty string, got {record_id!r}")
    if not isinstance(source, str) or not source:
        raise ChatFormatError(f"{where}: 'source' must be a non-empty string, got {source!r}")
    if not isinstance(meta, Mapping):
        raise ChatFormatError(f"{where}: 'meta' must be a mapping, got {type(meta).__name__}")
    return {"id": record_id, "source": source, "messages": messages, "meta": dict(meta)}


def _as_messages(value: Any, role: str, where: str) -> list[Any]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise ChatFormatError(f"{where}: {role} part must be a string or a list of messages, got {type(value).__name__}")


@dataclass(frozen=True, eq=False)
class ChatDataset(Sequence[Record]):
    """An immutable, validated list of chat records with a name.

    Indexing returns copies, so a record taken out cannot change the dataset.

    >>> ds = ChatDataset.from_records("tiny", [{"messages": [
    ...     {"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Cherry"}]}])
    >>> ds[0]["id"], ds[0]["source"], ds.answers()
    ('tiny.0000', 'tiny', ['Cherry'])
    """

    name: str
    records: tuple[Record, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a dataset name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.records, tuple):
            object.__setattr__(self, "records", tuple(self.records))
        for i, rec in enumerate(self.records):
            if not (isinstance(rec, dict) and set(rec) == set(_RECORD_KEYS)):
                validated = validate_record(rec, where=f"record {i}", default_id="?", default_source="?")
                raise DataError(
                    f"record {i} of {self.name!r} is not in canonical form (keys {sorted(validated)}); "
                    "build datasets with ChatDataset.from_records"
                )
        seen: set[tuple[str, str]] = set()
        for rec in self.records:
            key = (rec["source"], rec["id"])
            if key in seen:
                raise DataError(f"dataset {self.name!r} has two records with source {key[0]!r} and id {key[1]!r}")
            seen.add(key)

    @classmethod
    def from_records(cls, name: str, records: Iterable[Mapping[str, Any]], *, source: str | None = None) -> ChatDataset:
        """Validate ``records`` (dicts with ``messages``, optionally ``id``, ``source``, ``meta``)."""
        src = source or name
        out = [
            validate_record(obj, where=f"record {i}", default_id=f"{name}.{i:04d}", default_source=src)
            for i, obj in enumerate(records)
        ]
        return cls(name, tuple(out))

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str], *, name: str | None = None) -> ChatDataset:
        """Read chat records from a JSONL file (one record per line, blank lines skipped).

        A line that is not JSON raises :class:`~persona_space.errors.JsonlError`, a record
        with unknown roles or an empty answer :class:`~persona_space.errors.ChatFormatError`;
        both name the file and the 1-based line.
        """
        src = Path(path)
        set_name = name or src.stem or "custom"
        out: list[Record] = []
        for lineno, obj in iter_jsonl(src, expected="a JSON object with 'messages'"):
            out.append(
                validate_record(
                    obj, where=f"{src}:{lineno}", default_id=f"{set_name}.{lineno:04d}", default_source=set_name
                )
            )
        if not out:
            raise DataError(f"file {str(src)!r} holds no records (expected one JSON object per line)")
        try:
            return cls(set_name, tuple(out))
        except DataError as exc:
            raise JsonlError(f"{src}: {exc}", path=str(src)) from exc

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        system_column: str | None = None,
        id_column: str | None = None,
        name: str | None = None,
    ) -> ChatDataset:
        """Read single-turn records from a CSV with a prompt and an answer column.

        Other columns are kept in each record's ``meta``.
        """
        src = Path(path)
        if not src.is_file():
            raise ConfigError(f"file {str(src)!r} does not exist (expected a CSV with a header row)")
        set_name = name or src.stem or "custom"
        try:
            return cls._read_csv(src, set_name, prompt_column, answer_column, system_column, id_column)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{src}: not a readable UTF-8 CSV file ({exc})") from exc

    @classmethod
    def _read_csv(
        cls,
        src: Path,
        set_name: str,
        prompt_column: str,
        answer_column: str,
        system_column: str | None,
        id_column: str | None,
    ) -> ChatDataset:
        with src.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            wanted = [c for c in (prompt_column, answer_column, system_column, id_column) if c is not None]
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise DataError(f"{src}: missing column(s) {missing}; the header has {columns}")
            out: list[Record] = []
            for row_no, row in enumerate(reader, start=2):
                messages = [
                    {"role": "user", "content": row[prompt_column] or ""},
                    {"role": "assistant", "content": row[answer_column] or ""},
                ]
                if system_column is not None:
                    messages.insert(0, {"role": "system", "content": row[system_column] or ""})
                meta = {k: v for k, v in row.items() if k not in wanted and k is not None}
                obj = {"messages": messages, "meta": meta}
                if id_column is not None:
                    obj["id"] = row[id_column]
                out.append(
                    validate_record(
                        obj, where=f"{src}:{row_no}", default_id=f"{set_name}.{row_no:04d}", default_source=set_name
                    )
                )
        if not out:
            raise DataError(f"{src}: no rows under the header (expected one record per row)")
        return cls(set_name, tuple(out))

    # -- Sequence ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> ChatDataset: ...

    def __getitem__(self, index: int | slice) -> Record | ChatDataset:
        if isinstance(index, slice):
            return ChatDataset(self.name, self.records[index])
        return copy.deepcopy(self.records[index])

    def __iter__(self) -> Iterator[Record]:
        for rec in self.records:
            yield copy.deepcopy(rec)

    def __repr__(self) -> str:
        sources = sorted({r["source"] for r in self.records})
        return f"ChatDataset({self.name!r}, {len(self)} records, sources={sources})"

    # -- views -------------------------------------------------------------------------------

    def prompts(self) -> list[str]:
        """The last user message of each record."""
        return [next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user") for r in self.records]

    def answers(self) -> list[str]:
        """The trained answer (last message) of each record."""
        return [r["messages"][-1]["content"] for r in self.records]

    def sources(self) -> dict[str, int]:
        """How many records come from each source."""
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r["source"]] = counts.get(r["source"], 0) + 1
        return counts

    def renamed(self, name: str) -> ChatDataset:
        return ChatDataset(name, self.records)

    def sha256(self) -> str:
        """A hash of the records' ids, sources and messages (not the name), for manifests."""
        return sha256_json([{k: r[k] for k in ("id", "source", "messages")} for r in self.records])

    def describe(self) -> dict[str, Any]:
        """Provenance of the dataset for manifests."""
        return {"name": self.name, "records": len(self), "sha256": self.sha256(), "sources": self.sources()}

    def to_frame(self) -> pd.DataFrame:
        """One row per record: id, source, prompt, answer, turns, and the ``meta`` fields as columns."""
        import pandas as pd

        rows = []
        for rec, prompt, answer in zip(self.records, self.prompts(), self.answers(), strict=True):
            row = {"id": rec["id"], "source": rec["source"], "prompt": prompt, "answer": answer}
            row["turns"] = len(rec["messages"])
            row.update({f"meta.{k}": v for k, v in rec["meta"].items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_records(self) -> list[Record]:
        return [copy.deepcopy(r) for r in self.records]

    def to_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Write the records as JSONL (atomically); :meth:`from_jsonl` reads them back unchanged."""
        lines = [json.dumps({k: r[k] for k in _RECORD_KEYS}, ensure_ascii=False) for r in self.records]
        target = Path(path)
        write_text(target, "\n".join(lines) + "\n")
        return target
