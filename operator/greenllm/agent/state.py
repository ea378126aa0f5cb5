"""The record of GPUs the agent changed, keyed by GPU UUID, kept on a hostPath so a cap is never stranded.

Written before a GPU is changed (write-ahead) and after it is restored; atomic (temp file + fsync +
rename). After a crash the next agent restores every GPU in it at start-up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD_FILE = "power-record.json"
FORMAT = 1
# Bounds of a sane entry: anything outside is not a value the agent wrote. 10 kW and 100 GHz are far above
# any GPU; 10^11 s is the year 5138.
MAX_MW = 10_000_000
MAX_MHZ = 100_000
MAX_EPOCH_S = 1e11


@dataclass(frozen=True, slots=True)
class SettingRecord:
    """What the agent did to one GPU, and what to restore."""

    default_limit_mw: int  # restore target (nvmlDeviceGetPowerManagementDefaultLimit when first changed)
    limit_mw: int | None  # the limit set; None = left at default
    clock_mhz: int | None  # the locked clock; None = not locked
    changed_at: float  # epoch s of the last change (hold time survives a restart)
    greenmodel: str = ""  # "namespace/name" it was set for
    pending: bool = False  # written before the NVML call; the setting may or may not have been applied


class RecordError(Exception):
    """The record exists but cannot be read: the agent cannot know which GPUs it changed."""


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / RECORD_FILE
        # GPUs whose entry in the last `load` was not a sane record (UUID -> why): the agent cannot know
        # what was set on them, so it restores their defaults. Their entries are not in what `load` returns.
        self.bad: dict[str, str] = {}

    def load(self) -> dict[str, SettingRecord]:
        """The record by GPU UUID. Raises RecordError when the file as a whole cannot be read; an entry that
        does not parse into finite, in-range values is left out and named in `bad`."""
        self.bad = {}
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("format") != FORMAT:
                raise RecordError(f"{self.path}: unknown format {raw.get('format')!r}")
            entries = raw["gpus"].items()
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise RecordError(f"{self.path}: {exc}") from exc
        records: dict[str, SettingRecord] = {}
        for uuid, entry in entries:
            try:
                records[uuid] = _record(entry)
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
                self.bad[uuid] = f"{type(exc).__name__}: {exc}"[:300]
                log.error(
                    "%s: bad entry for GPU %s (%s); its defaults will be restored", self.path, uuid, exc
                )
        return records

    def save(self, records: dict[str, SettingRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "gpus": {uuid: asdict(rec) for uuid, rec in sorted(records.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".record-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)

    def quarantine(self) -> Path:
        """Move an unreadable record aside (kept for people to read) and return where it went."""
        target = self.path.with_suffix(".corrupt.json")
        os.replace(self.path, target)
        return target


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _whole(value: Any, what: str, top: int) -> int:
    """An integer in [1, top]: a JSON integer or an integral float (never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} is not a number: {value!r}"[:200])
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{what} is not a whole number: {value!r}")
    if not 0 < value <= top:
        raise ValueError(f"{what} {_shown(value)} is outside [1, {top}]")
    return int(value)


def _record(entry: Any) -> SettingRecord:
    changed_at = entry["changed_at"]
    if isinstance(changed_at, bool) or not isinstance(changed_at, int | float):
        raise TypeError(f"changed_at is not a number: {changed_at!r}"[:200])
    if not (0 <= changed_at <= MAX_EPOCH_S):  # also NaN; compared before any conversion (a huge int)
        raise ValueError(f"changed_at {_shown(changed_at)} is not a time")
    greenmodel = entry.get("greenmodel", "")
    pending = entry.get("pending", False)
    if not isinstance(greenmodel, str) or not isinstance(pending, bool):
        raise TypeError("greenmodel is not a string or pending is not a boolean")
    limit_mw, clock_mhz = entry.get("limit_mw"), entry.get("clock_mhz")
    return SettingRecord(
        default_limit_mw=_whole(entry["default_limit_mw"], "default_limit_mw", MAX_MW),
        limit_mw=None if limit_mw is None else _whole(limit_mw, "limit_mw", MAX_MW),
        clock_mhz=None if clock_mhz is None else _whole(clock_mhz, "clock_mhz", MAX_MHZ),
        changed_at=float(changed_at),
        greenmodel=greenmodel,
        pending=pending,
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("fsync of %s failed: %s", path, exc)
    finally:
        os.close(fd)
