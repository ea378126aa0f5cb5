"""RFC 3339 timestamps for status fields, in pure arithmetic (the core and the API import no `datetime`).

`rfc3339(epoch)` writes UTC with a 'Z' ("2026-12-02T10:55:13Z", microseconds when the time has a
fraction); `epoch_seconds(value)` reads such a string (any offset) and, for state written by older
operators, a plain number of epoch seconds.
"""

from __future__ import annotations

import math
import re

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def rfc3339(epoch: float) -> str:
    """`epoch` seconds as RFC 3339 UTC: seconds, plus microseconds when the time has a fraction."""
    micros = round(epoch * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    days, rest = divmod(seconds, 86_400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction:06d}Z" if fraction else f"{text}Z"


def epoch_seconds(value: object) -> float | None:
    """An RFC 3339 string or a finite number of epoch seconds (legacy state) as epoch seconds; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    zone = match.group(8)
    offset = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    whole = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset
    fraction = match.group(7)
    if not fraction:
        return float(whole)
    return (whole * 1_000_000 + round(float(fraction) * 1_000_000)) / 1_000_000
