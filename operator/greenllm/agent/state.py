"""The record of GPUs the agent changed, keyed by GPU UUID, kept on a hostPath so a cap is never stranded.

Written before a GPU is changed (write-ahead) and after it is restored; atomic (temp file + fsync +
rename). After a crash the next agent restores every GPU in it at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD_FILE = "power-record.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class GpuRecord:
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

    def load(self) -> dict[str, GpuRecord]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("format") != FORMAT:
                raise RecordError(f"{self.path}: unknown format {raw.get('format')!r}")
            return {uuid: _record(entry) for uuid, entry in raw["gpus"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RecordError(f"{self.path}: {exc}") from exc

    def save(self, records: dict[str, GpuRecord]) -> None:
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


def _record(entry: Any) -> GpuRecord:
    return GpuRecord(
        default_limit_mw=int(entry["default_limit_mw"]),
        limit_mw=None if entry.get("limit_mw") is None else int(entry["limit_mw"]),
        clock_mhz=None if entry.get("clock_mhz") is None else int(entry["clock_mhz"]),
        changed_at=float(entry["changed_at"]),
        greenmodel=str(entry.get("greenmodel", "")),
        pending=bool(entry.get("pending", False)),
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
