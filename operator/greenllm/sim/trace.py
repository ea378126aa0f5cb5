"""Request traces: one row per request with its arrival time, prompt tokens and output tokens.

Accepted CSV headers (case-insensitive, any column order; extra columns are ignored):
  time:   TIMESTAMP | timestamp | time | arrival_time | t
  prompt: ContextTokens | input_tokens | prompt_tokens | context_tokens
  output: GeneratedTokens | output_tokens | generated_tokens | completion_tokens
A timestamp is either a number (seconds) or an ISO 8601 date-time ("2023-11-16 18:17:03.9799600"; digits
beyond microseconds are dropped). Rows need not be sorted.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

TIME_COLUMNS = ("timestamp", "time", "arrival_time", "t")
PROMPT_COLUMNS = ("contexttokens", "input_tokens", "prompt_tokens", "context_tokens")
OUTPUT_COLUMNS = ("generatedtokens", "output_tokens", "generated_tokens", "completion_tokens")

DEFAULT_TRACE = "AzureLLMInferenceTrace_code_2023.csv"
SCALE_MODES = ("copies", "shifted")
_FRACTION = re.compile(r"(\.\d{6})\d+")

FloatArray = npt.NDArray[np.float64]


class TraceError(ValueError):
    """A trace that cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival; `arrival_s` counts from `start_epoch` (the first request unless sliced)."""

    name: str
    start_epoch: float
    arrival_s: FloatArray
    prompt_tokens: FloatArray
    output_tokens: FloatArray
    duration_s: float  # the span the simulation covers (at least the last arrival)
    weight: float = 1.0  # requests each row stands for (rate scaling); token arrays are already multiplied

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("trace arrays differ in length")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def total_prompt_tokens(self) -> float:
        return float(self.prompt_tokens.sum())

    @property
    def total_output_tokens(self) -> float:
        return float(self.output_tokens.sum())

    @property
    def total_requests(self) -> float:
        return len(self) * self.weight

    def scaled(self, factor: float) -> Trace:
        """The same trace at `factor` times the request rate (fluid: every request counts `factor` times).

        Time is not compressed: the shape of the load over the trace, bursts included, is kept.
        """
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"rate scale must be a positive number, got {factor}")
        return Trace(
            name=self.name,
            start_epoch=self.start_epoch,
            arrival_s=self.arrival_s,
            prompt_tokens=self.prompt_tokens * factor,
            output_tokens=self.output_tokens * factor,
            duration_s=self.duration_s,
            weight=self.weight * factor,
        )

    def replicated(self, factor: float, mode: str, seed: int = 0) -> Trace:
        """The trace at `factor` times its request rate, as whole requests (weight 1 each).

        `copies`: every request `floor(factor)` times at its own time, and once more with probability
        `factor - floor(factor)`: aligned copies, bursts `factor` times as large. `shifted`: the same number
        of copies, copy j > 0 shifted by its own seeded random offset in [0, duration), wrapping round the
        end: `factor` independent user populations of the same kind, bursts no larger than theirs.
        """
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"rate scale must be a positive number, got {factor}")
        if mode not in SCALE_MODES:
            raise ValueError(f"scale mode must be one of {', '.join(SCALE_MODES)}, got {mode!r}")
        if self.weight != 1.0:
            raise ValueError("replicate an unscaled trace")
        rng = np.random.default_rng(seed)
        whole = math.floor(factor)
        frac = factor - whole
        span = max(self.duration_s, 1e-9)
        times: list[FloatArray] = []
        prompts: list[FloatArray] = []
        outputs: list[FloatArray] = []
        for j in range(whole + (1 if frac > 0 else 0)):
            keep = np.ones(len(self), dtype=bool) if j < whole else rng.random(len(self)) < frac
            arrival = self.arrival_s[keep]
            if mode == "shifted" and j > 0:
                arrival = np.mod(arrival + rng.uniform(0.0, span), span)
            times.append(arrival)
            prompts.append(self.prompt_tokens[keep])
            outputs.append(self.output_tokens[keep])
        t = np.concatenate(times)
        order = np.argsort(t, kind="stable")
        return Trace(
            name=self.name,
            start_epoch=self.start_epoch,
            arrival_s=t[order],
            prompt_tokens=np.concatenate(prompts)[order],
            output_tokens=np.concatenate(outputs)[order],
            duration_s=self.duration_s,
        )

    def repeated(self, times: int) -> Trace:
        """The trace `times` times in a row, each copy one duration after the previous (all but the last
        are warm-up); `start_epoch` moves back so the last copy keeps the trace's own times."""
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        span = self.duration_s
        return Trace(
            name=self.name,
            start_epoch=self.start_epoch - (times - 1) * span,
            arrival_s=np.concatenate([self.arrival_s + i * span for i in range(times)]),
            prompt_tokens=np.tile(self.prompt_tokens, times),
            output_tokens=np.tile(self.output_tokens, times),
            duration_s=times * span,
            weight=self.weight,
        )

    def window(self, start_s: float, duration_s: float | None) -> Trace:
        """Requests arriving in [start_s, start_s + duration_s), re-based so the slice starts at 0."""
        end = math.inf if duration_s is None else start_s + duration_s
        keep = (self.arrival_s >= start_s) & (self.arrival_s < end)
        if not keep.any():
            raise TraceError(f"{self.name}: no request between {start_s:g} s and {end:g} s")
        span = self.duration_s - start_s if duration_s is None else duration_s
        return Trace(
            name=self.name,
            start_epoch=self.start_epoch + start_s,
            arrival_s=self.arrival_s[keep] - start_s,
            prompt_tokens=self.prompt_tokens[keep],
            output_tokens=self.output_tokens[keep],
            duration_s=max(span, float(self.arrival_s[keep][-1] - start_s)),
            weight=self.weight,
        )

    def binned(self, step_s: float, steps: int) -> tuple[FloatArray, FloatArray]:
        """Prompt and output tokens arriving in each step [k*step_s, (k+1)*step_s)."""
        idx = np.minimum((self.arrival_s // step_s).astype(np.int64), steps - 1)
        prompt = np.bincount(idx, weights=self.prompt_tokens, minlength=steps).astype(np.float64)
        output = np.bincount(idx, weights=self.output_tokens, minlength=steps).astype(np.float64)
        return prompt, output


def default_trace_path() -> Path:
    return Path(str(resources.files("greenllm") / "data" / "traces" / DEFAULT_TRACE))


def _column(header: list[str], names: tuple[str, ...], what: str, path: str) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise TraceError(
        f"{path} line 1: header {','.join(header)!r} has no {what} column "
        f"(expected one of {', '.join(names)})"
    )


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(_FRACTION.sub(r"\1", text))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _parse_tokens(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise ValueError("not a non-negative whole number")
    return value


def load_trace(path: Path | str | None = None) -> Trace:
    """Read a trace CSV (the shipped Azure code trace when `path` is None)."""
    file = default_trace_path() if path is None else Path(path)
    shown = str(file)
    try:
        handle = file.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{shown}: cannot open trace: {exc.strerror or exc}") from exc
    times: list[float] = []
    prompts: list[float] = []
    outputs: list[float] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceError(f"{shown}: empty file, expected a CSV header") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"{shown} line 1: {exc}") from exc
        cols = (
            _column(header, TIME_COLUMNS, "timestamp", shown),
            _column(header, PROMPT_COLUMNS, "input-tokens", shown),
            _column(header, OUTPUT_COLUMNS, "output-tokens", shown),
        )
        width = max(cols) + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise TraceError(f"{shown} line {reader.line_num}: {exc}") from exc
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < width:
                raise TraceError(f"{shown} line {line}: {len(row)} fields, expected at least {width}")
            values: list[float] = []
            for col, parse, what in zip(
                cols, (_parse_time, _parse_tokens, _parse_tokens), "tpo", strict=True
            ):
                cell = row[col]
                try:
                    values.append(parse(cell))
                except (ValueError, OverflowError) as exc:
                    kind = "a timestamp" if what == "t" else "a token count"
                    raise TraceError(
                        f"{shown} line {line}: field {header[col].strip()!r}: {cell!r} is not {kind} ({exc})"
                    ) from exc
            times.append(values[0])
            prompts.append(values[1])
            outputs.append(values[2])
    if not times:
        raise TraceError(f"{shown}: no requests after the header")
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    start = float(t[0])
    arrival = t - start
    return Trace(
        name=file.name,
        start_epoch=start,
        arrival_s=arrival,
        prompt_tokens=np.asarray(prompts, dtype=np.float64)[order],
        output_tokens=np.asarray(outputs, dtype=np.float64)[order],
        duration_s=float(arrival[-1]),
    )
