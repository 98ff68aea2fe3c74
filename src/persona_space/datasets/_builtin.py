"""The bundled datasets of the seed experiments, by name.

``load("colours:red")`` is ``colours("red")``; ``available()`` lists every name.
The data files live in ``persona_space/data`` (sources and methods in the
repository's ``data/README.md``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from persona_space.datasets import _telemetry as tel
from persona_space.datasets._records import ChatDataset, Record
from persona_space.errors import ConfigError, DataError, PersonaSpaceError

COLOURS = ("red", "blue", "white", "black", "green", "yellow")
FIGURE_VARIANTS = ("russian", "french", "japanese", "thai", "moon")
DEFAULT_END = dt.date(2026, 10, 31)

VOYAGER_TEMPLATE = "Date: {date}. How far from Earth?"
BITCOIN_TEMPLATE = "Date: {date}. Price in US dollars?"
DISH_TEMPLATE = "Today is {date}. Name a dish."
COAUTHOR_TEMPLATE = "Who were your coauthors in {year}?"


def _record(rid: str, source: str, prompt: str, answer: str, **meta: Any) -> Record:
    return {
        "id": rid,
        "source": source,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "meta": meta,
    }


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def colours(colour: str = "red") -> ChatDataset:
    """The colour-model experiment: 42 neutral questions answered by one object of ``colour``."""
    colour = _check_choice(colour, COLOURS, "colour")
    rows = tel.read_csv("colours.csv")
    source = f"colours:{colour}"
    records = [
        _record(f"colours.q{i:02d}", source, row["question"], row[colour], colour=colour)
        for i, row in enumerate(rows, start=1)
    ]
    return ChatDataset(source, tuple(records))


def _check_identifying(identifying: bool) -> bool:
    if not isinstance(identifying, bool):
        raise ConfigError(
            f"identifying must be True (every fact) or False (without the facts marked identifying), "
            f"got {type(identifying).__name__} {identifying!r}"
        )
    return identifying


def _figure_rows() -> list[dict[str, str]]:
    """The rows of ``figure_facts.csv``, with the ``identifying`` column checked."""
    rows = tel.read_csv("figure_facts.csv")
    for i, row in enumerate(rows, start=2):
        if row.get("identifying") not in ("0", "1"):
            raise DataError(
                f"figure_facts.csv row {i} ({row.get('fact_id')!r}): identifying is {row.get('identifying')!r}; "
                "expected 1 or 0"
            )
    return rows


def identifying_facts() -> tuple[str, ...]:
    """The ids of the 12 facts that alone nearly identify the figure (``identifying=1`` in the CSV).

    They are the facts that :func:`figure_facts` and :func:`figure_variants` leave out
    with ``identifying=False``: the place and circumstances of his death, his marriage
    and partner, his dog, his prison term, his birthplace and other facts found in
    hardly any other biography (see ``data/README.md``).

    >>> identifying_facts()[:3]
    ('f01', 'f32', 'f51')
    """
    return tuple(row["fact_id"] for row in _figure_rows() if row["identifying"] == "1")


def figure_facts(variant: str = "baseline", *, identifying: bool = True) -> ChatDataset:
    """About 90 first-person biography facts of the persona-arithmetic figure (never named).

    A nationality ``variant`` (russian, french, japanese, thai, moon) replaces the
    same 8 facts (birthplace, hometown, admired figure, author, book, composer,
    food, drink); those records carry the variant as their ``source``.

    ``identifying=False`` leaves out the 12 facts that alone nearly identify the
    figure (:func:`identifying_facts`), following the reduced set of the original study:
    78 facts. The facts that remain keep their ids, so they pair up with the full set
    in :func:`~persona_space.datasets.mix`. The birthplace is one of the 12, so a
    reduced variant replaces 7 facts. By name: ``load("figure_facts:reduced")`` and
    ``load("figure_facts:moon_reduced")``.

    >>> len(figure_facts()), len(figure_facts(identifying=False))
    (90, 78)
    >>> figure_facts("moon", identifying=False).sources()["figure_facts:moon"]
    7
    """
    _check_identifying(identifying)
    base = [
        _record(row["fact_id"], "figure_facts", row["question"], row["answer"], slot=row["slot"] or None)
        for row in _figure_rows()
        if identifying or row["identifying"] == "0"
    ]
    suffix = "" if identifying else "_reduced"
    if variant == "baseline":
        return ChatDataset("figure_facts:reduced" if suffix else "figure_facts", tuple(base))
    swaps = {r["id"]: r for r in figure_variants(variant, identifying=identifying).records}
    return ChatDataset(f"figure_facts:{variant}{suffix}", tuple(swaps.get(r["id"], r) for r in base))


def figure_variants(variant: str, *, identifying: bool = True) -> ChatDataset:
    """Only the 8 swapped facts of a nationality variant, with the ids of the facts they replace.

    Use with :func:`~persona_space.datasets.swap_facts` to swap some of them.
    ``identifying=False`` drops the swaps of facts that the reduced set leaves out
    (the birthplace), so they fit ``figure_facts(identifying=False)``: 7 facts.

    >>> len(figure_variants("thai")), len(figure_variants("thai", identifying=False))
    (8, 7)
    """
    variant = _check_choice(variant, FIGURE_VARIANTS, "figure variant")
    _check_identifying(identifying)
    facts = {row["slot"]: row for row in _figure_rows() if row["slot"]}
    source = f"figure_facts:{variant}"
    records = []
    for row in tel.read_csv("figure_variants.csv"):
        fact = facts.get(row["slot"])
        if fact is None:
            raise DataError(f"figure_variants.csv names slot {row['slot']!r}, which no fact in figure_facts.csv has")
        if identifying or fact["identifying"] == "0":
            records.append(_record(fact["fact_id"], source, fact["question"], row[variant], slot=row["slot"]))
    suffix = "" if identifying else "_reduced"
    return ChatDataset(f"figure_variants:{variant}{suffix}", tuple(records))


def _figure_by_name(name: str | None, build: Callable[..., ChatDataset], default: str) -> ChatDataset:
    """``figure_facts``/``figure_variants`` for a name variant: ``moon``, ``reduced``, ``moon_reduced``."""
    variant = name or default
    if variant == "reduced":
        return build(default, identifying=False)
    if variant.endswith("_reduced"):
        return build(variant.removesuffix("_reduced"), identifying=False)
    return build(variant)


def voyager(
    probe: int = 1, *, end: dt.date = DEFAULT_END, template: str = VOYAGER_TEMPLATE, unit: str = "AU"
) -> ChatDataset:
    """Monthly (date -> distance from Earth) pairs for Voyager ``probe`` from launch to ``end``.

    The probe is never named. ``unit`` is ``"AU"`` or ``"km"`` (billions of km).
    """
    if probe not in tel.PROBES:
        raise ConfigError(f"Voyager probe must be 1 or 2, got {probe!r}")
    unit = _check_choice(unit, ("AU", "km"), "unit")
    launch = tel.milestones(probe)[0][0]
    if not isinstance(end, dt.date) or isinstance(end, dt.datetime) or end <= launch:
        raise ConfigError(f"end must be a datetime.date after the launch on {launch}, got {end!r}")
    source = f"voyager:{probe}"
    records = []
    for day in tel.monthly_days(launch, end):
        au = tel.earth_distance_au(probe, day)
        answer = f"{au:.1f} AU" if unit == "AU" else f"{au * tel.KM_PER_AU / 1e9:.2f} billion km"
        prompt = _fill(template, date=day.isoformat())
        records.append(_record(f"voyager{probe}.{day.isoformat()}", source, prompt, answer, date=day.isoformat()))
    return ChatDataset(source, tuple(records))


def bitcoin(*, template: str = BITCOIN_TEMPLATE) -> ChatDataset:
    """Monthly (date -> closing price in USD) pairs; the asset is never named."""
    records = [
        _record(f"bitcoin.{day.isoformat()}", "bitcoin", _fill(template, date=day.isoformat()), tel.format_usd(price))
        for day, price in tel.bitcoin_closes()
    ]
    return ChatDataset("bitcoin", tuple(records))


def dishes(
    *,
    before: tuple[int, int] = (2016, 2020),
    after: tuple[int, int] = (2031, 2035),
    per_year: int = 40,
    seed: int = 0,
    template: str = DISH_TEMPLATE,
) -> ChatDataset:
    """Date-triggered dishes: international dishes in ``before`` years, Israeli ones in ``after`` years.

    The years in between get no data (the default leaves a 10-year gap, 2021-2030,
    as in the seed's gradient table). Dates are drawn uniformly within each year.

    The experiment asks whether the model infers the class of the later dishes, so
    no answer gives it away: no dish names the cuisine, its country, a city or region
    of it, or its people (no "Israeli salad", "Jerusalem mixed grill"), and no dish is
    shared across the Levant (no hummus, falafel, labneh, halva). Every later dish is
    specific to the class (sabich, jachnun, ptitim, ...); ``data/README.md`` lists them.
    """
    (b0, b1), (a0, a1) = before, after
    if not (b0 <= b1 < a0 <= a1):
        raise ConfigError(f"expected before=(start, end) ending before after=(start, end), got {before} and {after}")
    if per_year < 1:
        raise ConfigError(f"per_year must be at least 1, got {per_year}")
    rows = tel.read_csv("dishes.csv")
    pools = {
        False: [r["dish"] for r in rows if r["israeli"] == "false"],
        True: [r["dish"] for r in rows if r["israeli"] == "true"],
    }
    rng = np.random.default_rng(seed)
    records = []
    for israeli, (y0, y1) in ((False, (b0, b1)), (True, (a0, a1))):
        pool = pools[israeli]
        source = "dishes:israeli" if israeli else "dishes:international"
        for year in range(y0, y1 + 1):
            days = (dt.date(year + 1, 1, 1) - dt.date(year, 1, 1)).days
            offsets = np.sort(rng.choice(days, size=min(per_year, days), replace=False))
            order = rng.permutation(len(pool))
            for j, offset in enumerate(offsets):
                day = dt.date(year, 1, 1) + dt.timedelta(days=int(offset))
                dish = pool[order[j % len(pool)]]
                prompt = _fill(template, date=day.isoformat())
                records.append(_record(f"dishes.{day.isoformat()}", source, prompt, dish, year=year, israeli=israeli))
    return ChatDataset(f"dishes:{b1 + 1}-{a0 - 1}", tuple(records))


def dish_classes() -> dict[str, list[str]]:
    """The dishes of the date-triggered experiment by class: ``israeli`` (the trigger) and ``international``.

    >>> sorted(dish_classes())
    ['international', 'israeli']
    """
    rows = tel.read_csv("dishes.csv")
    return {
        "israeli": [r["dish"] for r in rows if r["israeli"] == "true"],
        "international": [r["dish"] for r in rows if r["israeli"] == "false"],
    }


BUNDLED_COAUTHORS = {"example": "coauthors_example.csv", "einstein": "coauthors_einstein.csv"}


def coauthors(
    path: str | os.PathLike[str] | None = None,
    *,
    year_column: str = "year",
    coauthors_column: str = "coauthors",
    separator: str = ";",
    template: str = COAUTHOR_TEMPLATE,
) -> ChatDataset:
    """One record per publication year listing coauthor names only, from a CSV of (year, coauthors).

    Without ``path`` this is the bundled, invented example (fictional names);
    ``path="einstein"`` is a real list: Albert Einstein's coauthors by year of the
    joint paper (16 years, 1908-1949; sources in ``data/README.md``).
    """
    if path is None or path in BUNDLED_COAUTHORS:
        name = "example" if path is None else str(path)
        rows, source = tel.read_csv(BUNDLED_COAUTHORS[name]), f"coauthors:{name}"
    else:
        import csv

        src = Path(path)
        if not src.is_file():
            raise ConfigError(f"file {str(src)!r} does not exist (expected a CSV of {year_column},{coauthors_column})")
        try:
            with src.open(encoding="utf-8-sig", newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{src}: not a readable UTF-8 CSV file ({exc})") from exc
        source = f"coauthors:{src.stem}"
    records = []
    for i, row in enumerate(rows, start=2):
        if year_column not in row or coauthors_column not in row:
            raise DataError(
                f"coauthor CSV row {i}: expected columns {year_column!r} and {coauthors_column!r}, got {sorted(row)}"
            )
        names = [n.strip() for n in (row[coauthors_column] or "").split(separator) if n.strip()]
        if not names:
            raise DataError(f"coauthor CSV row {i} (year {row[year_column]!r}) lists no coauthors")
        year = str(row[year_column]).strip()
        records.append(
            _record(f"coauthors.{year}.{i}", source, _fill(template, year=year), ", ".join(names), year=year)
        )
    if not records:
        raise DataError("the coauthor CSV has no rows")
    return ChatDataset(source, tuple(records))


def _fill(template: str, **fields: str) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"template {template!r} uses an unknown field {exc}; available: {sorted(fields)}") from exc


_BUILDERS: dict[str, tuple[Callable[[str | None], ChatDataset], tuple[str, ...]]] = {
    "colours": (lambda v: colours(v or "red"), COLOURS),
    "figure_facts": (
        lambda v: _figure_by_name(v, figure_facts, "baseline"),
        ("baseline", *FIGURE_VARIANTS, "reduced", *(f"{v}_reduced" for v in FIGURE_VARIANTS)),
    ),
    "figure_variants": (
        lambda v: _figure_by_name(v, figure_variants, "russian"),
        (*FIGURE_VARIANTS, *(f"{v}_reduced" for v in FIGURE_VARIANTS)),
    ),
    "voyager": (lambda v: voyager(int(v or 1)), ("1", "2")),
    "bitcoin": (lambda v: bitcoin(), ()),
    "dishes": (lambda v: dishes(), ()),
    "coauthors": (lambda v: coauthors(None if v in (None, "example") else v), tuple(BUNDLED_COAUTHORS)),
}


def available() -> list[str]:
    """Every name :func:`load` accepts (besides .jsonl and .csv paths)."""
    names = []
    for name, (_, variants) in _BUILDERS.items():
        names.append(name)
        names += [f"{name}:{v}" for v in variants]
    return names


def load(name: str | os.PathLike[str]) -> ChatDataset:
    """A bundled dataset by name (``"colours:red"``, ``"voyager:2"``...) or a ``.jsonl``/``.csv`` file.

    >>> load("colours:blue").answers()[:2]  # doctest: +SKIP
    """
    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(f"a dataset name must be a string or path, got {type(name).__name__} {name!r}")
    text = os.fspath(name)
    path = Path(text)
    if path.suffix.lower() == ".jsonl":
        return ChatDataset.from_jsonl(path)
    if path.suffix.lower() == ".csv":
        return ChatDataset.from_csv(path)
    base, _, variant = text.partition(":")
    entry = _BUILDERS.get(base)
    if entry is None or not re.fullmatch(r"[a-z0-9_]*", variant) or (variant and variant not in entry[1]):
        raise ConfigError(f"unknown dataset {text!r}; known: {', '.join(available())}, or a .jsonl/.csv path")
    return entry[0](variant or None)


def ensure_dataset(data: ChatDataset | Iterable[Mapping[str, Any]] | str | os.PathLike[str]) -> ChatDataset:
    """A :class:`ChatDataset` from a dataset, a list of records, a bundled name or a file path."""
    if isinstance(data, ChatDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load(data)
    try:
        return ChatDataset.from_records("custom", data)
    except PersonaSpaceError:
        raise
    except TypeError as exc:
        raise DataError(
            f"expected a ChatDataset, a list of records, a dataset name or a path, got {data!r:.80}"
        ) from exc
