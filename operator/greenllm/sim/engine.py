"""The replay: one policy, one trace, request by request, on a simulated fleet with its telemetry.

Every step of `step_s` seconds (1 s), in this order:
1. the policy decides if it is due (from the telemetry scraped so far; only `clairvoyant` and `instant`
   are handed the trace itself);
2. the Deployment controller and scheduler move pods (`fleet.Fleet`); a pod that turns ready gets a
   server (`server.Server`), a deleted pod stops taking requests and finishes what it holds;
3. each request arriving in the step is routed, at its arrival time, to the ready server the router
   expects to start its prompt soonest (least loaded: the router's own estimate of each server's queued
   prompt work, as an LLM-aware router such as vLLM's production stack keeps it);
4. every server runs up to the step's end (chunked prefill and decode, `server` module);
5. the fast tier: each server's own queue picks its efficient or burst setting for the next step
   (`core.fasttier.next_mode`, the node agent's rule);
6. the exporters advance and Prometheus scrapes when due.
Requests with no ready server wait in front of the Service until one is ready.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.burst import VLLM_MAX_BATCHED_TOKENS, VLLM_MAX_NUM_SEQS
from greenllm.core.fasttier import FastState, Mode, QueueReading, next_mode
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.loop.promql import VLLM_TPOT_BUCKETS_S, VLLM_TTFT_BUCKETS_S, slo_interpolation
from greenllm.sim.fleet import Fleet, Pod, RolloutStrategy
from greenllm.sim.policies import DecisionLog, PerfTable, Policy, Truth
from greenllm.sim.server import Requests, Server
from greenllm.sim.telemetry import SimulatedPrometheus
from greenllm.sim.trace import FloatArray, Trace

# How long a deleted pod may keep serving what it holds (Kubernetes' default terminationGracePeriodSeconds).
GRACE_S = 30.0


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
    # vLLM's prompt-chunk budget per variant, as the operator renders it (core.burst.token_budget); a
    # variant missing here runs with vLLM's default.
    token_budgets: Mapping[str, int] = field(default_factory=dict)
    # vLLM's max_num_seqs per variant as rendered (core.burst.max_running); vLLM's default otherwise.
    running_limits: Mapping[str, int] = field(default_factory=dict)
    drain_s: float = 120.0  # after the last arrival, how long the fleet may finish what it holds
    # Score only from here on (s): the loop before it is warm-up (`Trace.repeated`), as an operator that
    # has been running sees the previous hours; requests arriving earlier and energy spent earlier count
    # for nothing.
    measure_from_s: float = 0.0

    @property
    def ttft_slo_s(self) -> float:
        return self.spec.slo.ttft_p90_ms / 1000.0

    @property
    def tpot_slo_s(self) -> float:
        return self.spec.slo.tpot_p90_ms / 1000.0

    @property
    def steps(self) -> int:
        """Enough steps to cover the trace and give its last request its TTFT allowance."""
        return max(1, math.ceil((self.trace.duration_s + self.ttft_slo_s) / self.step_s - 1e-9))

    def gpus_per_replica(self) -> dict[str, int]:
        """GPUs one pod of each variant holds (its gpuCount, else spec.gpu.count)."""
        return {v.name: self.spec.gpus_per_replica(v) for v in self.spec.variants}

    def max_replicas(self, variant: str) -> int:
        """The most replicas of `variant` the cluster's GPUs hold."""
        return self.gpus // self.spec.gpus_per_replica(self.spec.variant(variant))


@dataclass
class PolicyRun:
    """Totals, per-request latencies and per-step series of one policy over the scenario."""

    name: str
    steps: int
    step_s: float
    arrival_s: FloatArray
    prompt_tokens: FloatArray
    output_tokens: FloatArray
    ttft_s: FloatArray = field(default_factory=lambda: np.zeros(0))  # NaN: never got its first token
    tpot_s: FloatArray = field(default_factory=lambda: np.zeros(0))  # NaN: one-token or unfinished
    finished: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    energy_idle_j: float = 0.0  # ready replicas with nothing to do
    energy_starting_j: float = 0.0  # pods holding GPUs while they start
    energy_prefill_j: float = 0.0
    energy_decode_j: float = 0.0
    quality_weighted_tokens: float = 0.0
    changes: int = 0
    peak_replicas: int = 0  # most pods holding GPUs at once (ready or starting)
    peak_gpus: int = 0  # most GPUs held at once (each pod its variant's count)
    fast_switches: int = 0
    burst_replica_s: float = 0.0  # replica-seconds at the burst setting (fast tier)
    decisions: list[DecisionLog] = field(default_factory=list)
    power_w: FloatArray = field(default_factory=lambda: np.zeros(0))
    ready_replicas: FloatArray = field(default_factory=lambda: np.zeros(0))
    target_replicas: FloatArray = field(default_factory=lambda: np.zeros(0))
    target_variant: list[str] = field(default_factory=list)
    target_limit_w: FloatArray = field(default_factory=lambda: np.zeros(0))
    waiting: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def energy_j(self) -> float:
        return self.energy_idle_j + self.energy_starting_j + self.energy_prefill_j + self.energy_decode_j


@dataclass
class _Live:
    """A ready pod's server and its fast-tier state."""

    server: Server
    pod: Pod
    fast: FastState = field(default_factory=FastState)
    peak_waiting: float = 0.0
    peak_arrivals: int = 0  # most requests routed to it between two fast-tier reads since the scrape

    @property
    def variant(self) -> str:
        return self.pod.variant


class _Router:
    """Least loaded: the server whose queued prompt work (as the router has routed it) ends soonest."""

    @staticmethod
    def pick(servers: list[Server], at: float) -> Server:
        best = servers[0]
        best_key = max(best.routed_free_at, at)
        for s in servers[1:]:
            key = max(s.routed_free_at, at)
            if key < best_key:
                best, best_key = s, key
        return best

    @staticmethod
    def routed(server: Server, at: float, prompt: float) -> None:
        server.routed_free_at = max(server.routed_free_at, at) + prompt / server.perf.prompt_tokens_per_s


def run_policy(scenario: Scenario, policy: Policy, tick: Callable[[int], None] | None = None) -> PolicyRun:
    spec = scenario.spec
    trace = scenario.trace
    dt = scenario.step_s
    steps = scenario.steps
    quality = {v.name: v.quality for v in spec.variants}
    reqs = Requests(trace.arrival_s.tolist(), trace.prompt_tokens.tolist(), trace.output_tokens.tolist())
    fleet = Fleet(
        scenario.perf,
        scenario.gpus_per_replica(),
        scenario.gpus,
        scenario.startup_s,
        scenario.strategy,
        instant=policy.instant,
    )
    telemetry = SimulatedPrometheus(scenario.scrape_interval_s, scenario.metrics_lag_s)
    truth = Truth(trace) if policy.clairvoyant else None
    run = PolicyRun(policy.name, steps, dt, trace.arrival_s, trace.prompt_tokens, trace.output_tokens)
    run.power_w = np.zeros(steps)
    run.ready_replicas = np.zeros(steps)
    run.target_replicas = np.zeros(steps)
    run.target_limit_w = np.full(steps, np.nan)
    run.waiting = np.zeros(steps)
    ttft_slo, tpot_slo = scenario.ttft_slo_s, scenario.tpot_slo_s
    # What the operator's attainment query credits a request with (vLLM's buckets, interpolated).
    ttft_credit = histogram_credit(VLLM_TTFT_BUCKETS_S, ttft_slo)
    tpot_credit = histogram_credit(VLLM_TPOT_BUCKETS_S, tpot_slo)

    def new_server(pod: Pod, now: float) -> _Live:
        fast = FastState()
        tier = fleet.target.fast_tier if fleet.target is not None else None
        setting = tier.setting(fast.mode) if tier is not None else fleet.setting
        server = Server(
            reqs,
            scenario.perf(pod.variant, setting),
            now,
            max_batched_tokens=scenario.token_budgets.get(pod.variant, VLLM_MAX_BATCHED_TOKENS),
            max_running=scenario.running_limits.get(pod.variant, VLLM_MAX_NUM_SEQS),
            tpot_slo_s=tpot_slo,
        )
        return _Live(server, pod, fast)

    live: dict[int, _Live] = {}  # id(pod) -> its server
    everyone: list[_Live] = []  # every server the run has had (energy and counters)
    draining: list[tuple[float, _Live]] = []  # (deadline, server) of deleted pods
    pending: list[int] = []  # requests that found no ready server
    next_request = 0
    n_requests = len(reqs)
    first_seen = 0
    finish_seen = 0
    served_prompt = served_output = served_requests = 0.0
    busy_before = energy_before = 0.0

    target = policy.initial()
    fleet.start_ready(target, 0.0)
    for pod in fleet.pods:
        live[id(pod)] = new_server(pod, 0.0)
        everyone.append(live[id(pod)])
    telemetry.start(0.0, len(live), sum(x.server.perf.idle_power_w for x in live.values()))
    next_decision = 0.0 if policy.interval_s == 0.0 else policy.interval_s
    k0 = min(steps - 1, max(0, math.ceil(scenario.measure_from_s / dt - 1e-9)))
    snapshot = _Totals()
    for k in range(steps):
        now = k * dt
        end = now + dt
        if k == k0 and k0 > 0:
            snapshot = _totals(everyone)
            run.energy_starting_j = 0.0
            run.changes = run.fast_switches = run.peak_replicas = run.peak_gpus = 0
            run.burst_replica_s = 0.0
            run.decisions = []
        if now + 1e-9 >= next_decision:
            log = policy.decide(now, telemetry.view(now), truth)
            run.decisions.append(log)
            if (log.target.variant, log.target.replicas, log.target.setting) != (
                target.variant,
                target.replicas,
                target.setting,
            ):
                run.changes += 1
            target = log.target
            fleet.apply(target, now)
            next_decision = now + dt if policy.interval_s == 0.0 else next_decision + policy.interval_s
        fleet.reconcile(now)
        # Pods that turned ready get a server; deleted pods drain.
        current = {id(p): p for p in fleet.pods if p.is_ready(now)}
        # A deleted pod's id may be reused by a new pod object: the server belongs to the object.
        for pid in [pid for pid, x in live.items() if current.get(pid) is not x.pod]:
            draining.append((now + GRACE_S, live.pop(pid)))
        for pid, pod in current.items():
            if pid not in live:
                live[pid] = new_server(pod, now)
                everyone.append(live[pid])
        servers = [x.server for x in live.values()]
        # A new target's settings reach every running server at once (the agent applies them).
        tier = target.fast_tier
        for x in live.values():
            setting = tier.setting(x.fast.mode) if tier is not None else target.setting
            _set_perf(x, scenario.perf(x.variant, setting))
        # Route this step's arrivals.
        if servers and pending:
            for i in pending:
                s = _Router.pick(servers, now)
                _Router.routed(s, now, reqs.prompt[i])
                s.add(i, now)
            pending = []
        while next_request < n_requests and reqs.arrival[next_request] < end:
            i = next_request
            at = reqs.arrival[i]
            if servers:
                s = _Router.pick(servers, at)
                _Router.routed(s, at, reqs.prompt[i])
                s.add(i, max(at, s.clock))
            else:
                pending.append(i)
            next_request += 1
        for x in live.values():
            x.server.advance(end)
        still: list[tuple[float, _Live]] = []
        for deadline, x in draining:
            x.server.advance(min(end, deadline))
            if not x.server.idle and end < deadline:
                still.append((deadline, x))
        draining = still
        # The fast tier reads every pod once per step.
        waiting_now = running_now = 0.0
        peak_sum = arrivals_sum = 0.0
        for x in live.values():
            reading = QueueReading(float(x.server.waiting), float(x.server.running))
            waiting_now += reading.waiting
            running_now += reading.running
            x.peak_waiting = max(x.peak_waiting, reading.waiting)
            peak_sum += x.peak_waiting
            x.peak_arrivals = max(x.peak_arrivals, x.server.arrived)
            x.server.arrived = 0
            arrivals_sum += x.peak_arrivals
            if tier is not None:
                mode_before = x.fast.mode
                x.fast = next_mode(tier.rule, x.fast, end, reading)
                if x.fast.mode is not mode_before:
                    run.fast_switches += 1
                if x.fast.mode is Mode.BURST:
                    run.burst_replica_s += dt
        starting_w = fleet.starting_power_w(now)
        run.energy_starting_j += starting_w * dt
        totals = _totals(everyone)
        step_energy = totals.energy_j - energy_before + starting_w * dt
        energy_before = totals.energy_j
        # Latency histograms of the requests whose first token / last token came in this step.
        ttft_ok = ttft_n = tpot_ok = tpot_n = 0.0
        new_first = reqs.first_token_log[first_seen:]
        first_seen = len(reqs.first_token_log)
        first_events: list[tuple[float, float, float]] = []
        for i in new_first:
            ttft = reqs.first_token[i] - reqs.arrival[i]
            ttft_n += 1.0
            ttft_ok += ttft_credit(ttft)
            first_events.append((reqs.first_token[i], ttft, 1.0))
        for i in reqs.finish_log[finish_seen:]:
            if reqs.output[i] > 1.0:
                tpot = (reqs.finish[i] - reqs.first_token[i]) / (reqs.output[i] - 1.0)
                tpot_n += 1.0
                tpot_ok += tpot_credit(tpot)
        finish_seen = len(reqs.finish_log)
        ready = len(live)
        run.peak_replicas = max(run.peak_replicas, fleet.holding_pods())
        run.peak_gpus = max(run.peak_gpus, fleet.holding_gpus())
        telemetry.record_step(
            end,
            dt,
            prompt_served=totals.prompt - served_prompt,
            output_served=totals.output - served_output,
            energy_j=step_energy,
            busy_replica_s=totals.busy_s - busy_before,
            ready_replicas=ready,
            power_w=step_energy / dt,
            requests_waiting=waiting_now + len(pending),
            requests_running=running_now,
            first_tokens=first_events,
            requests_completed=totals.completed - served_requests,
            latency=(ttft_ok, ttft_n, tpot_ok, tpot_n),
            waiting_peak=peak_sum,
            arrivals_peak=arrivals_sum,
        )
        if telemetry.samples and telemetry.samples[-1].time == end:
            for x in live.values():
                x.peak_waiting = 0.0  # the agent's peak gauges reset when they are scraped
                x.peak_arrivals = 0
        served_prompt, served_output = totals.prompt, totals.output
        served_requests, busy_before = totals.completed, totals.busy_s
        run.power_w[k] = step_energy / dt
        run.ready_replicas[k] = ready
        run.target_replicas[k] = target.replicas
        run.target_variant.append(target.variant)
        run.waiting[k] = waiting_now + len(pending)
        if target.setting.limit_w is not None:
            run.target_limit_w[k] = target.setting.limit_w
        if tick is not None:
            tick(1)
    # The fleet finishes what it holds (no new arrivals), for at most drain_s.
    # Only work in hand is finished (no idle time is billed after it), deleted pods within their grace.
    final = steps * dt
    for x in live.values():
        x.server.advance(final + scenario.drain_s, stop_when_idle=True)
    for deadline, x in draining:
        x.server.advance(min(deadline, final + scenario.drain_s), stop_when_idle=True)
    totals = _totals(everyone)
    run.energy_idle_j = totals.idle_j - snapshot.idle_j
    run.energy_prefill_j = totals.prefill_j - snapshot.prefill_j
    run.energy_decode_j = totals.decode_j - snapshot.decode_j
    for x in everyone:
        run.quality_weighted_tokens += quality[x.variant] * (
            x.server.prompt_tokens_done + x.server.generated_tokens
        )
    run.ttft_s = np.asarray(reqs.first_token) - trace.arrival_s
    finish = np.asarray(reqs.finish)
    out = trace.output_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        run.tpot_s = np.where(out > 1.0, (finish - np.asarray(reqs.first_token)) / (out - 1.0), np.nan)
    run.finished = ~np.isnan(finish)
    if k0 > 0:
        _keep_from(run, k0, scenario.measure_from_s)
    return run


def histogram_credit(buckets: tuple[float, ...], slo_s: float) -> Callable[[float], float]:
    """How much one observation adds to the operator's count within the SLO (`slo_interpolation`): 1 at
    or below the bucket boundary under the SLO, the SLO's fraction between that boundary and the next, 0
    above; None-like (never within) when the SLO is below the first boundary."""
    around = slo_interpolation(buckets, slo_s)
    if around is None:
        return lambda value: 0.0
    lo, hi, frac = float(around[0]), float(around[1]), around[2]

    def credit(value: float) -> float:
        if value <= lo * (1 + 1e-12):
            return 1.0
        return frac if value <= hi * (1 + 1e-12) else 0.0

    return credit


def _keep_from(run: PolicyRun, k0: int, from_s: float) -> None:
    """Drop the warm-up: requests arriving before `from_s`, steps before `k0`; times re-based to 0."""
    keep = run.arrival_s >= from_s
    run.arrival_s = run.arrival_s[keep] - from_s
    run.prompt_tokens = run.prompt_tokens[keep]
    run.output_tokens = run.output_tokens[keep]
    run.ttft_s = run.ttft_s[keep]
    run.tpot_s = run.tpot_s[keep]
    run.finished = run.finished[keep]
    run.steps -= k0
    run.power_w = run.power_w[k0:]
    run.ready_replicas = run.ready_replicas[k0:]
    run.target_replicas = run.target_replicas[k0:]
    run.target_variant = run.target_variant[k0:]
    run.target_limit_w = run.target_limit_w[k0:]
    run.waiting = run.waiting[k0:]
    run.decisions = [replace(d, t=d.t - from_s) for d in run.decisions]


def _set_perf(x: _Live, perf: ReplicaPerformance) -> None:
    if x.server.perf is not perf:
        x.server.perf = perf


@dataclass(frozen=True, slots=True)
class _Totals:
    idle_j: float = 0.0
    prefill_j: float = 0.0
    decode_j: float = 0.0
    prompt: float = 0.0
    output: float = 0.0
    completed: float = 0.0
    busy_s: float = 0.0

    @property
    def energy_j(self) -> float:
        return self.idle_j + self.prefill_j + self.decode_j


def _totals(servers: list[_Live]) -> _Totals:
    """Counters summed over every server so far (what the exporters' counters hold)."""
    idle = prefill = decode = prompt = output = completed = busy = 0.0
    for x in servers:
        s = x.server
        idle += s.energy_idle_j
        prefill += s.energy_prefill_j
        decode += s.energy_decode_j
        prompt += s.prompt_tokens_done
        output += s.generated_tokens
        completed += s.completed
        busy += s.busy_s
    return _Totals(idle, prefill, decode, prompt, output, completed, busy)


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
    """The largest rate factor at which the peak rule needs exactly `replicas`."""
    if peak_busy <= 0:
        raise ValueError("the trace has no load to scale")
    factor = replicas / (peak_busy * (1.0 + headroom))
    # Land strictly inside (replicas - 1, replicas] despite rounding.
    while static_replicas(peak_busy * factor, headroom) > replicas:
        factor = math.nextafter(factor, 0.0)
    return factor
