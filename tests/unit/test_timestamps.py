"""RFC 3339 status times: written in UTC with 'Z', read back exactly, legacy epoch numbers still read."""

from __future__ import annotations

import datetime

import pytest

from greenllm.api.timestamps import epoch_seconds, rfc3339


@pytest.mark.parametrize(
    "epoch",
    [0.0, 15.0, 951_782_400.0, 1_764_672_913.0, 1_764_672_913.25, 4_107_542_400.5, -86_400.0, 1.000001],
)
def test_written_as_utc_with_z_like_datetime_and_read_back(epoch: float) -> None:
    text = rfc3339(epoch)
    expected = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    assert text.endswith("Z")
    assert datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) == expected
    assert epoch_seconds(text) == pytest.approx(epoch, abs=1e-6)


def test_whole_seconds_have_no_fraction() -> None:
    assert rfc3339(1_764_672_913.0) == "2025-12-02T10:55:13Z"
    assert rfc3339(1_764_672_913.5) == "2025-12-02T10:55:13.500000Z"


def test_offsets_and_legacy_numbers_are_read() -> None:
    assert epoch_seconds("2025-12-02T11:55:13+01:00") == 1_764_672_913.0
    assert epoch_seconds(1_764_672_913.5) == 1_764_672_913.5
    assert epoch_seconds(17) == 17.0


@pytest.mark.parametrize("junk", [None, True, "x", "2025-13-02T10:55:13Z", "2025-12-02", float("nan"), [1]])
def test_junk_is_none(junk: object) -> None:
    assert epoch_seconds(junk) is None
