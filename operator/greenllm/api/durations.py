"""Kubernetes-style durations ("15s", "5m", "1h30m", "24h", "7d") used across the spec."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

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


def _check(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, Field(pattern=DURATION_PATTERN), AfterValidator(_check)]
