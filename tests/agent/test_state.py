"""The UUID-keyed record on the hostPath."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenllm.agent.state import GpuRecord, RecordError, StateStore


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    records = {
        "GPU-b": GpuRecord(
            default_limit_mw=700_000, limit_mw=300_000, clock_mhz=None, changed_at=12.5, greenmodel="ns/llama"
        ),
        "GPU-a": GpuRecord(
            default_limit_mw=400_000, limit_mw=None, clock_mhz=1410, changed_at=13.0, pending=True
        ),
    }
    store.save(records)
    assert store.load() == records
    on_disk = json.loads(store.path.read_text())
    assert on_disk["format"] == 1
    assert list(on_disk["gpus"]) == ["GPU-a", "GPU-b"]  # keyed by UUID, sorted


def test_missing_record_is_empty(tmp_path: Path) -> None:
    assert StateStore(tmp_path).load() == {}


@pytest.mark.parametrize(
    "text",
    ["{broken", json.dumps({"format": 99, "gpus": {}}), json.dumps({"format": 1, "gpus": {"GPU-a": {}}})],
)
def test_unreadable_record_is_an_error(tmp_path: Path, text: str) -> None:
    store = StateStore(tmp_path)
    store.path.write_text(text)
    with pytest.raises(RecordError):
        store.load()
    moved = store.quarantine()
    assert moved.read_text() == text and not store.path.exists()


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for n in range(3):
        store.save(
            {
                "GPU-a": GpuRecord(
                    default_limit_mw=700_000, limit_mw=200_000 + n, clock_mhz=None, changed_at=float(n)
                )
            }
        )
    assert [p.name for p in tmp_path.iterdir()] == ["power-record.json"]
    assert store.load()["GPU-a"].limit_mw == 200_002
