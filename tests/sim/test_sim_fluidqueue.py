"""The fluid FCFS queue: backlog carries over, late tokens are misses, tokens are conserved."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simkit import perf

from greenllm.sim.fluidqueue import FluidQueue, ServerGroup


def queue(
    arrivals: list[float],
    prompts: list[float],
    outputs: list[float] | None = None,
    allowance: float = 2.0,
    weight: float = 1.0,
) -> FluidQueue:
    outs = outputs if outputs is not None else [0.0] * len(arrivals)
    return FluidQueue(np.array(arrivals), np.array(prompts), np.array(outs), weight, allowance)


ONE = [ServerGroup(perf(prompt=1000.0, output=100.0), 1)]


def test_capacity_enough_serves_everything_on_time() -> None:
    q = queue([0.0, 0.5], [500.0, 500.0])
    out = q.serve(0.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(1000.0)
    assert out.prompt_on_time == pytest.approx(1000.0)
    assert q.backlog_tokens(1.0) == (0.0, 0.0)
    assert out.requests_completed == 2


def test_backlog_carries_over_and_late_tokens_are_misses() -> None:
    # 10,000 prompt tokens at t=0, 1,000 tok/s of capacity, 2 s allowed: 2,000 on time, 8,000 late.
    q = queue([0.0], [10_000.0])
    first = q.serve(0.0, 1.0, ONE)
    assert first.prompt_served == pytest.approx(1000.0)
    assert q.backlog_tokens(1.0) == pytest.approx((9000.0, 0.0))
    served = first.prompt_served
    on_time = first.prompt_on_time
    for k in range(1, 12):
        out = q.serve(float(k), 1.0, ONE)
        served += out.prompt_served
        on_time += out.prompt_on_time
    assert served == pytest.approx(10_000.0)
    assert on_time == pytest.approx(2000.0)
    assert q.backlog_tokens(12.0) == (0.0, 0.0)


def test_late_share_is_split_inside_a_step() -> None:
    # Arrives at 0.5 s with a 0.25 s allowance; served from 0.5 to 1.0 s: half on time, half late.
    q = queue([0.5], [500.0], allowance=0.25)
    out = q.serve(0.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(500.0)
    assert out.prompt_on_time == pytest.approx(250.0)


def test_first_come_first_served_and_waiting_count() -> None:
    q = queue([0.0, 0.1], [2000.0, 100.0])
    out = q.serve(0.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(1000.0)  # all of it went to the first request
    assert q.waiting_requests(1.0) == 1  # the second has not started
    assert q.running_requests(1.0) == 1  # the first is half done
    assert q.backlog_tokens(1.0) == pytest.approx((1100.0, 0.0))
    out = q.serve(1.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(1000.0)  # the rest of the first request
    assert q.waiting_requests(2.0) == 1
    out = q.serve(2.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(100.0)
    assert q.waiting_requests(3.0) == 0
    assert q.running_requests(3.0) == 0


def test_no_replicas_serve_nothing_and_the_wait_counts() -> None:
    q = queue([0.0], [1000.0], allowance=2.0)
    for k in range(3):
        out = q.serve(float(k), 1.0, [])
        assert out.prompt_served == 0.0
    assert q.backlog_tokens(3.0) == (1000.0, 0.0)
    out = q.serve(3.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(1000.0)
    assert out.prompt_on_time == 0.0  # served 3 s after arrival, beyond the 2 s allowance


def test_groups_share_a_request_by_speed() -> None:
    groups = [ServerGroup(perf(prompt=1000.0), 1), ServerGroup(perf(prompt=2000.0), 1)]
    q = queue([0.0], [3000.0])
    out = q.serve(0.0, 1.0, groups)
    assert out.prompt_served == pytest.approx(3000.0)
    assert out.loads[0].prompt_tokens == pytest.approx(1000.0)
    assert out.loads[1].prompt_tokens == pytest.approx(2000.0)


def test_prompt_and_output_tokens_cost_their_own_capacity() -> None:
    # 500 prompt tokens (0.5 s at 1000/s) + 50 output tokens (0.5 s at 100/s) = one replica-second.
    q = queue([0.0, 0.0], [500.0, 500.0], [50.0, 50.0])
    out = q.serve(0.0, 1.0, ONE)
    assert out.prompt_served == pytest.approx(500.0)
    assert out.output_served == pytest.approx(50.0)


def test_weight_counts_requests() -> None:
    q = queue([0.0, 0.0, 0.0], [1000.0, 1000.0, 1000.0], weight=2.5)
    q.serve(0.0, 1.0, ONE)
    assert q.waiting_requests(1.0) == pytest.approx(2 * 2.5)


@settings(max_examples=60, deadline=None)
@given(
    reqs=st.lists(
        st.tuples(
            st.floats(0.0, 20.0),
            st.floats(0.0, 5000.0),
            st.floats(0.0, 300.0),
        ),
        min_size=1,
        max_size=30,
    ),
    replicas=st.lists(st.integers(0, 3), min_size=25, max_size=25),
)
def test_tokens_are_conserved_and_on_time_never_exceeds_served(
    reqs: list[tuple[float, float, float]], replicas: list[int]
) -> None:
    reqs.sort()
    q = queue([r[0] for r in reqs], [r[1] for r in reqs], [r[2] for r in reqs], allowance=1.0)
    served = [0.0, 0.0]
    for k, n in enumerate(replicas):
        out = q.serve(float(k), 1.0, [ServerGroup(perf(), n)])
        assert out.prompt_on_time <= out.prompt_served + 1e-6
        assert out.output_on_time <= out.output_served + 1e-6
        served[0] += out.prompt_served
        served[1] += out.output_served
    left = q.backlog_tokens(float("inf"))
    assert served[0] + left[0] == pytest.approx(sum(r[1] for r in reqs), rel=1e-9, abs=1e-6)
    assert served[1] + left[1] == pytest.approx(sum(r[2] for r in reqs), rel=1e-9, abs=1e-6)
