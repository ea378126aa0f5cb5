"""The four policies compared on one trace: greenllm, static, hpa and oracle.

`greenllm` runs the operator's own loop: `controller.metrics.build_queries` and `observe` turn the
simulated Prometheus into an `Observation`, and `core.step.step` decides, every `spec.scaling.interval`.
`static` and `hpa` are what teams run today (highest-quality variant, default power). `oracle` is the
lower bound: every simulation step it takes the cheapest configuration that can serve the queued and
arriving work of that step, knowing it exactly, with no start-up delay and no switching cost.
Only the oracle is ever handed the `Truth`; the others read the `PrometheusView` of past scrapes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from greenllm.api.durations import parse_duration
from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.controller.metrics import build_queries, observe
from greenllm.controller.metrics import max_age_s as metrics_max_age_s
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.planner import PerformanceSource
from greenllm.core.step import LoopState, initial_decision, initial_state, step
from greenllm.sim.fleet import Target
from greenllm.sim.telemetry import PrometheusView


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
            raise SimulationError(
                f"the energy model has no profile for variant {variant!r} of {self.spec.model.name} on "
                f"{self.spec.gpu.type} (x{self.spec.gpu.count}) within the TPOT SLO"
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
    """The exact work in front of the fleet: handed to the oracle only."""

    work: Callable[[float, float], tuple[float, float]]  # (start, dt) -> prompt, output tokens to serve


@dataclass(frozen=True, slots=True)
class DecisionLog:
    """One decision step of a policy (written out for greenllm with --decisions-out)."""

    t: float
    target: Target
    demand_prompt_tokens_per_s: float | None
    demand_output_tokens_per_s: float | None
    reason: str
    expected_power_w: float | None = None
    budget_met: bool | None = None
    observation: Observation | None = None

    def as_json(self) -> dict[str, Any]:
        obs = self.observation
        return {
            "t": round(self.t, 6),
            "variant": self.target.variant,
            "replicas": self.target.replicas,
            "power_limit_w": self.target.setting.limit_w,
            "locked_clock_mhz": self.target.setting.locked_clock_mhz,
            "demand_prompt_tokens_per_s": self.demand_prompt_tokens_per_s,
            "demand_output_tokens_per_s": self.demand_output_tokens_per_s,
            "expected_power_w": self.expected_power_w,
            "budget_met": self.budget_met,
            "reason": self.reason,
            "observed": None
            if obs is None
            else {
                "requests_waiting": obs.requests_waiting,
                "requests_running": obs.requests_running,
                "power_w": obs.power_w,
                "energy_j_total": obs.energy_j_total,
                "ttft_p90_ms": obs.ttft_p90_ms,
                "requests_per_s": obs.requests_per_s,
                "carbon_intensity_g_per_kwh": obs.carbon_intensity_g_per_kwh,
            },
        }


class Policy(ABC):
    name: str
    interval_s: float  # decide every interval_s of simulated time (0: every simulation step)
    instant: bool = False  # the fleet changes at once, without start-up delay (the oracle only)

    @abstractmethod
    def initial(self) -> Target:
        """The fleet in place when the simulation starts."""

    @abstractmethod
    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        """The target from `now` on (`now` in seconds from the trace start)."""


class StaticPolicy(Policy):
    name = "static"

    def __init__(self, variant: str, replicas: int) -> None:
        self.interval_s = math.inf
        self._target = Target(variant, replicas, PowerSetting())

    def initial(self) -> Target:
        return self._target

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        return DecisionLog(now, self._target, None, None, "static: sized for the trace's peak")


class GreenllmPolicy(Policy):
    """The operator's decision loop, fed by the simulated Prometheus through the controller's own queries.

    Mirrors one tick of `controller.handlers.tick`: the same `build_queries`, `observe` (with the same
    staleness limit and running energy total) and `step`, with the loop state kept between ticks.
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
        self.interval_s = parse_duration(spec.scaling.interval)
        self._start_epoch = start_epoch
        self._carbon = carbon_g_per_kwh
        self._window = window
        self._window_s = parse_duration(window)
        self._state: LoopState | None = None

    def initial(self) -> Target:
        decision = initial_decision(self.spec, self.source)
        self._state = initial_state(self.spec, self._start_epoch, decision)
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
        since_rounded = None if since_s is None else float(max(1, round(since_s)))

        def query(promql: str) -> Any:
            value = _answer(view, names[promql], self._window_s, since_rounded)
            return [] if value is None else [{"metric": {}, "value": [epoch, repr(value)]}]

        max_age_s = metrics_max_age_s(self.interval_s)  # the operator loop's own rule
        obs = observe(query, queries, epoch, max_age_s, state.last_energy_j)
        self._state, decision = step(self.spec, state, obs, epoch, self.source)
        return DecisionLog(
            t=now,
            target=_target(decision),
            demand_prompt_tokens_per_s=obs.prompt_tokens_per_s,
            demand_output_tokens_per_s=obs.output_tokens_per_s,
            reason=decision.reason,
            expected_power_w=decision.expected_power_w,
            budget_met=decision.budget_met,
            observation=obs,
        )


def _answer(view: PrometheusView, name: str, window_s: float, since_s: float | None) -> float | None:
    """The value Prometheus would return for the controller's query `name`."""
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
    # tpot_p90_ms: the fluid model keeps every replica within its TPOT SLO and keeps no per-token times.
    return None


def _target(decision: Decision) -> Target:
    return Target(decision.variant, decision.replicas, decision.setting)


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

    def initial(self) -> Target:
        return Target(self._variant, self._current, PowerSetting())

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
        return DecisionLog(now, Target(self._variant, desired, PowerSetting()), prompt, output, why)


class OraclePolicy(Policy):
    """Per simulation step, the least-power configuration that can serve that step's work."""

    name = "oracle"
    instant = True

    def __init__(self, spec: GreenModelSpec, perf: PerfTable, dt: float, max_replicas: int) -> None:
        self.interval_s = 0.0
        self._dt = dt
        self._min = spec.replicas.min
        self._max = min(spec.replicas.max, max_replicas)
        settings = perf.source.power_settings(spec.gpu, spec.power)
        self._options: list[tuple[str, PowerSetting, ReplicaPerformance]] = []
        for v in spec.variants:
            if v.quality < spec.slo.min_quality:
                continue
            for s in settings:
                p = perf.find(v.name, s)
                if p is not None:
                    self._options.append((v.name, s, p))
        if not self._options:
            raise SimulationError("no variant above slo.minQuality has a profile within the TPOT SLO")

    def initial(self) -> Target:
        name, setting, _ = self._options[0]
        return Target(name, max(self._min, 1), setting)

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        assert truth is not None, "the oracle needs the truth"
        prompt, output = truth.work(now, self._dt)
        best: tuple[float, Target] | None = None
        for name, setting, p in self._options:
            busy = (prompt / p.prompt_tokens_per_s + output / p.output_tokens_per_s) / self._dt
            need = max(self._min, math.ceil(busy - 1e-9))
            if need > self._max:
                need = self._max  # cannot serve it all; the least shortfall among these is still cheapest
            # Fewest replicas is nearly always cheapest (idle power); a couple more are checked in case a
            # concave power curve makes spreading the load pay.
            for n in range(need, min(need + 2, self._max) + 1):
                watts = 0.0 if n == 0 else n * p.power_w(prompt / (n * self._dt), output / (n * self._dt))
                shortfall = max(0.0, busy - n)
                key = shortfall * 1e12 + watts
                if best is None or key < best[0]:
                    best = (key, Target(name, n, setting))
        assert best is not None
        return DecisionLog(
            now, best[1], prompt / self._dt, output / self._dt, "oracle: cheapest for the work"
        )
