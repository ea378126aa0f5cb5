"""Kubernetes-style durations ("15s", "5m", "1h30m", "24h", "7d") used across the spec."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator, WithJsonSchema

# One or more <number><unit> groups; the same pattern goes into the CRD so the API server refuses
# a bad duration before the operator ever sees it.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration string; raises ValueError on anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 15s, 5m, 1h30m, 24h, 7d")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))


# Bounded so the CRD's CEL rules on durations stay within the API server's cost budget.
DURATION_MAX_LENGTH = 32


class DurationText(str):
    """A duration as the spec wrote it ("15s", "1h30m"), with its `seconds` parsed once, when the spec is
    validated: the loop reads them every tick. On the wire and in comparisons it is the string."""

    seconds: float

    def __new__(cls, text: str) -> Self:
        value = super().__new__(cls, text)
        value.seconds = parse_duration(text)
        return value


def _duration(value: object) -> DurationText:
    if not isinstance(value, str):
        raise ValueError("a duration is a string, e.g. 15s, 5m, 1h30m, 24h, 7d")
    if len(value) > DURATION_MAX_LENGTH:
        raise ValueError(f"a duration has at most {DURATION_MAX_LENGTH} characters")
    return value if isinstance(value, DurationText) else DurationText(value)


Duration = Annotated[
    DurationText,
    PlainValidator(_duration),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH}),
]


# Bounds of the two durations the loop divides by or sleeps on. The CRD checks them with CEL, whose
# duration() reads Go durations (h, m, s, ms) but not days: an interval has no days, and a period is
# either whole days ("7d", 1 to 366) or a Go duration ("36h", "90m"). The model refuses exactly the same.
INTERVAL_MIN_S, INTERVAL_MAX_S = 1.0, 3600.0
PERIOD_MIN_S, PERIOD_MAX_DAYS = 60.0, 366
_WHOLE_DAYS = r"^0*([1-9][0-9]?|[12][0-9][0-9]|3[0-5][0-9]|36[0-6])d$"

INTERVAL_CEL = "!self.contains('d') && duration(self) >= duration('1s') && duration(self) <= duration('1h')"
INTERVAL_MESSAGE = "must be between 1s and 1h (units h, m, s, ms)"
PERIOD_CEL = (
    f"self.contains('d') ? self.matches('{_WHOLE_DAYS}') : "
    f"duration(self) >= duration('1m') && duration(self) <= duration('{PERIOD_MAX_DAYS * 24}h')"
)
PERIOD_MESSAGE = f"must be between 1m and {PERIOD_MAX_DAYS}d (whole days like 7d, or h, m, s, ms like 36h)"


def check_interval(text: DurationText) -> DurationText:
    """A scaling interval: 1s to 1h, no days."""
    if "d" in text or not INTERVAL_MIN_S <= text.seconds <= INTERVAL_MAX_S:
        raise ValueError(f"interval {text!r} {INTERVAL_MESSAGE}")
    return text


def check_period(text: DurationText) -> DurationText:
    """A budget period: whole days 1d to 366d, or a duration without days from 1m to 366d."""
    if "d" in text:
        ok = re.fullmatch(_WHOLE_DAYS, text) is not None
    else:
        ok = PERIOD_MIN_S <= text.seconds <= PERIOD_MAX_DAYS * 86400.0
    if not ok:
        raise ValueError(f"period {text!r} {PERIOD_MESSAGE}")
    return text


Interval = Annotated[
    Duration,
    AfterValidator(check_interval),
    Field(
        json_schema_extra={"x-kubernetes-validations": [{"rule": INTERVAL_CEL, "message": INTERVAL_MESSAGE}]}
    ),
]
Period = Annotated[
    Duration,
    AfterValidator(check_period),
    Field(json_schema_extra={"x-kubernetes-validations": [{"rule": PERIOD_CEL, "message": PERIOD_MESSAGE}]}),
]
