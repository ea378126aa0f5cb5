"""core.fasttier: the per-GPU switch rule the agent and the simulator share."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.core.fasttier import FastState, FastTier, Mode, QueueReading, SwitchRule, next_mode
from greenllm.core.performance import PowerSetting

RULE = SwitchRule(burst_at_waiting=1.0, hold_s=3.0)
EMPTY = QueueReading(waiting=0.0, running=4.0)
QUEUED = QueueReading(waiting=5.0, running=4.0)
EFFICIENT = FastState(mode=Mode.EFFICIENT)


def run(rule: SwitchRule, readings: list[QueueReading | None], start: FastState = EFFICIENT) -> list[Mode]:
    state, modes = start, []
    for t, reading in enumerate(readings):
        state = next_mode(rule, state, float(t), reading)
        modes.append(state.mode)
    return modes


def test_a_queue_means_burst_at_once() -> None:
    state = next_mode(RULE, EFFICIENT, 10.0, QUEUED)
    assert state.mode is Mode.BURST
    assert state.queue_seen_at == 10.0
    assert state.switches == 1
    # Exactly the threshold is a queue; just below it is not.
    assert next_mode(RULE, EFFICIENT, 0.0, QueueReading(waiting=1.0, running=0.0)).mode is Mode.BURST
    assert next_mode(RULE, EFFICIENT, 0.0, QueueReading(waiting=0.5, running=0.0)).mode is Mode.EFFICIENT


@pytest.mark.parametrize(
    "reading",
    [
        None,
        QueueReading(waiting=math.nan, running=0.0),
        QueueReading(waiting=-1.0, running=0.0),
        QueueReading(waiting=0.0, running=-3.0),
        QueueReading(waiting=0.0, running=math.inf),
        QueueReading(waiting=math.inf, running=0.0),
    ],
    ids=["unreadable", "nan", "negative-waiting", "negative-running", "inf-running", "inf-waiting"],
)
def test_unreadable_or_invalid_means_burst(reading: QueueReading | None) -> None:
    state = next_mode(RULE, EFFICIENT, 5.0, reading)
    assert state.mode is Mode.BURST
    assert state.queue_seen_at == 5.0  # and it counts as a queue for the hold


def test_efficient_only_after_the_hold_without_a_queue() -> None:
    modes = run(RULE, [QUEUED, EMPTY, EMPTY, EMPTY, EMPTY])
    assert modes == [Mode.BURST, Mode.BURST, Mode.BURST, Mode.EFFICIENT, Mode.EFFICIENT]
    # One empty read between two queued ones never switches back.
    assert run(RULE, [QUEUED, EMPTY, QUEUED, EMPTY, EMPTY, QUEUED]) == [Mode.BURST] * 6
    # An unreadable read restarts the hold like a queue does.
    assert run(RULE, [QUEUED, EMPTY, None, EMPTY, EMPTY, EMPTY]) == [Mode.BURST] * 5 + [Mode.EFFICIENT]


def test_hold_zero_follows_every_read() -> None:
    rule = SwitchRule(burst_at_waiting=1.0, hold_s=0.0)
    assert run(rule, [QUEUED, EMPTY, QUEUED, EMPTY]) == [Mode.BURST, Mode.EFFICIENT] * 2


def test_an_empty_queue_keeps_efficient_and_counts_no_switch() -> None:
    state = EFFICIENT
    for t in range(10):
        state = next_mode(RULE, state, float(t), EMPTY)
    assert state == FastState(mode=Mode.EFFICIENT, queue_seen_at=None, switches=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"burst_at_waiting": math.nan}, {"burst_at_waiting": -1.0}, {"hold_s": math.inf}, {"hold_s": -0.1}],
)
def test_rule_rejects_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SwitchRule(**kwargs)


def test_fast_tier_setting_maps_mode_to_the_operators_setting() -> None:
    tier = FastTier(efficient=PowerSetting(limit_w=300.0), burst=PowerSetting(locked_clock_mhz=1980))
    assert tier.setting(Mode.EFFICIENT) == PowerSetting(limit_w=300.0)
    assert tier.setting(Mode.BURST) == PowerSetting(locked_clock_mhz=1980)
    assert tier.rule == SwitchRule()


readings = st.one_of(
    st.none(),
    st.builds(
        QueueReading,
        waiting=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 7.0])),
        running=st.floats(min_value=0, max_value=64),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    hold_s=st.floats(min_value=0.5, max_value=10.0),
    period_s=st.floats(min_value=0.1, max_value=2.0),
    inputs=st.lists(readings, min_size=1, max_size=200),
)
def test_switches_are_bounded_whatever_the_input(
    hold_s: float, period_s: float, inputs: list[QueueReading | None]
) -> None:
    """Each burst lasts at least hold_s, so over a time T at most 2 * (T / hold_s + 1) switches happen;
    and `switches` counts exactly the mode changes."""
    rule = SwitchRule(burst_at_waiting=1.0, hold_s=hold_s)
    state, mode_changes, burst_since = EFFICIENT, 0, None
    for i, reading in enumerate(inputs):
        now = i * period_s
        new = next_mode(rule, state, now, reading)
        if new.mode is not state.mode:
            mode_changes += 1
            if new.mode is Mode.BURST:
                burst_since = now
            else:
                assert burst_since is not None and now - burst_since >= hold_s
        queued = reading is None or not reading.valid or reading.waiting >= 1.0
        if queued:
            assert new.mode is Mode.BURST  # never efficient on a queue or a bad read
        state = new
    duration = (len(inputs) - 1) * period_s
    assert state.switches == mode_changes
    assert mode_changes <= 2 * (duration / hold_s + 1)
