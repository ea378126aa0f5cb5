"""The UUID-keyed record on the hostPath."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenllm.agent.state import RecordError, SettingRecord, StateStore


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    records = {
        "GPU-b": SettingRecord(
            default_limit_mw=700_000, limit_mw=300_000, clock_mhz=None, changed_at=12.5, greenmodel="ns/llama"
        ),
        "GPU-a": SettingRecord(
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
    ["{broken", json.dumps({"format": 99, "gpus": {}}), json.dumps({"format": 1, "gpus": []}), "[" * 100_000],
    ids=["broken", "format-99", "gpus-a-list", "nested-100000-deep"],
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
                "GPU-a": SettingRecord(
                    default_limit_mw=700_000, limit_mw=200_000 + n, clock_mhz=None, changed_at=float(n)
                )
            }
        )
    assert [p.name for p in tmp_path.iterdir()] == ["power-record.json"]
    assert store.load()["GPU-a"].limit_mw == 200_002


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("limit_mw", "Infinity"),
        ("limit_mw", "-Infinity"),
        ("limit_mw", "NaN"),
        ("limit_mw", "1e400"),
        ("limit_mw", "-300000"),
        ("limit_mw", "true"),
        ("limit_mw", '"300000"'),
        ("limit_mw", "300000.5"),
        ("default_limit_mw", "1" + "0" * 400),
        ("clock_mhz", "1" + "0" * 400),
        ("changed_at", "1" + "0" * 400),
        ("changed_at", "Infinity"),
        ("changed_at", "NaN"),
        ("changed_at", "-1"),
        ("pending", '"no"'),
        ("default_limit_mw", "{}"),
    ],
    ids=lambda v: v if len(v) <= 20 else f"{len(v)}-digits",
)
def test_an_entry_not_finite_and_in_range_is_bad_and_only_that_gpu_is_named(
    tmp_path: Path, field: str, raw: str
) -> None:
    store = StateStore(tmp_path)
    entry = {"default_limit_mw": 700_000, "limit_mw": 300_000, "clock_mhz": None, "changed_at": 12.5}
    good = json.dumps(entry)
    entry[field] = "@@"
    bad = json.dumps(entry).replace('"@@"', raw)
    store.path.write_text(f'{{"format": 1, "gpus": {{"GPU-bad": {bad}, "GPU-good": {good}}}}}')
    records = store.load()  # no OverflowError
    assert list(records) == ["GPU-good"] and records["GPU-good"].limit_mw == 300_000
    assert list(store.bad) == ["GPU-bad"]
    assert len(store.bad["GPU-bad"]) <= 300


def test_integral_floats_are_read_as_integers(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    entry = {"default_limit_mw": 700000.0, "limit_mw": 300000.0, "clock_mhz": 1410.0, "changed_at": 12}
    store.path.write_text(json.dumps({"format": 1, "gpus": {"GPU-a": entry}}))
    assert store.load()["GPU-a"] == SettingRecord(
        default_limit_mw=700_000, limit_mw=300_000, clock_mhz=1410, changed_at=12.0
    )
    assert store.bad == {}


def test_an_empty_entry_is_bad_not_the_whole_record(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path.write_text(json.dumps({"format": 1, "gpus": {"GPU-a": {}}}))
    assert store.load() == {} and list(store.bad) == ["GPU-a"]
