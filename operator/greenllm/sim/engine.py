"""The time-stepped replay: one policy, one trace, a fluid queue, a simulated fleet and its telemetry.

Every step of `step_s` seconds, in this order: the policy decides if it is due (seeing only the telemetry
scraped so far, or the exact work if it is the oracle); the Deployment controller and scheduler move pods;
the queue is served by the replicas ready at the step's start; power and energy are integrated; the
exporters advance and Prometheus scrapes when due.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.performance import PowerSetting
from greenllm.sim.fleet import Fleet, RolloutStrategy
from greenllm.sim.fluidqueue import FluidQueue
from greenllm.sim.policies import DecisionLog, PerfTable, Policy, Truth
from greenllm.sim.telemetry import Telemetry
from greenllm.sim.trace import FloatArray, Trace


@dataclass(frozen=True)
class Scenario:
    spec: GreenModelSpec
    trace: Trace
    perf: PerfTable
    gpus: int  # GPUs of the cluster this GreenModel may use
    step_s: float = 1.0
    startup_s: float = 60.0
    scrape_interval_s: float = 15.0
    metrics_lag_s: float = 0.0
    strategy: RolloutStrategy = field(default_factory=RolloutStrategy)

    @property
    def allowance_s(self) -> float:
        return self.spec.slo.ttft_p90_ms / 1000.0

    @property
    def steps(self) -> int:
        """Enough steps to cover the trace and give its last request its latency allowance."""
        return max(1, math.ceil((self.trace.duration_s + self.allowance_s) / self.step_s - 1e-9))

    @property
    def max_replicas(self) -> int:
        return self.gpus // self.spec.gpu.count


@dataclass
class PolicyRun:
    """Totals and per-step series of one policy over the scenario."""

    name: str
    steps: int
    step_s: float
    energy_j: float = 0.0
    prompt_served: float = 0.0
    output_served: float = 0.0
    prompt_on_time: float = 0.0
    output_on_time: float = 0.0
    quality_weighted_tokens: float = 0.0
    prompt_unserved: float = 0.0
    output_unserved: float = 0.0
    changes: int = 0
    peak_replicas: int = 0  # most pods holding GPUs at once (ready or starting)
    decisions: list[DecisionLog] = field(default_factory=list)
    power_w: FloatArray = field(default_factory=lambda: np.zeros(0))
    ready_replicas: FloatArray = field(default_factory=lambda: np.zeros(0))
    target_replicas: FloatArray = field(default_factory=lambda: np.zeros(0))
    target_variant: list[str] = field(default_factory=list)
    target_limit_w: FloatArray = field(default_factory=lambda: np.zeros(0))
    backlog_tokens: FloatArray = field(default_factory=lambda: np.zeros(0))


def run_policy(scenario: Scenario, policy: Policy, tick: Callable[[int], None] | None = None) -> PolicyRun:
    spec = scenario.spec
    trace = scenario.trace
    dt = scenario.step_s
    steps = scenario.steps
    quality = {v.name: v.quality for v in spec.variants}
    queue = FluidQueue(
        trace.arrival_s, trace.prompt_tokens, trace.output_tokens, trace.weight, scenario.allowance_s
    )
    fleet = Fleet(
        scenario.perf,
        spec.gpu.count,
        scenario.gpus,
        scenario.startup_s,
        scenario.strategy,
        instant=policy.instant,
    )
    telemetry = Telemetry(scenario.scrape_interval_s, scenario.metrics_lag_s)

    def work(start: float, span: float) -> tuple[float, float]:
        return queue.backlog_tokens(start + span, inclusive=False)

    truth = Truth(work) if policy.instant else None
    run = PolicyRun(policy.name, steps, dt)
    run.power_w = np.zeros(steps)
    run.ready_replicas = np.zeros(steps)
    run.target_replicas = np.zeros(steps)
    run.target_limit_w = np.full(steps, np.nan)
    run.backlog_tokens = np.zeros(steps)

    target = policy.initial()
    fleet.start_ready(target, 0.0)
    idle = sum(g.replicas * g.perf.idle_power_w for _, g in fleet.groups(0.0))
    telemetry.start(0.0, len(fleet.ready_pods(0.0)), idle)
    next_decision = 0.0 if policy.interval_s == 0.0 else policy.interval_s
    for k in range(steps):
        now = k * dt
        if now + 1e-9 >= next_decision:
            log = policy.decide(now, telemetry.view(now), truth)
            run.decisions.append(log)
            if log.target != target:
                run.changes += 1
            target = log.target
            fleet.apply(target, now)
            next_decision = now + dt if policy.interval_s == 0.0 else next_decision + policy.interval_s
        fleet.reconcile(now)
        groups = fleet.groups(now)
        served = queue.serve(now, dt, [g for _, g in groups])
        power = fleet.power_w(now, dt, groups, served.loads)
        run.energy_j += power.total_w * dt
        run.prompt_served += served.prompt_served
        run.output_served += served.output_served
        run.prompt_on_time += served.prompt_on_time
        run.output_on_time += served.output_on_time
        busy = 0.0
        for (variant, group), load in zip(groups, served.loads, strict=True):
            run.quality_weighted_tokens += quality[variant] * (load.prompt_tokens + load.output_tokens)
            busy += load.prompt_tokens / group.perf.prompt_tokens_per_s
            busy += load.output_tokens / group.perf.output_tokens_per_s
        ready = sum(g.replicas for _, g in groups)
        run.peak_replicas = max(run.peak_replicas, fleet.holding_gpus())
        end = now + dt
        telemetry.record_step(
            end,
            dt,
            prompt_served=served.prompt_served,
            output_served=served.output_served,
            energy_j=power.total_w * dt,
            busy_replica_s=busy,
            ready_replicas=ready,
            power_w=power.total_w,
            requests_waiting=queue.waiting_requests(end),
            requests_running=queue.running_requests(end),
            first_tokens=served.first_tokens,
            requests_completed=served.requests_completed,
        )
        run.power_w[k] = power.total_w
        run.ready_replicas[k] = ready
        run.target_replicas[k] = target.replicas
        run.target_variant.append(target.variant)
        if target.setting.limit_w is not None:
            run.target_limit_w[k] = target.setting.limit_w
        backlog = queue.backlog_tokens(end)
        run.backlog_tokens[k] = backlog[0] + backlog[1]
        if tick is not None:
            tick(1)
    left = queue.backlog_tokens(math.inf)
    run.prompt_unserved, run.output_unserved = left
    return run


def peak_utilization(
    trace: Trace, spec: GreenModelSpec, perf: PerfTable, variant: str, window_s: float
) -> float:
    """Most replicas of `variant` at default power the trace keeps busy, averaged over any aligned window."""
    p = perf(variant, PowerSetting())
    bins = max(1, math.ceil(trace.duration_s / window_s - 1e-9) + 1)
    prompt, output = trace.binned(window_s, bins)
    busy = (prompt / p.prompt_tokens_per_s + output / p.output_tokens_per_s) / window_s
    return float(busy.max())


def static_replicas(peak_busy: float, headroom: float) -> int:
    """Replicas that serve the peak with the spec's headroom (at least one)."""
    return max(1, math.ceil(peak_busy * (1.0 + headroom) - 1e-9))


def rate_for_peak_replicas(peak_busy: float, headroom: float, replicas: int) -> float:
    """The largest rate factor at which the static baseline needs exactly `replicas`."""
    if peak_busy <= 0:
        raise ValueError("the trace has no load to scale")
    factor = replicas / (peak_busy * (1.0 + headroom))
    # Land strictly inside (replicas - 1, replicas] despite rounding.
    while static_replicas(peak_busy * factor, headroom) > replicas:
        factor = math.nextafter(factor, 0.0)
    return factor
