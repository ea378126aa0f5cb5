"""The simulated Prometheus: scrapes, rate() extrapolation, and only the past is visible."""

from __future__ import annotations

import pytest

from greenllm.sim.policies import _answer
from greenllm.sim.telemetry import SimulatedPrometheus


def feed(t: SimulatedPrometheus, seconds: int, prompt_per_s: float = 10.0, ttft: float | None = None) -> None:
    t.start(0.0, 1, 100.0)
    for k in range(seconds):
        end = float(k + 1)
        events = [] if ttft is None else [(float(k), ttft * (k + 1), 1.0)]
        t.record_step(
            end,
            1.0,
            prompt_served=prompt_per_s,
            output_served=1.0,
            energy_j=200.0,
            busy_replica_s=0.5,
            ready_replicas=2,
            power_w=200.0 + k,
            requests_waiting=float(k),
            requests_running=1.0,
            first_tokens=events,
        )


def test_scrapes_happen_every_interval() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed(t, 61)
    assert [s.time for s in t.samples] == [0.0, 15.0, 30.0, 45.0, 60.0]


def test_rate_of_a_steady_counter_is_its_slope() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed(t, 120, prompt_per_s=10.0)
    view = t.view(120.0)
    assert view.rate("prompt_tokens_total", 60.0) == pytest.approx(10.0)
    assert view.increase("energy_j_total", 60.0) == pytest.approx(200.0 * 60)
    assert view.ratio_of_rates("busy_replica_s_total", "ready_replica_s_total", 60.0) == pytest.approx(0.25)


def test_rate_between_scrapes_uses_the_last_scrape_and_extrapolates() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed(t, 120, prompt_per_s=10.0)
    view = t.view(100.0)  # last scrape at 90
    assert view.last_sample_time == 90.0
    assert view.rate("prompt_tokens_total", 60.0) == pytest.approx(10.0, rel=0.2)
    assert view.gauge_age_s() == pytest.approx(10.0)


def test_rate_needs_two_samples() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed(t, 10)
    assert t.view(10.0).rate("prompt_tokens_total", 60.0) is None


def test_a_query_never_sees_samples_after_now_minus_lag() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0, lag_s=20.0)
    feed(t, 120)
    view = t.view(70.0)
    assert view.last_sample_time == 45.0
    assert all(s.time <= 50.0 for s in view.samples)
    assert view.gauge("requests_waiting") == 44.0  # the state scraped at 45 s


def test_gauges_go_stale_after_the_lookback() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed(t, 30)
    assert t.view(30.0).gauge("power_w") is not None
    assert t.view(30.0 + 301.0).gauge("power_w") is None


def test_ttft_quantile_covers_the_window_and_scraped_events_only() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed(t, 60, ttft=0.01)  # event k has ttft 0.01 * (k + 1) and starts at k
    view = t.view(50.0)  # last scrape at 45: events started in (-10, 45]
    assert view.ttft_quantile_s(0.9, 60.0) == pytest.approx(0.01 * 42)  # 90% of the 46 events 0..45
    assert view.ttft_quantile_s(0.5, 10.0) == pytest.approx(0.01 * 44)  # events 41..45, median is 43


def test_completed_requests_are_a_counter_with_a_rate() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    t.start(0.0, 1, 100.0)
    for k in range(120):
        t.record_step(
            float(k + 1),
            1.0,
            prompt_served=10.0,
            output_served=1.0,
            energy_j=200.0,
            busy_replica_s=0.5,
            ready_replicas=2,
            power_w=200.0,
            requests_waiting=0.0,
            requests_running=1.0,
            first_tokens=[],
            requests_completed=2.5,
        )
    assert t.view(120.0).rate("requests_total", 60.0) == pytest.approx(2.5)


def test_the_request_rate_query_is_answered_from_the_counter() -> None:
    """The controller's `requests_per_s` query (rate of vllm:request_success_total) gets the counter's rate
    from the simulated Prometheus, like the token rates."""
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    t.start(0.0, 1, 100.0)
    for k in range(60):
        t.record_step(
            float(k + 1),
            1.0,
            prompt_served=10.0,
            output_served=1.0,
            energy_j=200.0,
            busy_replica_s=0.5,
            ready_replicas=2,
            power_w=200.0,
            requests_waiting=0.0,
            requests_running=1.0,
            first_tokens=[],
            requests_completed=4.0,
        )
    view = t.view(60.0)
    assert _answer(view, "requests_per_s", 60.0, None, 3600.0) == pytest.approx(4.0)
    assert _answer(view, "prompt_tokens_per_s", 60.0, None, 3600.0) == pytest.approx(10.0)


def feed_latency(
    t: SimulatedPrometheus, steps: list[tuple[float, float, float, float]], peaks: list[float] | None = None
) -> None:
    """One step of 1 s per entry: (TTFT within SLO, TTFT count, TPOT within SLO, TPOT count)."""
    t.start(0.0, 1, 100.0)
    for k, latency in enumerate(steps):
        t.record_step(
            float(k + 1),
            1.0,
            prompt_served=0.0,
            output_served=0.0,
            energy_j=0.0,
            busy_replica_s=0.0,
            ready_replicas=1,
            power_w=100.0,
            requests_waiting=0.0,
            requests_running=0.0,
            first_tokens=[],
            latency=latency,
            waiting_peak=0.0 if peaks is None else peaks[k],
        )


def test_attainment_is_one_minus_both_miss_rates() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed_latency(t, [(9.0, 10.0, 7.0, 8.0)] * 120)
    # 10% of first tokens late, 12.5% of finished requests slow: at least 77.5% met both (union bound).
    assert t.view(120.0).attainment(60.0) == pytest.approx(1.0 - 0.1 - 0.125)


def test_attainment_without_tpot_counts_is_the_ttft_share() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed_latency(t, [(9.0, 10.0, 0.0, 0.0)] * 60)
    assert t.view(60.0).attainment(60.0) == pytest.approx(0.9)


def test_attainment_is_clamped_at_zero_and_none_without_requests() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed_latency(t, [(4.0, 10.0, 3.0, 10.0)] * 60)
    assert t.view(60.0).attainment(60.0) == 0.0  # 1 - 0.6 - 0.7
    quiet = SimulatedPrometheus(scrape_interval_s=15.0)
    feed_latency(quiet, [(0.0, 0.0, 0.0, 0.0)] * 60)
    assert quiet.view(60.0).attainment(60.0) is None


def test_attainment_covers_its_range_only() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    feed_latency(t, [(10.0, 10.0, 10.0, 10.0)] * 60 + [(5.0, 10.0, 10.0, 10.0)] * 60)
    view = t.view(120.0)
    assert view.attainment(30.0) == pytest.approx(0.5)  # scrapes 90..120: the bad minute only
    assert view.attainment(120.0) == pytest.approx(0.75)


def test_the_waiting_peak_resets_at_every_scrape() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    peaks = [0.0] * 30
    peaks[2] = 7.0  # within the first interval
    peaks[20] = 2.0  # within the second
    feed_latency(t, [(0.0, 0.0, 0.0, 0.0)] * 30, peaks)
    assert [s.waiting_peak for s in t.samples] == [0.0, 7.0, 2.0]


def test_max_over_time_takes_the_samples_in_range() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    peaks = [0.0] * 60
    peaks[2], peaks[20], peaks[40] = 7.0, 2.0, 3.0
    feed_latency(t, [(0.0, 0.0, 0.0, 0.0)] * 60, peaks)
    view = t.view(60.0)
    assert view.max_over_time("waiting_peak", 10.0) == 0.0  # the scrape at 60 s only
    assert view.max_over_time("waiting_peak", 30.0) == 3.0  # 30, 45, 60
    assert view.max_over_time("waiting_peak", 60.0) == 7.0
    assert t.view(100.0).max_over_time("waiting_peak", 20.0) is None  # no scrape since 80 s


def test_the_operators_slow_tier_queries_are_answered() -> None:
    t = SimulatedPrometheus(scrape_interval_s=15.0)
    peaks = [0.0] * 60
    peaks[2] = 5.0
    feed_latency(t, [(9.0, 10.0, 10.0, 10.0)] * 60, peaks)
    view = t.view(60.0)
    long_s = 3600.0
    assert _answer(view, "attainment", 60.0, None, long_s) == pytest.approx(0.9)
    assert _answer(view, "peak_waiting_requests", 60.0, None, long_s) == 5.0
    assert _answer(view, "peak_waiting_requests", 60.0, None, 30.0) == 0.0
    assert _answer(view, "tpot_p90_ms", 60.0, None, long_s) is None
