"""status.controllerState: the decision loop's memory (budget period, stability timers, the warm floor's
error budget), kept in the GreenModel so a restarted operator resumes the same period and timers.

Its wire shape only; what the values mean is core.step.LoopState's. Every field is lenient: a value that
does not parse (a hand edit, a newer or older operator) reads as None, and the loop uses its default for
it, so a broken field never stops the loop. Times are written as RFC 3339 and read as RFC 3339 or, as
operators before it wrote them, epoch seconds. The CRD keeps the field opaque (the operator alone reads it).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator
from pydantic.alias_generators import to_camel

from greenllm.api.timestamps import epoch_seconds, rfc3339


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _time_text(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(epoch)


def _history(value: object) -> tuple[tuple[float, int], ...]:
    """(time, replicas) pairs; a malformed pair is dropped, the rest kept."""
    items = value if isinstance(value, list | tuple) else ()
    pairs = []
    for item in items:
        if isinstance(item, list | tuple) and len(item) == 2:
            t, n = epoch_seconds(item[0]), _integer(item[1])
            if t is not None and n is not None:
                pairs.append((t, n))
    return tuple(pairs)


def _peaks(value: object) -> tuple[tuple[float, float, float], ...]:
    """(time, prompt tokens/s, output tokens/s) triples; a malformed one is dropped, the rest kept."""
    items = value if isinstance(value, list | tuple) else ()
    triples = []
    for item in items:
        if isinstance(item, list | tuple) and len(item) == 3:
            t, prompt, output = epoch_seconds(item[0]), _number(item[1]), _number(item[2])
            if t is not None and prompt is not None and output is not None:
                triples.append((t, prompt, output))
    return tuple(triples)


def _history_json(pairs: tuple[tuple[float, int], ...]) -> list[list[Any]]:
    return [[rfc3339(t), n] for t, n in pairs]


def _peaks_json(triples: tuple[tuple[float, float, float], ...]) -> list[list[Any]]:
    return [[rfc3339(t), p, o] for t, p, o in triples]


Number = Annotated[float | None, PlainValidator(_number)]
Integer = Annotated[int | None, PlainValidator(_integer)]
Text = Annotated[str | None, PlainValidator(_text)]
Flag = Annotated[bool | None, PlainValidator(_flag)]
Time = Annotated[float | None, PlainValidator(epoch_seconds), PlainSerializer(_time_text)]
History = Annotated[tuple[tuple[float, int], ...], PlainValidator(_history), PlainSerializer(_history_json)]
Peaks = Annotated[
    tuple[tuple[float, float, float], ...], PlainValidator(_peaks), PlainSerializer(_peaks_json)
]


class ControllerState(BaseModel):
    """One GreenModel's loop memory on the wire (camelCase keys, epoch seconds in Python)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    version: Integer = None
    period_start: Time = None
    energy_kwh: Number = None
    carbon_grams: Number = None
    last_sample_time: Time = None
    last_energy_j: Number = None
    last_power_w: Number = None
    carbon_intensity_g_per_kwh: Number = None
    variant: Text = None
    replicas: Integer = None
    power_limit_w: Number = None
    locked_clock_mhz: Integer = None
    expected_power_w: Number = None
    pending_variant: Text = None
    pending_since: Time = None
    last_scale_up: Time = None
    last_scale_down: Time = None
    history: History = ()
    demand_peaks: Peaks = ()
    allowed_power_w: Number = None
    budget_met: Flag = None
    floor_margin: Number = None
    floor_raised_at: Time = None
    floor_lowered_at: Time = None
    floor_last_attainment: Number = None
    floor_prompt_per_request: Number = None
    floor_seen_at: Time = None
    floor_burst_at_waiting: Number = None  # the fast tier's threshold in force (kept against jitter)
