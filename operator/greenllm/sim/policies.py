"""The policies compared on one trace.

`greenllm` runs the operator's own loop: `loop.promql.build_queries` and `observe` turn the
simulated Prometheus into an `Observation`, `loop.tick.tick` decides every `spec.scaling.interval` and
says it in a status as the operator would write it, and
the engine runs the node agent's fast tier per replica per second. `static` (a constant fleet) and `hpa`
are what teams run without greenllm. `clairvoyant` knows the future requests but decides at greenllm's
interval and waits for the same pod start-up. `instant` resizes every second with no start-up: it cannot
be reached by any real fleet and is not a bound. Only `clairvoyant` and `instant` are handed the `Truth`;
the others read the `PrometheusView` of past scrapes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from greenllm.api.durations import parse_duration
from greenllm.api.v1alpha1 import GreenModelSpec, GreenModelStatus, Variant
from greenllm.core import status as st
from greenllm.core.decision import Decision, Observation
from greenllm.core.fasttier import FastTier
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_rules import PerformanceSource
from greenllm.core.step import LoopState, initial_decision, initial_state
from greenllm.loop.promql import build_queries, observe
from greenllm.loop.promql import max_age_s as metrics_max_age_s
from greenllm.loop.tick import MetricsVerdict, stamp, tick
from greenllm.sim.fleet import FleetTarget
from greenllm.sim.telemetry import PrometheusView
from greenllm.sim.trace import Trace


class SimulationError(Exception):
    """The scenario cannot be simulated as given (the message says why)."""


class PerfTable:
    """`source.performance` per (variant, setting), cached; the one place the simulator reads profiles."""

    def __init__(self, spec: GreenModelSpec, source: PerformanceSource) -> None:
        self.spec = spec
        self.source = source
        self._cache: dict[tuple[str, PowerSetting], ReplicaPerformance | None] = {}

    def find(self, variant: str, setting: PowerSetting) -> ReplicaPerformance | None:
        key = (variant, setting)
        if key not in self._cache:
            self._cache[key] = self.source.performance(self.spec, self.spec.variant(variant), setting)
        return self._cache[key]

    def __call__(self, variant: str, setting: PowerSetting) -> ReplicaPerformance:
        """Performance of running pods. The agent applies one setting to all of a GreenModel's GPUs; where
        the energy model has no profile of an (old, still rolling) variant at it, the pods are taken to
        run as at default power."""
        perf = self.find(variant, setting) or self.find(variant, PowerSetting())
        if perf is None:
            gpus = self.spec.gpus_per_replica(self.spec.variant(variant))
            raise SimulationError(
                f"the energy model has no profile for variant {variant!r} of {self.spec.model.name} on "
                f"{self.spec.gpu.type} (x{gpus}) within the TPOT SLO"
            )
        return perf


def top_variant(spec: GreenModelSpec) -> Variant:
    """The highest-quality variant (the first listed on a tie): what a team deploys without greenllm."""
    best = spec.variants[0]
    for v in spec.variants[1:]:
        if v.quality > best.quality:
            best = v
    return best


@dataclass(frozen=True, slots=True)
class Truth:
    """The requests themselves: handed to the clairvoyant policies only."""

    trace: Trace


@dataclass(frozen=True, slots=True)
class DecisionLog:
    """One decision step of a policy (written out for greenllm with --decisions-out)."""

    t: float
    target: FleetTarget
    demand_prompt_tokens_per_s: float | None
    demand_output_tokens_per_s: float | None
    reason: str
    expected_power_w: float | None = None
    budget_met: bool | None = None
    observation: Observation | None = None
    reason_kind: str | None = None  # greenllm's Decision.kind (api.ReasonKind); None for the baselines

    def as_json(self) -> dict[str, Any]:
        obs = self.observation
        tier = self.target.fast_tier
        return {
            "t": round(self.t, 6),
            "variant": self.target.variant,
            "replicas": self.target.replicas,
            "power_limit_w": self.target.setting.limit_w,
            "locked_clock_mhz": self.target.setting.locked_clock_mhz,
            "efficient": _setting_json(self.target.setting if tier is None else tier.efficient),
            "burst": None if tier is None else _setting_json(tier.burst),
            "demand_prompt_tokens_per_s": self.demand_prompt_tokens_per_s,
            "demand_output_tokens_per_s": self.demand_output_tokens_per_s,
            "expected_power_w": self.expected_power_w,
            "budget_met": self.budget_met,
            "reason": self.reason,
            "reason_kind": self.reason_kind,
            "observed": None
            if obs is None
            else {
                "prompt_tokens_per_s": obs.prompt_tokens_per_s,
                "output_tokens_per_s": obs.output_tokens_per_s,
                "requests_waiting": obs.requests_waiting,
                "requests_running": obs.requests_running,
                "power_w": obs.power_w,
                "energy_j_total": obs.energy_j_total,
                "ttft_p90_ms": obs.ttft_p90_ms,
                "requests_per_s": obs.requests_per_s,
                "carbon_intensity_g_per_kwh": obs.carbon_intensity_g_per_kwh,
                "attainment": obs.attainment,
                "peak_waiting_requests": obs.peak_waiting_requests,
                "peak_arrivals": obs.peak_arrivals,
            },
        }


def _setting_json(setting: PowerSetting) -> dict[str, Any]:
    return {"power_limit_w": setting.limit_w, "locked_clock_mhz": setting.locked_clock_mhz}


class Policy(ABC):
    name: str
    interval_s: float  # decide every interval_s of simulated time (0: every simulation step)
    instant: bool = False  # the fleet changes at once, without start-up delay (`instant` only)
    clairvoyant: bool = False  # handed the Truth

    @abstractmethod
    def initial(self) -> FleetTarget:
        """The fleet in place when the simulation starts."""

    @abstractmethod
    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        """The target from `now` on (`now` in seconds from the trace start)."""


class StaticPolicy(Policy):
    """A constant fleet: one variant, a count and a power setting that never change."""

    def __init__(
        self, variant: str, replicas: int, setting: PowerSetting | None = None, name: str = "static"
    ):
        self.name = name
        self.interval_s = math.inf
        self._target = FleetTarget(variant, replicas, setting or PowerSetting())

    def initial(self) -> FleetTarget:
        return self._target

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        return DecisionLog(now, self._target, None, None, f"{self.name}: constant fleet")


class GreenllmPolicy(Policy):
    """The operator's decision loop, fed by the simulated Prometheus through the controller's own queries.

    Mirrors one tick of `controller.handlers.tick`: the same `build_queries`, `observe` (with the same
    staleness limit and running energy total) and `loop.tick.tick`, with the loop state and the status
    (what the operator would have written) kept between ticks.
    """

    name = "greenllm"

    def __init__(
        self,
        spec: GreenModelSpec,
        source: PerformanceSource,
        *,
        start_epoch: float,
        carbon_g_per_kwh: float,
        window: str,
    ) -> None:
        self.spec = spec
        self.source = source
        self.interval_s = spec.scaling.interval.seconds
        self._start_epoch = start_epoch
        self._carbon = carbon_g_per_kwh
        self._window = window
        self._window_s = parse_duration(window)
        self._long_s = spec.slo.attainment_window.seconds
        self._state: LoopState | None = None
        self.status = GreenModelStatus()
        # An average power granted from outside (a team EnergyBudget's share: sim.team), obeyed as the
        # loop obeys its own paced energy (core.step.plan_step); None: none.
        self.extra_allowance_w: float | None = None

    def initial(self) -> FleetTarget:
        decision = initial_decision(self.spec, self.source)
        self._state = initial_state(self.spec, self._start_epoch, decision)
        # What reconcile records before the loop's first tick.
        self.status = GreenModelStatus(last_decision=st.decision_record(decision, stamp(self._start_epoch)))
        return _target(decision)

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        state = self._state
        assert state is not None, "initial() first"
        epoch = self._start_epoch + now
        since_s = None if state.last_sample_time is None else epoch - state.last_sample_time
        queries = build_queries(
            self.spec,
            "sim",
            "sim",
            window=self._window,
            since_s=since_s,
            default_carbon_g_per_kwh=self._carbon,
        )
        # The simulator knows the grid intensity it was given; it cannot run a PromQL carbon query.
        queries = replace(queries, carbon_query=None, carbon_static=self._carbon)
        names = {promql: name for name, promql in queries.queries.items()}
        since_rounded = None if since_s is None else max(1, round(since_s * 1000)) / 1000.0

        def query(promql: str) -> Any:
            value = _answer(view, names[promql], self._window_s, since_rounded, self._long_s)
            return [] if value is None else [{"metric": {}, "value": [epoch, repr(value)]}]

        max_age_s = metrics_max_age_s(self.interval_s)  # the operator loop's own rule
        obs = observe(query, queries, epoch, max_age_s, state.last_energy_j)
        verdict = MetricsVerdict.of(obs)
        result = tick(
            self.spec, state, obs, verdict, epoch, self.source, self.status, 1, self.extra_allowance_w
        )
        self._state, decision = result.state, result.decision
        self.status = st.merged(self.status, result.status)
        planned = decision.planned_demand
        return DecisionLog(
            t=now,
            target=_target(decision),
            # The demand the step planned on (served + queue, at its window peak), not the raw rates.
            demand_prompt_tokens_per_s=None if planned is None else planned.prompt_tokens_per_s,
            demand_output_tokens_per_s=None if planned is None else planned.output_tokens_per_s,
            reason=decision.reason,
            expected_power_w=decision.expected_power_w,
            budget_met=decision.budget_met,
            observation=obs,
            reason_kind=decision.kind.value,
        )


def _answer(
    view: PrometheusView, name: str, window_s: float, since_s: float | None, long_s: float
) -> float | None:
    """The value Prometheus would return for the controller's query `name`."""
    if name == "attainment":
        return view.attainment(long_s)
    if name == "peak_arrivals":
        return view.max_over_time("arrivals_peak", long_s)
    if name == "peak_waiting_requests":
        return view.max_over_time("waiting_peak", long_s)
    if name in ("power_w", "requests_waiting", "requests_running"):
        return view.gauge(name)
    if name == "power_age_s":
        return view.gauge_age_s()
    if name == "energy_j":
        return view.increase("energy_j_total", since_s if since_s is not None else window_s)
    if name == "prompt_tokens_per_s":
        return view.rate("prompt_tokens_total", window_s)
    if name == "output_tokens_per_s":
        return view.rate("generation_tokens_total", window_s)
    if name == "requests_per_s":  # rate(vllm:request_success_total[window]), once the controller asks
        return view.rate("requests_total", window_s)
    if name == "ttft_p90_ms":
        value = view.ttft_quantile_s(0.9, window_s)
        return None if value is None else value * 1000.0
    # tpot_p90_ms: the simulated histogram is kept as the share within the SLO only (see attainment).
    return None


def _target(decision: Decision) -> FleetTarget:
    return FleetTarget(decision.variant, decision.replicas, decision.setting, decision.fast_tier)


class HpaPolicy(Policy):
    """A Kubernetes HorizontalPodAutoscaler on GPU utilization (the autoscaling/v2 algorithm).

    desired = ceil(ready * utilization / target) unless within the 10% tolerance; scale-down takes the
    highest recommendation of the stabilization window; scale-up at most max(+4 pods, x2) per sync period;
    clamped to [replicas.min (at least 1), replicas.max]. Defaults are the Kubernetes ones (sync 15 s,
    tolerance 0.1, the default scale-up policies); the 70% target and 5-minute window are the issue's.
    """

    name = "hpa"

    def __init__(
        self,
        spec: GreenModelSpec,
        variant: str,
        *,
        target_utilization: float = 0.7,
        scale_down_window_s: float = 300.0,
        sync_period_s: float = 15.0,
        tolerance: float = 0.1,
        window_s: float = 60.0,
        max_replicas: int | None = None,
    ) -> None:
        self.interval_s = sync_period_s
        self._variant = variant
        self._target_util = target_utilization
        self._down_window = scale_down_window_s
        self._tolerance = tolerance
        self._window_s = window_s
        self._min = max(1, spec.replicas.min)
        self._max = spec.replicas.max if max_replicas is None else min(spec.replicas.max, max_replicas)
        self._current = self._min
        self._recommendations: list[tuple[float, int]] = []

    def initial(self) -> FleetTarget:
        return FleetTarget(self._variant, self._current, PowerSetting())

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        util = view.ratio_of_rates("busy_replica_s_total", "ready_replica_s_total", self._window_s)
        ready = view.gauge("ready_replicas")
        if util is None or ready is None or ready <= 0:
            desired = self._current
            why = "hpa: no utilization metric, keeping replicas"
        else:
            ratio = util / self._target_util
            desired = (
                self._current if abs(ratio - 1.0) <= self._tolerance else math.ceil(ratio * ready - 1e-9)
            )
            why = f"hpa: utilization {util:.0%} vs target {self._target_util:.0%}"
        self._recommendations = [(t, r) for t, r in self._recommendations if t > now - self._down_window]
        self._recommendations.append((now, desired))
        if desired < self._current:
            desired = min(self._current, max(r for _, r in self._recommendations))
        else:
            desired = min(desired, max(self._current + 4, self._current * 2))
        desired = min(max(desired, self._min), self._max)
        self._current = desired
        prompt = view.rate("prompt_tokens_total", self._window_s)
        output = view.rate("generation_tokens_total", self._window_s)
        return DecisionLog(now, FleetTarget(self._variant, desired, PowerSetting()), prompt, output, why)


def prompt_need(
    trace: Trace, horizon_steps: int, ttft_s: float, prefill_tokens_per_s: float, step_s: float = 1.0
) -> list[float]:
    """Per step k, the replicas that prefill every prompt arriving in [k, k + TTFT) within the TTFT SLO at
    `prefill_tokens_per_s` each (a fluid bound: no routing imbalance, no decode)."""
    steps = horizon_steps
    idx = np.minimum((trace.arrival_s // step_s).astype(np.int64), steps - 1)
    per_step = np.bincount(idx, weights=trace.prompt_tokens, minlength=steps).astype(np.float64)
    span = max(1, round(ttft_s / step_s))
    window = np.convolve(per_step, np.ones(span), mode="full")[span - 1 : span - 1 + steps]
    need: list[float] = (window / (prefill_tokens_per_s * ttft_s)).tolist()
    return need


class ClairvoyantPolicy(Policy):
    """Knows every future request. Every `interval_s` it asks for the replicas that the work of the next
    start-up + interval will need (pods asked for now are ready only after start-up), `margin` times the
    fluid need of `prompt_need`; the fast tier runs as greenllm's. `instant=True` is the unreachable
    variant: every second, exactly that second's need, with pods ready at once."""

    clairvoyant = True

    def __init__(
        self,
        name: str,
        variant: str,
        tier: FastTier | None,
        setting: PowerSetting,
        need: list[float],
        *,
        interval_s: float,
        lookahead_steps: int,
        margin: float,
        min_replicas: int,
        max_replicas: int,
        instant: bool = False,
    ) -> None:
        self.name = name
        self.instant = instant
        self.interval_s = 0.0 if instant else interval_s
        self._variant = variant
        self._tier = tier
        self._setting = setting
        self._need = need
        self._ahead = lookahead_steps
        self.margin = margin
        self._min = max(min_replicas, 1)
        self._max = max_replicas

    def _count(self, now: float) -> int:
        k = int(now)
        window = self._need[k : k + max(self._ahead, 1)]
        top = max(window) if window else 0.0
        return min(max(math.ceil(self.margin * top - 1e-9), self._min), self._max)

    def initial(self) -> FleetTarget:
        return FleetTarget(self._variant, self._count(0.0), self._setting, self._tier)

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        assert truth is not None, f"{self.name} needs the truth"
        target = FleetTarget(self._variant, self._count(now), self._setting, self._tier)
        return DecisionLog(now, target, None, None, f"{self.name}: x{self.margin:.2f} the need it foresees")
