"""An ordered, immutable set of probes with unique ids: views, filters, paraphrases and files."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from persona_space._io import iter_jsonl, write_text
from persona_space.errors import ConfigError, DataError, JsonlError
from persona_space.probes._paraphrases import _BASE_PROMPTS, PARAPHRASES
from persona_space.probes._probe import Probe, _check_id, _slug


class ProbeSet:
    """An ordered, immutable set of probes with unique ids.

    Index by position (``s[0]``) or by id (``s["identity.what_are_you"]``).
    """

    __slots__ = ("_index", "_name", "_probes")

    _name: str
    _probes: tuple[Probe, ...]
    _index: dict[str, int]

    def __init__(self, name: str, probes: Iterable[Probe]) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a probe set needs a non-empty name, got {name!r}")
        items = tuple(probes)
        if not items:
            raise ConfigError("a probe set needs at least one probe")
        index: dict[str, int] = {}
        for i, probe in enumerate(items):
            if not isinstance(probe, Probe):
                raise DataError(f"probe set {name!r}: item {i} is a {type(probe).__name__}, not a Probe")
            if probe.id in index:
                raise ConfigError(f"probe set {name!r}: duplicate probe id {probe.id!r}")
            index[probe.id] = i
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_probes", items)
        object.__setattr__(self, "_index", index)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"ProbeSet is immutable; cannot set {key!r}")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"ProbeSet is immutable; cannot delete {key!r}")

    def __reduce__(self) -> tuple[type[ProbeSet], tuple[str, tuple[Probe, ...]]]:
        return (ProbeSet, (self._name, self._probes))

    # -- basic protocol -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The set's name (e.g. ``"identity"``)."""
        return self._name

    @property
    def probes(self) -> tuple[Probe, ...]:
        """The probes, in order."""
        return self._probes

    def __len__(self) -> int:
        return len(self._probes)

    def __iter__(self) -> Iterator[Probe]:
        return iter(self._probes)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Probe):
            return item.id in self._index and self._probes[self._index[item.id]] == item
        return isinstance(item, str) and item in self._index

    @overload
    def __getitem__(self, key: int) -> Probe: ...

    @overload
    def __getitem__(self, key: str) -> Probe: ...

    def __getitem__(self, key: int | str) -> Probe:
        if isinstance(key, str):
            if key not in self._index:
                raise ConfigError(self._unknown_id_message(key))
            return self._probes[self._index[key]]
        if isinstance(key, int) and not isinstance(key, bool):
            return self._probes[key]
        raise ConfigError(f"index a probe set by position (int) or probe id (str), got {key!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProbeSet):
            return NotImplemented
        return self._name == other._name and self._probes == other._probes

    def __hash__(self) -> int:
        return hash((self._name, self._probes))

    def __repr__(self) -> str:
        return f"ProbeSet({self._name!r}, {len(self._probes)} probes, {len(self.categories)} categories)"

    def __add__(self, other: object) -> ProbeSet:
        if not isinstance(other, ProbeSet):
            return NotImplemented
        return ProbeSet(f"{self._name}+{other._name}", self._probes + other._probes)

    def _unknown_id_message(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self._index), n=3)
        known = close or list(self._index)[:5]
        more = "" if close or len(self._index) <= 5 else ", ..."
        hint = "close matches" if close else "known ids include"
        return (
            f"unknown probe id {key!r} in probe set {self._name!r}; {hint}: {', '.join(repr(k) for k in known)}{more}"
        )

    # -- views ----------------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        """The probe ids, in order."""
        return tuple(p.id for p in self._probes)

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompt texts, in order."""
        return tuple(p.prompt for p in self._probes)

    @property
    def categories(self) -> tuple[str, ...]:
        """The distinct categories, in order of first appearance."""
        return tuple(dict.fromkeys(p.category for p in self._probes))

    def by_category(self) -> dict[str, ProbeSet]:
        """One sub-set per category (named ``f"{name}:{category}"``), in order of first appearance."""
        return {
            cat: ProbeSet(f"{self._name}:{cat}", [p for p in self._probes if p.category == cat])
            for cat in self.categories
        }

    def filter(
        self,
        categories: str | Iterable[str] | None = None,
        ids: str | Iterable[str] | None = None,
    ) -> ProbeSet:
        """The probes whose category is in ``categories`` and whose id is in ``ids``.

        ``None`` means no restriction on that field. Unknown categories or ids raise
        :class:`~persona_space.errors.ConfigError`, as does an empty result.
        """
        cats = _as_str_tuple(categories, "categories")
        wanted_ids = _as_str_tuple(ids, "ids")
        if cats is not None:
            unknown = [c for c in cats if c not in self.categories]
            if unknown:
                raise ConfigError(
                    f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown} in probe set "
                    f"{self._name!r}; known categories: {list(self.categories)}"
                )
        if wanted_ids is not None:
            for key in wanted_ids:
                if key not in self._index:
                    raise ConfigError(self._unknown_id_message(key))
        kept = [
            p
            for p in self._probes
            if (cats is None or p.category in cats) and (wanted_ids is None or p.id in wanted_ids)
        ]
        if not kept:
            raise ConfigError(
                f"filter(categories={cats}, ids={wanted_ids}) leaves no probes in probe set {self._name!r}"
            )
        return ProbeSet(self._name, kept)

    def base(self) -> ProbeSet:
        """Only the base probes (those whose group is their own id)."""
        kept = [p for p in self._probes if p.is_base]
        if not kept:
            raise ConfigError(f"probe set {self._name!r} holds only paraphrases, no base probes")
        return ProbeSet(self._name, kept)

    def with_paraphrases(self) -> ProbeSet:
        """Each base probe followed by its paraphrases.

        Paraphrases come from :data:`PARAPHRASES` for the built-in identity probes (only
        when the probe's prompt is the built-in one); probes without registered
        paraphrases appear as themselves. Paraphrases already in this set are kept after
        their base. Applying this twice gives the same set.
        """
        groups: dict[str, list[Probe]] = {}
        for p in self._probes:
            groups.setdefault(p.group, []).append(p)
        out: list[Probe] = []
        for group_id, members in groups.items():
            base = next((p for p in members if p.is_base), None)
            if base is not None:
                out.append(base)
                if _BASE_PROMPTS.get(base.id) == base.prompt.strip():
                    for k, text in enumerate(PARAPHRASES.get(base.id, ()), start=1):
                        pid = f"{base.id}.p{k}"
                        if pid not in self._index:
                            out.append(Probe(pid, text, base.category, group_id))
                        else:
                            out.append(self._probes[self._index[pid]])
            emitted = {p.id for p in out}
            out.extend(p for p in members if p.id not in emitted)
        return ProbeSet(self._name if self._name.endswith("+paraphrases") else f"{self._name}+paraphrases", out)

    def after(self, turns: Sequence[str], *, tag: str) -> ProbeSet:
        """Each probe asked at the end of a conversation: ``turns`` first, each answered by the model.

        The new probes keep their question's ``group``, so answers asked alone and asked
        after the conversation pair up by question. Ids get ``.after_<tag>``.

        >>> from persona_space.probes import USER
        >>> USER.after(["It is April 1945. Describe your surroundings."], tag="bunker").ids[0]
        'user.who_am_i.after_bunker'
        """
        _check_id(tag, "tag")
        turns = tuple(turns)
        out = [Probe(f"{p.id}.after_{tag}", p.prompt, p.category, p.group, (*turns, *p.turns)) for p in self._probes]
        return ProbeSet(f"{self._name}+after_{tag}", out)

    # -- serialisation ---------------------------------------------------------------------------

    def to_records(self) -> list[dict[str, Any]]:
        """The probes as plain dicts (see :meth:`Probe.to_dict`)."""
        return [p.to_dict() for p in self._probes]

    def to_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Write one JSON object per probe to ``path`` (atomically); return the path."""
        target = Path(path)
        lines = [json.dumps(rec, ensure_ascii=False) for rec in self.to_records()]
        write_text(target, "\n".join(lines) + "\n")
        return target

    @classmethod
    def from_list(
        cls,
        items: Iterable[str | Mapping[str, Any] | Probe],
        name: str = "custom",
        category: str = "custom",
    ) -> ProbeSet:
        """Build a set from prompt strings, dicts (``prompt`` required) or :class:`Probe` objects.

        Items without an id get ``f"{name}.{i:03d}"`` (``i`` the 0-based position);
        items without a category get ``category``.

        >>> ProbeSet.from_list(["Who are you?", "What are you?"]).ids
        ('custom.000', 'custom.001')
        """
        if isinstance(items, (str, bytes, Mapping)):
            raise DataError(f"from_list expects a list of prompts, dicts or Probes, got {type(items).__name__}")
        prefix = _slug(name)
        probes: list[Probe] = []
        for i, item in enumerate(items):
            if isinstance(item, Probe):
                probes.append(item)
            elif isinstance(item, str):
                probes.append(Probe(f"{prefix}.{i:03d}", item, category))
            elif isinstance(item, Mapping):
                if "prompt" not in item:
                    raise DataError(f"item {i} of the probe list has no 'prompt' key: {dict(item)!r}")
                record = {"id": f"{prefix}.{i:03d}", "category": category, **item}
                probes.append(Probe.from_dict(record))
            else:
                raise DataError(f"item {i} of the probe list is a {type(item).__name__}; expected a str, dict or Probe")
        return cls(name, probes)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str], name: str | None = None) -> ProbeSet:
        """Read a set from a JSONL file: one object per line with ``prompt`` and optionally
        ``id``, ``category`` (default ``"custom"``) and ``group``. Blank lines are skipped.

        The set is named after the file's stem unless ``name`` is given. A line that is
        not a JSON object with a ``prompt`` raises :class:`~persona_space.errors.JsonlError`
        carrying the 1-based line number.
        """
        src = Path(path)
        if not src.is_file():
            raise ConfigError(f"probe file {str(src)!r} does not exist (expected a .jsonl file)")
        set_name = name if name is not None else (src.stem or "custom")
        prefix = _slug(set_name)
        probes: list[Probe] = []
        seen: dict[str, int] = {}
        for lineno, obj in iter_jsonl(src, expected="a JSON object with a 'prompt' key"):

            def fail(what: str, lineno: int = lineno) -> JsonlError:
                return JsonlError(f"{src}:{lineno}: {what}", path=str(src), line=lineno)

            if "prompt" not in obj:
                raise fail(f"expected a 'prompt' key, found only keys {sorted(obj)}")
            record = {"id": f"{prefix}.{len(probes):03d}", "category": "custom", **obj}
            try:
                probe = Probe.from_dict(record)
            except (ConfigError, DataError) as exc:
                raise fail(str(exc)) from exc
            if probe.id in seen:
                raise fail(f"duplicate probe id {probe.id!r} (first on line {seen[probe.id]})")
            seen[probe.id] = lineno
            probes.append(probe)
        if not probes:
            raise DataError(f"probe file {str(src)!r} holds no probes (expected one JSON object per line)")
        return cls(set_name, probes)


def _as_str_tuple(values: str | Iterable[str] | None, what: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return (values,)
    out = tuple(values)
    for v in out:
        if not isinstance(v, str):
            raise ConfigError(f"{what} must be strings, got {v!r}")
    return out
