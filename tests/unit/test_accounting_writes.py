"""When a tick writes a status that only its accounting changed (controller.fleet_loop.LoopMemory.due)."""

from __future__ import annotations

from greenllm.controller.fleet_loop import LoopMemory

SEEN = {"replicas": 2, "period": {"energyKwh": 1.0}}


def _writes(spacing_s: float, interval_s: float, period_s: float = 60.0, ticks: int = 13) -> list[int]:
    """The ticks (0, 1, ...) that write, each `spacing_s` after the previous, only the energy moving."""
    memory, wrote = LoopMemory(), []
    for k in range(ticks):
        now = 1000.0 + k * spacing_s
        new = {"replicas": 2, "period": {"energyKwh": 1.0 + k}}
        reason = memory.due(SEEN, new, now, period_s, interval_s)
        assert reason in (None, "accounting")
        memory.ticked(reason is not None, now)
        if reason:
            wrote.append(k)
    return wrote


def test_keeping_up_the_accounting_is_written_once_a_period() -> None:
    assert _writes(15.0, 15.0) == [0, 4, 8, 12]


def test_behind_it_waits_for_a_period_of_ticks_not_only_of_seconds() -> None:
    # Was every tick (70 s > 60 s each time), then every other tick: writes per tick rose as ticks slowed.
    assert _writes(70.0, 15.0) == [0, 4, 8, 12]
    assert _writes(40.0, 15.0) == [0, 4, 8, 12]
    assert _writes(20.0, 15.0) == [0, 4, 8, 12]  # 80 s apart: later than the period, never earlier
    assert _writes(15.0, 7.0, ticks=19) == [0, 9, 18]  # 63 s: the period, rounded up to a whole tick


def test_an_interval_as_long_as_the_period_writes_every_tick() -> None:
    assert _writes(90.0, 90.0) == list(range(13))  # a chosen interval is not falling behind


def test_period_zero_writes_every_tick_and_a_change_is_written_at_once() -> None:
    assert _writes(15.0, 15.0, period_s=0.0) == list(range(13))
    memory = LoopMemory()
    memory.ticked(True, 1000.0)
    assert memory.due(SEEN, {"replicas": 3, "period": {"energyKwh": 1.0}}, 1001.0, 60.0, 15.0) == "change"
