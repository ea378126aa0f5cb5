"""No peeking: a decision at time t depends only on what Prometheus had scraped by t - lag.

Black-box: two traces identical before T and different after give identical decisions up to T + lag,
and different ones later (so the test can see a difference when there is one).
"""

from __future__ import annotations

import numpy as np
import pytest
from simkit import FakeSource

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.sim import engine
from greenllm.sim.engine import Scenario, run_policy
from greenllm.sim.policies import GreenllmPolicy, HpaPolicy, PerfTable, Policy
from greenllm.sim.telemetry import PrometheusView, SimulatedPrometheus
from greenllm.sim.trace import Trace

T = 300.0
START_EPOCH = 1_700_000_000.0


def trace(after_factor: float) -> Trace:
    arrival = np.arange(0.0, 900.0, 0.5)
    prompt = 6000.0 + 4000.0 * np.sin(arrival / 60.0) ** 2
    output = np.full_like(arrival, 20.0)
    prompt = np.where(arrival >= T, prompt * after_factor, prompt)
    return Trace("synthetic", START_EPOCH, arrival, prompt, output, float(arrival[-1]))


def policy(name: str, spec: GreenModelSpec) -> Policy:
    if name == "greenllm":
        return GreenllmPolicy(
            spec, FakeSource(), start_epoch=START_EPOCH, carbon_g_per_kwh=400.0, window="1m"
        )
    return HpaPolicy(spec, "hq")


def scenario(spec: GreenModelSpec, tr: Trace, lag: float) -> Scenario:
    return Scenario(
        spec=spec, trace=tr, perf=PerfTable(spec, FakeSource()), gpus=8, startup_s=30.0, metrics_lag_s=lag
    )


@pytest.mark.parametrize("name", ["greenllm", "hpa"])
@pytest.mark.parametrize("lag", [0.0, 45.0])
def test_decisions_before_a_change_do_not_see_it(spec: GreenModelSpec, name: str, lag: float) -> None:
    base = run_policy(scenario(spec, trace(1.0), lag), policy(name, spec))
    # A drop rather than a surge: a saturated fleet only shows its own capacity, so a surge could go unseen.
    changed = run_policy(scenario(spec, trace(0.1), lag), policy(name, spec))
    pairs = list(zip(base.decisions, changed.decisions, strict=True))
    early = [(a, b) for a, b in pairs if a.t <= T + lag]
    assert early, "no decision before the change"
    for a, b in early:
        assert (a.t, a.target, a.demand_prompt_tokens_per_s) == (b.t, b.target, b.demand_prompt_tokens_per_s)
    later = [(a, b) for a, b in pairs if a.t > T + lag]
    assert any(
        (a.target, a.demand_prompt_tokens_per_s) != (b.target, b.demand_prompt_tokens_per_s) for a, b in later
    ), "the change after T never showed: the test is blind"


def test_every_view_ends_before_now_minus_lag(spec: GreenModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[float, float | None]] = []

    class Spy(SimulatedPrometheus):
        def view(self, now: float) -> PrometheusView:
            v = super().view(now)
            seen.append((now, v.last_sample_time))
            return v

    monkeypatch.setattr(engine, "SimulatedPrometheus", Spy)
    lag = 20.0
    run_policy(scenario(spec, trace(1.0), lag), policy("greenllm", spec))
    assert sum(1 for _, last in seen if last is not None) > 10
    for now, last in seen:
        assert last is None or last <= now - lag
