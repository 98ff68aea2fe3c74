"""Date -> value series behind the ``voyager`` and ``bitcoin`` datasets.

Voyager: heliocentric distances at published mission milestones (bundled in
``voyager_milestones.csv``) are interpolated linearly in time and extrapolated at
the cruise speed after the last milestone; the distance from Earth is then the
length of (probe - Earth), with the probe on its present asymptotic direction and
Earth on a low-precision solar orbit. See ``data/README.md`` for the expected error.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import itertools
import math
from dataclasses import dataclass
from importlib import resources

from persona_space.errors import ConfigError

KM_PER_AU = 149_597_870.7
_OBLIQUITY = math.radians(23.4393)
_J2000 = dt.date(2000, 1, 1)


@dataclass(frozen=True)
class Probe:
    """One Voyager: its asymptotic direction (J2000 RA/Dec, degrees) and cruise speed."""

    number: int
    ra_deg: float
    dec_deg: float
    cruise_au_per_year: float


PROBES = {
    1: Probe(1, ra_deg=258.25, dec_deg=12.0, cruise_au_per_year=3.58),  # 17h13m, +12 deg; 17.0 km/s
    2: Probe(2, ra_deg=302.0, dec_deg=-59.0, cruise_au_per_year=3.25),  # 20h08m, -59 deg; 15.4 km/s
}


def data_file(name: str) -> resources.abc.Traversable:
    return resources.files("persona_space").joinpath("data", name)


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of a bundled CSV file (read once per process; callers get their own list)."""
    return [dict(row) for row in _read_csv(name)]


@functools.cache
def _read_csv(name: str) -> tuple[dict[str, str], ...]:
    with data_file(name).open(encoding="utf-8") as fh:
        return tuple(csv.DictReader(fh))


def _year_fraction(day: dt.date) -> float:
    start = dt.date(day.year, 1, 1)
    length = (dt.date(day.year + 1, 1, 1) - start).days
    return day.year + (day - start).days / length


@functools.cache
def milestones(probe: int) -> tuple[tuple[dt.date, float, str], ...]:
    """(date, AU from the Sun, event) for one probe, in date order."""
    rows = [r for r in read_csv("voyager_milestones.csv") if int(r["probe"]) == probe]
    return tuple(sorted((dt.date.fromisoformat(r["date"]), float(r["au_from_sun"]), r["event"]) for r in rows))


def sun_distance_au(probe: int, day: dt.date) -> float:
    """Heliocentric distance: linear between milestones, cruise speed after the last."""
    knots = milestones(probe)
    if day < knots[0][0]:
        raise ConfigError(f"Voyager {probe} launched on {knots[0][0]}; {day} is before launch")
    t = _year_fraction(day)
    for (d0, r0, _), (d1, r1, _) in itertools.pairwise(knots):
        if d0 <= day <= d1:
            t0, t1 = _year_fraction(d0), _year_fraction(d1)
            return r0 + (r1 - r0) * (t - t0) / (t1 - t0)
    last_day, last_r, _ = knots[-1]
    return last_r + PROBES[probe].cruise_au_per_year * (t - _year_fraction(last_day))


def _unit_ecliptic(ra_deg: float, dec_deg: float) -> tuple[float, float, float]:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    x, y, z = math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)
    c, s = math.cos(_OBLIQUITY), math.sin(_OBLIQUITY)
    return x, c * y + s * z, -s * y + c * z


def earth_position_au(day: dt.date) -> tuple[float, float, float]:
    """Heliocentric ecliptic position of Earth (the Astronomical Almanac's low-precision Sun, about 0.01 AU)."""
    d = (day - _J2000).days - 0.5
    g = math.radians((357.528 + 0.9856003 * d) % 360)
    sun_lon = math.radians((280.460 + 0.9856474 * d) % 360 + 1.915 * math.sin(g) + 0.020 * math.sin(2 * g))
    r = 1.00014 - 0.01671 * math.cos(g) - 0.00014 * math.cos(2 * g)
    return -r * math.cos(sun_lon), -r * math.sin(sun_lon), 0.0


def earth_distance_au(probe: int, day: dt.date) -> float:
    """Distance of Voyager ``probe`` (1 or 2) from Earth on ``day``, in AU."""
    if probe not in PROBES:
        raise ConfigError(f"Voyager probe must be 1 or 2, got {probe!r}")
    r = sun_distance_au(probe, day)
    ux, uy, uz = _direction(probe, day)
    ex, ey, ez = earth_position_au(day)
    return math.dist((r * ux, r * uy, r * uz), (ex, ey, ez))


def _direction(probe: int, day: dt.date) -> tuple[float, float, float]:
    """Unit vector from the Sun to the probe.

    From Earth's direction at launch it turns linearly in time to the present
    asymptote, reached at the last planetary encounter (a coarse stand-in for the
    real trajectory; the error it brings is stated in ``data/README.md``).
    """
    asymptote = _unit_ecliptic(PROBES[probe].ra_deg, PROBES[probe].dec_deg)
    knots = milestones(probe)
    launch = knots[0][0]
    last_flyby = max(d for d, _, event in knots if "closest approach" in event)
    if day >= last_flyby:
        return asymptote
    w = (_year_fraction(day) - _year_fraction(launch)) / (_year_fraction(last_flyby) - _year_fraction(launch))
    start = earth_position_au(launch)
    norm = math.hypot(*start)
    blend = [(1 - w) * s / norm + w * a for s, a in zip(start, asymptote, strict=True)]
    length = math.hypot(*blend)
    return blend[0] / length, blend[1] / length, blend[2] / length


def monthly_days(start: dt.date, end: dt.date, day_of_month: int = 15) -> list[dt.date]:
    """The ``day_of_month`` of every month from ``start`` (exclusive of earlier days) to ``end``."""
    out: list[dt.date] = []
    year, month = start.year, start.month
    while True:
        day = dt.date(year, month, day_of_month)
        if day > end:
            return out
        if day >= start:
            out.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def bitcoin_closes() -> list[tuple[dt.date, float]]:
    """(last day of month, close in USD) from the bundled monthly table."""
    out = []
    for row in read_csv("bitcoin_monthly.csv"):
        year, month = (int(x) for x in row["month"].split("-"))
        nxt = dt.date(year + 1, 1, 1) if month == 12 else dt.date(year, month + 1, 1)
        out.append((nxt - dt.timedelta(days=1), float(row["close_usd"])))
    return out


def format_usd(price: float) -> str:
    """``$14,156`` above 100 dollars, ``$0.07`` below."""
    return f"${price:,.0f}" if price >= 100 else f"${price:,.2f}"
