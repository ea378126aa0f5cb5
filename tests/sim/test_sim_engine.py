"""The replay (sim.engine): conservation, energy, routing, an empty fleet, the fast tier, scale-down drains.

FakeSource's hq at default power: 10,000 prompt tokens/s at 500 W, idle 100 W, a decode step of 10 ms at
batch 1 (180 W); capped at 300 W: 8,000 prompt tokens/s at 300 W.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from simkit import CAPPED, DEFAULT, Scripted, bursty_trace, make_trace, scenario

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.fasttier import FastTier
from greenllm.sim import engine
from greenllm.sim.baselines import Evaluator
from greenllm.sim.engine import PolicyRun, run_policy
from greenllm.sim.fleet import FleetTarget
from greenllm.sim.policies import StaticPolicy
from greenllm.sim.report import summarize
from greenllm.sim.telemetry import SimulatedPrometheus


def hq(n: int) -> FleetTarget:
    return FleetTarget("hq", n, DEFAULT)


def tokens(run: PolicyRun, mask: np.ndarray) -> float:
    return float((run.prompt_tokens[mask] + run.output_tokens[mask]).sum())


# ------------------------------------------------------------------------------------------ conservation


@pytest.mark.parametrize(("variant", "quality"), [("hq", 1.0), ("fast", 0.99)])
def test_every_request_is_served_once_and_every_token_is_accounted(
    spec: GreenModelSpec, variant: str, quality: float
) -> None:
    trace = bursty_trace()
    run = run_policy(scenario(spec, trace), StaticPolicy(variant, 2))
    assert len(run.ttft_s) == len(trace)
    assert run.finished.all()
    assert np.all(run.ttft_s >= 0.0)
    one = trace.output_tokens <= 1.0
    assert np.all(np.isnan(run.tpot_s[one])) and np.all(run.tpot_s[~one] > 0.0)
    # What the servers processed (quality-weighted) is exactly the finished requests' tokens.
    assert run.quality_weighted_tokens == pytest.approx(quality * tokens(run, run.finished), rel=1e-9)


def test_requests_a_deleted_pod_cannot_finish_in_its_grace_period_count_unfinished(
    spec: GreenModelSpec,
) -> None:
    # 40 prompts of 50,000 tokens over two replicas (100 s of prefill each); one replica is deleted at 5 s
    # and may serve for 30 s more: what it still holds then is never served.
    n = 40
    trace = make_trace(np.linspace(0.0, 0.5, n), 50_000.0, 2.0, duration=60.0)
    run = run_policy(scenario(spec, trace), Scripted(hq(2), {5.0: hq(1)}, interval_s=5.0))
    assert 0 < run.finished.sum() < n
    assert np.all(np.isnan(run.tpot_s[~run.finished]))
    # The servers processed the finished requests and part of the others, never more than arrived.
    assert tokens(run, run.finished) <= run.quality_weighted_tokens <= tokens(run, np.ones(n, dtype=bool))


def test_the_end_of_the_trace_does_not_extend_a_deleted_pods_grace_period(spec: GreenModelSpec) -> None:
    arrival = np.linspace(0.0, 0.5, 40)
    runs = [
        run_policy(
            scenario(spec, make_trace(arrival, 50_000.0, 2.0, duration=duration)),
            Scripted(hq(2), {5.0: hq(1)}, interval_s=5.0),
        )
        for duration in (10.0, 60.0)
    ]
    assert np.array_equal(runs[0].finished, runs[1].finished)


# ------------------------------------------------------------------------------------------------ energy


def one_request_run(spec: GreenModelSpec) -> PolicyRun:
    # 1,000 prompt tokens (0.1 s at 500 W) and 10 decode steps at batch 1 (0.1 s at 180 W); 7 steps of 1 s.
    trace = make_trace([0.5], 1000.0, 11.0, duration=5.0)
    return run_policy(scenario(spec, trace), StaticPolicy("hq", 1))


def test_energy_is_the_sum_of_its_parts_each_at_its_power(spec: GreenModelSpec) -> None:
    run = one_request_run(spec)
    assert run.steps == 7
    assert run.ttft_s[0] == pytest.approx(0.1, abs=1e-9)
    assert run.tpot_s[0] == pytest.approx(0.01, abs=1e-9)
    assert run.energy_prefill_j == pytest.approx(500.0 * 0.1, abs=1e-6)
    assert run.energy_decode_j == pytest.approx(180.0 * 0.1, abs=1e-6)
    assert run.energy_starting_j == 0.0
    assert run.energy_j == pytest.approx(
        run.energy_idle_j + run.energy_starting_j + run.energy_prefill_j + run.energy_decode_j
    )
    # Per step: idle power but for the 0.2 s of work.
    expected = np.full(7, 100.0)
    expected[0] = 100.0 * 0.8 + 50.0 + 18.0
    assert run.power_w == pytest.approx(expected, abs=1e-6)
    split = summarize(run, 400.0, 2.0, 0.05).energy_split_kwh
    assert sum(split.values()) == pytest.approx(run.energy_j / 3.6e6)


def test_no_energy_is_billed_after_the_last_request_is_done(spec: GreenModelSpec) -> None:
    run = one_request_run(spec)
    assert run.energy_j == pytest.approx(float(run.power_w.sum()) * run.step_s, abs=1e-6)


def test_starting_pods_draw_idle_power_until_ready(spec: GreenModelSpec) -> None:
    # A second pod asked for at 10 s starts at once and is ready at the first probe after 30 s: 40 s.
    trace = make_trace([0.5], 1000.0, 1.0, duration=60.0)
    run = run_policy(scenario(spec, trace), Scripted(hq(1), {10.0: hq(2)}))
    assert run.energy_starting_j == pytest.approx(30 * 100.0)
    assert run.ready_replicas[39] == 1 and run.ready_replicas[40] == 2
    assert run.peak_replicas == 2
    assert run.changes == 1


# ------------------------------------------------------------------------------------------ capacity


def test_a_constant_fleets_attainment_grows_with_its_replicas(spec: GreenModelSpec) -> None:
    ev = Evaluator(scenario(spec, bursty_trace()), 0.99)
    attainment = [ev.constant("hq", DEFAULT, n, "static")[1] for n in range(1, 8)]
    assert attainment == sorted(attainment)
    assert attainment[0] < 0.5 < 0.9 < attainment[-1]


def test_a_burst_is_spread_over_the_replicas(spec: GreenModelSpec) -> None:
    # 8 prompts of 1 s each at once on 4 replicas: two rounds of four, not a queue of eight.
    trace = make_trace([0.1] * 8, 10_000.0, 1.0, duration=5.0)
    run = run_policy(scenario(spec, trace), StaticPolicy("hq", 4))
    assert np.sort(run.ttft_s) == pytest.approx([1.0] * 4 + [2.0] * 4, abs=1e-9)


def test_requests_go_to_the_replica_that_frees_up_first(spec: GreenModelSpec) -> None:
    # A holds replica 1 for 2 s; B and C (0.1 s each) both go to replica 2, C after B (round robin would put
    # C behind A).
    trace = make_trace([0.0, 0.5, 0.6], [20_000.0, 1000.0, 1000.0], 1.0, duration=5.0)
    run = run_policy(scenario(spec, trace), StaticPolicy("hq", 2))
    assert run.ttft_s == pytest.approx([2.0, 0.1, 0.1], abs=1e-9)


def test_requests_wait_while_no_replica_is_ready(spec: GreenModelSpec) -> None:
    # No replica until one is asked for at 10 s; it is ready at 40 s and serves both in arrival order.
    trace = make_trace([1.0, 2.0], 10_000.0, 1.0, duration=60.0)
    run = run_policy(scenario(spec, trace), Scripted(hq(0), {10.0: hq(1)}))
    assert run.ready_replicas[39] == 0 and run.ready_replicas[40] == 1
    assert run.waiting[1] == 1 and np.all(run.waiting[2:40] == 2) and run.waiting[41] == 0
    assert run.ttft_s == pytest.approx([41.0 - 1.0, 42.0 - 2.0], abs=1e-9)
    assert run.finished.all()


def test_an_instant_fleet_is_ready_at_once(spec: GreenModelSpec) -> None:
    trace = make_trace([6.0] * 4, 10_000.0, 1.0, duration=10.0)
    run = run_policy(scenario(spec, trace), Scripted(hq(1), {5.0: hq(4)}, instant=True))
    assert run.ready_replicas[4] == 1 and run.ready_replicas[5] == 4
    assert run.energy_starting_j == 0.0
    assert run.ttft_s == pytest.approx([1.0] * 4, abs=1e-9)


# -------------------------------------------------------------------------------------------- fast tier


def test_the_fast_tier_bursts_while_a_replica_queues(spec: GreenModelSpec) -> None:
    # Ten 10,000-token prompts at 5 s on one replica. The first read (1 s) finds no queue: efficient
    # (switch 1). The read at 6 s sees the queue: burst from then on (switch 2), 8,000 tokens done at the
    # capped rate, the other 92,000 at 10,000 tokens/s: the last first token at 15.2 s. The last queue is
    # seen at 14 s (from 15 s only the last prompt is left, being chunked); efficient again 3 s later, at the
    # read at 17 s (switch 3). Burst after the reads at 6..16 s: 11 replica-seconds.
    trace = make_trace([5.0] * 10, 10_000.0, 1.0, duration=30.0)
    tier = FastTier(efficient=CAPPED, burst=DEFAULT)
    run = run_policy(scenario(spec, trace), StaticPolicy("hq", 1, CAPPED))
    tiered = run_policy(
        scenario(spec, trace), Scripted(FleetTarget("hq", 1, CAPPED, tier), interval_s=math.inf)
    )
    assert run.ttft_s.max() == pytest.approx(100_000.0 / 8000.0, abs=1e-9)
    assert tiered.ttft_s.max() == pytest.approx(15.2 - 5.0, abs=1e-9)
    assert tiered.fast_switches == 3
    assert tiered.burst_replica_s == pytest.approx(11.0)
    assert run.fast_switches == 0 and run.burst_replica_s == 0.0
    assert summarize(tiered, 400.0, 2.0, 0.05).burst_share == pytest.approx(11.0 / tiered.steps)


# -------------------------------------------------------------------------------------------- telemetry


def test_the_waiting_peak_is_per_scrape(spec: GreenModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[SimulatedPrometheus] = []

    class Kept(SimulatedPrometheus):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    monkeypatch.setattr(engine, "SimulatedPrometheus", Kept)
    trace = make_trace([5.0] * 10, 10_000.0, 1.0, duration=60.0)
    run_policy(scenario(spec, trace), StaticPolicy("hq", 1))
    peaks = {s.time: s.waiting_peak for s in made[0].samples}
    # Nine wait behind the first prompt at the end of step 5; the queue is gone by 15 s.
    assert peaks[15.0] == 9.0
    assert peaks[30.0] == 0.0 and peaks[45.0] == 0.0


def test_the_arrivals_peak_counts_a_burst_whatever_the_fleet(
    spec: GreenModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[SimulatedPrometheus] = []

    class Kept(SimulatedPrometheus):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    monkeypatch.setattr(engine, "SimulatedPrometheus", Kept)
    # Ten requests within one second at 5 s, three more at 20 s: the same whatever the fleet absorbs them
    # with (a queue would not be: one replica queues nine, four replicas about six).
    trace = make_trace([5.0] * 10 + [20.0] * 3, 10_000.0, 1.0, duration=60.0)
    for replicas in (1, 4):
        run_policy(scenario(spec, trace), StaticPolicy("hq", replicas))
        arrivals = {s.time: s.arrivals_peak for s in made[-1].samples}
        assert arrivals[15.0] == 10.0 and arrivals[30.0] == 3.0 and arrivals[45.0] == 0.0


def test_the_simulated_histograms_credit_requests_as_the_operators_query_does() -> None:
    from greenllm.loop.promql import VLLM_TTFT_BUCKETS_S
    from greenllm.sim.engine import histogram_credit

    credit = histogram_credit(VLLM_TTFT_BUCKETS_S, 2.0)  # between the 1.0 and 2.5 buckets
    assert credit(0.5) == 1.0
    assert credit(1.0) == 1.0
    assert credit(1.8) == pytest.approx(2.0 / 3.0)  # spread evenly over the bucket, as the query reads it
    assert credit(2.4) == pytest.approx(2.0 / 3.0)
    assert credit(3.0) == 0.0
    on_edge = histogram_credit(VLLM_TTFT_BUCKETS_S, 2.5)
    assert (on_edge(2.5), on_edge(2.6)) == (1.0, 0.0)
    below = histogram_credit(VLLM_TTFT_BUCKETS_S, 0.0001)
    assert below(0.0) == 0.0
