"""Hysteresis, switch hold and HPA-style replica windows (greenllm.core.stability)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.core.performance import PowerSetting
from greenllm.core.stability import (
    gate_switch,
    keep_setting,
    saving,
    stabilize_replicas,
    worth_switching,
)


def test_saving_and_threshold() -> None:
    assert saving(1000.0, 800.0) == 0.2
    assert saving(1000.0, 1100.0) == -0.1
    assert saving(0.0, 0.0) == 0.0
    assert worth_switching(1000.0, 890.0, 0.1)
    assert worth_switching(1000.0, 900.0, 0.1)
    assert not worth_switching(1000.0, 910.0, 0.1)
    assert not worth_switching(1000.0, 1000.0, 0.0)  # no saving is never worth a change


def test_gate_same_variant_clears_pending() -> None:
    g = gate_switch("a", 1000.0, "a", 1000.0, 0.1, 300.0, 50.0, 100.0)
    assert not g.switch
    assert g.pending_since is None
    assert g.reason == ""


def test_gate_small_saving_never_switches() -> None:
    g = gate_switch("a", 1000.0, "b", 950.0, 0.1, 0.0, None, 100.0)
    assert not g.switch
    assert g.pending_variant is None
    assert "5.0%" in g.reason
    assert "switchThreshold" in g.reason


def test_gate_waits_out_the_hold_then_switches() -> None:
    g = gate_switch("a", 1000.0, "b", 700.0, 0.1, 300.0, None, 1000.0)
    assert not g.switch
    assert (g.pending_variant, g.pending_since) == ("b", 1000.0)
    assert "pending 0s of switchHold 300s" in g.reason
    g = gate_switch("a", 1000.0, "b", 700.0, 0.1, 300.0, g.pending_since, 1299.0)
    assert not g.switch
    g = gate_switch("a", 1000.0, "b", 700.0, 0.1, 300.0, g.pending_since, 1300.0)
    assert g.switch
    assert g.pending_since is None
    assert "switched variant a -> b" in g.reason


def test_gate_without_hold_switches_at_once() -> None:
    assert gate_switch("a", 1000.0, "b", 700.0, 0.1, 0.0, None, 5.0).switch


def test_gate_keeps_the_hold_when_the_best_target_changes() -> None:
    g = gate_switch("a", 1000.0, "b", 700.0, 0.1, 60.0, None, 0.0)
    g = gate_switch("a", 1000.0, "c", 650.0, 0.1, 60.0, g.pending_since, 60.0)
    assert g.switch
    assert "a -> c" in g.reason


def test_keep_setting() -> None:
    cur, best = PowerSetting(limit_w=400.0), PowerSetting(limit_w=300.0)
    assert keep_setting(cur, 1000.0, best, 950.0, 0.1)
    assert not keep_setting(cur, 1000.0, best, 850.0, 0.1)
    assert not keep_setting(cur, None, best, 950.0, 0.1)  # current no longer qualifies
    assert keep_setting(best, 950.0, best, 950.0, 0.1)


def test_scale_up_is_immediate_with_a_zero_up_window() -> None:
    s = stabilize_replicas(2, 5, ((0.0, 2),), 15.0, 0.0, 300.0)
    assert s.replicas == 5
    assert s.reason == ""


def test_scale_up_waits_for_the_up_window() -> None:
    s = stabilize_replicas(2, 5, ((0.0, 2),), 15.0, 60.0, 300.0)
    assert s.replicas == 2
    assert "scaleUpStabilization" in s.reason
    s = stabilize_replicas(2, 5, s.history, 61.0, 60.0, 300.0)
    assert s.replicas == 5


def test_scale_down_waits_for_the_down_window() -> None:
    hist = ((0.0, 6),)
    s = stabilize_replicas(6, 3, hist, 100.0, 0.0, 300.0)
    assert s.replicas == 6
    assert "scaleDownStabilization" in s.reason
    s = stabilize_replicas(6, 3, s.history, 300.0, 0.0, 300.0)
    assert s.replicas == 6  # the recommendation of 6 at t=0 is still in the window
    s = stabilize_replicas(6, 3, s.history, 300.5, 0.0, 300.0)
    assert s.replicas == 3


def test_scale_down_goes_to_the_highest_recent_recommendation() -> None:
    hist = ((0.0, 8), (200.0, 5), (250.0, 4))
    s = stabilize_replicas(8, 3, hist, 310.0, 0.0, 300.0)
    assert s.replicas == 5


def _hpa(current: int, full: list[tuple[float, int]], now: float, up: float, down: float) -> int:
    up_floor = min(n for t, n in full if now - t <= up)
    down_ceiling = max(n for t, n in full if now - t <= down)
    return min(max(current, up_floor), down_ceiling)


@settings(max_examples=150, deadline=None)
@given(
    recs=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=80),
    gaps=st.lists(st.sampled_from([1.0, 5.0, 15.0, 60.0]), min_size=80, max_size=80),
    up=st.sampled_from([0.0, 30.0, 120.0]),
    down=st.sampled_from([0.0, 60.0, 300.0]),
)
def test_pruned_history_decides_like_the_full_history(
    recs: list[int], gaps: list[float], up: float, down: float
) -> None:
    history: tuple[tuple[float, int], ...] = ()
    full: list[tuple[float, int]] = []
    current, now = recs[0], 0.0
    for rec, gap in zip(recs, gaps, strict=False):
        now += gap
        full.append((now, rec))
        expected = _hpa(current, full, now, up, down)
        s = stabilize_replicas(current, rec, history, now, up, down)
        assert s.replicas == expected
        history, current = s.history, s.replicas
        assert len(history) <= 2 * 13 + 1


@settings(max_examples=100, deadline=None)
@given(
    noise=st.lists(st.integers(min_value=-3, max_value=3), min_size=40, max_size=200),
    base=st.integers(min_value=3, max_value=8),
)
def test_noise_never_undoes_a_scale_up_within_the_down_window(noise: list[int], base: int) -> None:
    down, interval = 300.0, 15.0
    current: int = base
    history: tuple[tuple[float, int], ...] = ()
    ups: list[tuple[float, int]] = []  # (time, level reached)
    for i, d in enumerate(noise):
        now = i * interval
        rec = max(base + d, 0)
        s = stabilize_replicas(current, rec, history, now, 0.0, down)
        assert s.replicas >= rec  # never below what this tick needs
        if s.replicas > current:
            ups.append((now, s.replicas))
        for t, level in ups:
            if now - t <= down:
                assert s.replicas >= level
        current, history = s.replicas, s.history


def test_square_wave_faster_than_the_window_changes_replicas_once() -> None:
    current: int = 2
    history: tuple[tuple[float, int], ...] = ()
    changes = 0
    for i in range(400):  # 100 min of 15 s ticks, demand flips every 2 min
        rec = 6 if (i // 8) % 2 else 2
        s = stabilize_replicas(current, rec, history, i * 15.0, 0.0, 300.0)
        changes += s.replicas != current
        current, history = s.replicas, s.history
    assert changes == 1
    assert current == 6
