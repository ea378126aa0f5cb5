"""`greenllm simulate --budget`: several GreenModels under one EnergyBudget, against a fixed equal split.

Three arms over the same traces, each member on its own simulated fleet (engine.run_policy, unchanged):

- shared: the budget is divided every interval as the operator divides it (core.allocation): the
  coordinator below plays the budget controller. Each member runs the operator's loop (`GreenllmPolicy`)
  with its effective spec: its own spec with `budget.powerW` lowered to its share of the budget's powerW
  (the tightest wins; the budget's onExhausted applies when the allocation binds), and with its share of
  the budget's energy and carbon paced over the rest of the period as an average allowance its planner
  obeys at expected power (core.step's `extra_allowance_w`). After its step a member reports its two
  frontiers (core.frontier, at the demand the step planned for: priced at the cap's peak and at expected
  power) and its observed energy; once every member has reported for an interval, the two allowances
  (core.allocation.team_allowances_w, from the energy the members' observations show) are divided for the
  next interval, each over the frontiers priced as it is spent, the allocation in force kept when the
  gain is small.
- split: each member alone with 1/N of every limit of the budget (powerW, energyKwh, carbonGrams over
  the same period), the split a team makes by hand, tightened by its own spec.budget.
- shared-same-energy: shared, with the budget moved until the team uses the energy the split used
  (`same_energy_arm`): the comparison at the same total energy.

The members' fleets run in lockstep: one thread each, meeting at the coordinator once per interval (the
engine's loop stays the single-model one). The result does not depend on which thread comes first: an
interval's allocation is made once all of its reports are in, from those reports (in key order) alone.
Members therefore share `spec.scaling.interval`. There are no warm-up replays (unlike single-model
simulate): both arms start cold the same way, and the period account starts with the run.
"""

from __future__ import annotations

import argparse
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.api.durations import parse_duration
from greenllm.api.energybudget import EnergyBudget, EnergyBudgetSpec
from greenllm.api.v1alpha1 import Budget, GreenModel, GreenModelSpec
from greenllm.core import budget as budget_rules
from greenllm.core.allocation import Allocation, FrontierPoint, Member, allocate, team_allowances_w
from greenllm.core.decision import Demand, Observation
from greenllm.core.energy import EnergyModel
from greenllm.core.frontier import WarmFloor, power_frontier
from greenllm.core.step import estimate_demand
from greenllm.sim.engine import PolicyRun, Scenario, run_policy
from greenllm.sim.policies import DecisionLog, GreenllmPolicy, SimulationError, Truth
from greenllm.sim.report import J_PER_KWH, Summary, request_outcomes, summarize
from greenllm.sim.telemetry import PrometheusView
from greenllm.sim.trace import SCALE_MODES, Trace, TraceError

# How long a member waits for the others at an interval before the run is called stuck (wall seconds).
_LOCKSTEP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class MemberInput:
    """One GreenModel of the team and the requests it gets."""

    key: str  # namespace/name
    spec: GreenModelSpec
    trace: Trace
    trace_text: str  # how the trace was made, for the report


# ------------------------------------------------------------------------------------------ the traces


def rotated(trace: Trace, offset_s: float) -> Trace:
    """The trace started `offset_s` into itself, wrapping round its end: the same requests and duration,
    the load `offset_s` earlier (a team's models peak at different times)."""
    span = trace.duration_s
    if span <= 0 or offset_s % span == 0:
        return trace
    arrival = np.mod(trace.arrival_s - offset_s, span)
    order = np.argsort(arrival, kind="stable")
    return Trace(
        name=trace.name,
        start_epoch=trace.start_epoch,
        arrival_s=arrival[order],
        prompt_tokens=trace.prompt_tokens[order],
        output_tokens=trace.output_tokens[order],
        duration_s=span,
        weight=trace.weight,
    )


@dataclass(frozen=True)
class TraceOptions:
    """`--member-trace trace=FILE,offset=DURATION,scale=K,mode=copies|shifted` (every key optional)."""

    path: Path | None = None
    offset_s: float | None = None
    scale: float | None = None
    mode: str | None = None


def parse_member_trace(text: str) -> TraceOptions:
    values: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or key not in ("trace", "offset", "scale", "mode") or not value:
            raise argparse.ArgumentTypeError(
                f"--member-trace {text!r}: expected key=value pairs among trace, offset, scale, mode"
            )
        values[key] = value
    try:
        offset = parse_duration(values["offset"]) if "offset" in values else None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--member-trace offset: {exc}") from None
    scale = None
    if "scale" in values:
        try:
            scale = float(values["scale"])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--member-trace scale: not a number: {values['scale']!r}"
            ) from None
        if not math.isfinite(scale) or scale <= 0:
            raise argparse.ArgumentTypeError(f"--member-trace scale: must be > 0: {values['scale']!r}")
    mode = values.get("mode")
    if mode is not None and mode not in SCALE_MODES:
        raise argparse.ArgumentTypeError(
            f"--member-trace mode: one of {', '.join(SCALE_MODES)}, got {mode!r}"
        )
    path = Path(values["trace"]) if "trace" in values else None
    return TraceOptions(path, offset, scale, mode)


# ------------------------------------------------------------------------------------------ the budget


def covered_members(budget: EnergyBudget, models: Sequence[tuple[Path, GreenModel]]) -> list[str]:
    """The members' keys; every model given must be covered (a model the budget does not select would run
    unbounded, which is not a team comparison) and there must be at least one."""
    namespace = str(budget.metadata.get("namespace") or "default")
    name = str(budget.metadata.get("name") or "(unnamed)")
    keys: list[str] = []
    outside: list[str] = []
    for path, model in models:
        ns = str(model.metadata.get("namespace") or namespace)
        model_name = str(model.metadata.get("name") or path.stem)
        labels = model.metadata.get("labels") or {}
        if ns != namespace or not budget.spec.selector.matches(labels):
            outside.append(f"{path} ({ns}/{model_name})")
        keys.append(f"{ns}/{model_name}")
    selector = budget.spec.selector.text() or "(all)"
    if len(outside) == len(models):
        raise SimulationError(
            f"EnergyBudget {namespace}/{name} (selector {selector}) selects none of the GreenModels given"
        )
    if outside:
        raise SimulationError(
            f"EnergyBudget {namespace}/{name} (selector {selector}) does not cover: {', '.join(outside)}"
        )
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise SimulationError(f"GreenModels given twice (same namespace/name): {', '.join(dupes)}")
    return keys


def effective_spec(
    spec: GreenModelSpec, allocated_w: float, team: Budget, average_w: float = math.inf
) -> GreenModelSpec:
    """The member's spec with budget.powerW lowered to its allocation (the tightest wins); the team's
    onExhausted applies when the allocation is what binds, or when the team grants an average allowance
    (`average_w`, obeyed by the planner beside the spec: TeamMemberPolicy)."""
    own = spec.budget.power_w
    if math.isinf(allocated_w) or (own is not None and own <= allocated_w):
        if math.isinf(average_w) or spec.budget.on_exhausted is team.on_exhausted:
            return spec
        team_rule = spec.budget.model_copy(update={"on_exhausted": team.on_exhausted})
        return spec.model_copy(update={"budget": team_rule})
    # Not validated: an allocation of 0 W (a member cut to nothing) is a legal input to the planner.
    lowered = spec.budget.model_copy(update={"power_w": allocated_w, "on_exhausted": team.on_exhausted})
    return spec.model_copy(update={"budget": lowered})


def split_spec(spec: GreenModelSpec, team: Budget, members: int) -> GreenModelSpec:
    """The member's spec under a fixed 1/`members` share of every limit of the team budget, the tightest
    of it and its own budget per limit; the team's period and onExhausted."""

    def share(own: float | None, total: float | None) -> float | None:
        if total is None:
            return own
        part = total / members
        return part if own is None else min(own, part)

    own = spec.budget
    split = Budget(
        power_w=share(own.power_w, team.power_w),
        energy_kwh=share(own.energy_kwh, team.energy_kwh),
        carbon_grams=share(own.carbon_grams, team.carbon_grams),
        period=team.period,
        on_exhausted=team.on_exhausted,
    )
    return spec.model_copy(update={"budget": split})


# Energy within which the shared arm counts as using the same energy as the split (relative), and the
# most runs spent finding its power cap.
SAME_ENERGY_TOLERANCE = 0.01
SAME_ENERGY_RUNS = 8


def same_energy_arm(
    run: Callable[[EnergyBudgetSpec], ArmResult],
    energy_of: Callable[[ArmResult], float],
    budget: EnergyBudgetSpec,
    shared: ArmResult,
    target_kwh: float,
) -> tuple[ArmResult, str]:
    """The shared arm at the energy another arm used (`target_kwh`, within SAME_ENERGY_TOLERANCE, not
    above it when a run within SAME_ENERGY_RUNS gets there), for a comparison at the same total energy.
    Power budgets are not hard caps on what a fleet draws (the warm floor and the fast tier's burst
    setting add to the planned power), so two arms under the same budget need not use the same energy.

    A budget with an energy or carbon limit gets those limits scaled, its period kept (pacing stays what
    it was, only tighter or looser): the factor is corrected by target / used after each run. A budget
    with a power cap only gets its cap moved instead (bisection, raised or lowered: the highest cap whose
    run uses no more than the target)."""
    tol = SAME_ENERGY_TOLERANCE
    used = energy_of(shared)
    if target_kwh * (1.0 - tol) <= used <= target_kwh * (1.0 + tol):
        return shared, f"the shared run itself ({used:.4g} kWh, target {target_kwh:.4g} kWh)"
    if budget.energy_kwh is not None or budget.carbon_grams is not None:
        return _scaled_limits(run, energy_of, budget, used, target_kwh)
    return _bisected_cap(run, energy_of, budget, shared, used, target_kwh)


def _scaled_limits(
    run: Callable[[EnergyBudgetSpec], ArmResult],
    energy_of: Callable[[ArmResult], float],
    budget: EnergyBudgetSpec,
    used: float,
    target_kwh: float,
) -> tuple[ArmResult, str]:
    tol = SAME_ENERGY_TOLERANCE
    factor = 1.0
    below: tuple[float, ArmResult, float] | None = None  # the run closest to the target, not above it
    nearest: tuple[float, ArmResult, float] | None = None
    for _ in range(SAME_ENERGY_RUNS):
        factor *= target_kwh / used if used > 0 else 1.0
        limits: dict[str, object] = {}
        if budget.energy_kwh is not None:
            limits["energy_kwh"] = budget.energy_kwh * factor
        if budget.carbon_grams is not None:
            limits["carbon_grams"] = budget.carbon_grams * factor
        arm = run(budget.model_copy(update=limits))
        used = energy_of(arm)
        if used <= target_kwh * (1.0 + tol) and (below is None or used > below[2]):
            below = (factor, arm, used)
        if nearest is None or abs(used - target_kwh) < abs(nearest[2] - target_kwh):
            nearest = (factor, arm, used)
        if abs(used - target_kwh) <= target_kwh * tol:
            break
    chosen = below if below is not None else nearest
    assert chosen is not None
    f, arm, e = chosen
    return arm, f"energy/carbon limits x{f:.3f} ({e:.4g} kWh, target {target_kwh:.4g} kWh)"


def _bisected_cap(
    run: Callable[[EnergyBudgetSpec], ArmResult],
    energy_of: Callable[[ArmResult], float],
    budget: EnergyBudgetSpec,
    shared: ArmResult,
    used: float,
    target_kwh: float,
) -> tuple[ArmResult, str]:
    tol = SAME_ENERGY_TOLERANCE
    cap = budget.power_w
    if cap is None:  # no limit at all: nothing to move (cannot happen: an EnergyBudget has one)
        return shared, f"the shared run itself ({used:.4g} kWh, target {target_kwh:.4g} kWh)"
    best: tuple[float, ArmResult, float] | None = (
        (cap, shared, used) if used <= target_kwh * (1 + tol) else None
    )
    lo, hi = (cap, cap * 4.0) if used <= target_kwh else (0.0, cap)  # raise or lower the cap
    for _ in range(SAME_ENERGY_RUNS):
        mid = (lo + hi) / 2.0
        arm = run(budget.model_copy(update={"power_w": mid}))
        e = energy_of(arm)
        if e <= target_kwh * (1.0 + tol):
            lo = mid
            if best is None or mid > best[0]:
                best = (mid, arm, e)
            if e >= target_kwh * (1.0 - tol):
                break
        else:
            hi = mid
    if best is None:
        raise SimulationError(f"no power cap keeps the shared run within {target_kwh:.4g} kWh")
    return best[1], f"powerW moved to {best[0]:.0f} W ({best[2]:.4g} kWh, target {target_kwh:.4g} kWh)"


# ------------------------------------------------------------------------------------------ lockstep


@dataclass(frozen=True)
class IntervalRecord:
    """What the budget did at one interval (the allocation for the next one)."""

    t: float  # s from the start
    allowance_w: float | None  # the team's powerW (a peak), divided over the peak-priced frontiers
    used_kwh: float
    allocation: Mapping[str, float]
    served: Mapping[str, float]
    demand: Mapping[str, float]  # output tokens/s each member planned for
    overcommitted: bool
    degraded: tuple[tuple[str, str], ...]
    kept: bool
    # The team's energy and carbon paced over the rest of the period (an average), divided over the
    # frontiers priced at expected power: each member's average-power allowance.
    average_allowance_w: float | None = None
    average_allocation: Mapping[str, float] = field(default_factory=dict)


@dataclass
class _Report:
    frontier: tuple[FrontierPoint, ...]  # priced at the powerW cap's peak
    demand: float
    observation: Observation | None
    expected_frontier: tuple[FrontierPoint, ...] = ()  # priced at expected power


class Coordinator:
    """The budget controller of the simulation: once every active member has reported for an interval,
    the allocation for the next interval. Thread-safe; members that finish their run `leave`."""

    def __init__(
        self,
        budget: EnergyBudgetSpec,
        members: Sequence[MemberInput],
        start_epoch: float,
        carbon_g_per_kwh: float,
    ) -> None:
        self.budget = budget.budget()
        self._priority = {m.key: m.spec.priority for m in members}
        self._cond = threading.Condition()
        self._active = {m.key for m in members}
        self._reports: dict[str, _Report] = {}
        self._generation = 0
        self._failed: str | None = None
        self._start = start_epoch
        self._carbon = carbon_g_per_kwh
        self._period_s = self.budget.period_seconds
        self._accounts = {m.key: budget_rules.Account(start_epoch) for m in members}
        self.history: list[IntervalRecord] = []
        # Before any demand is seen: every member at its minimum with the rest shared equally (the
        # allocator at zero demand), so the budget binds from the first tick. `allocation`: the powerW
        # caps (peak); `average`: the average-power allowances (the paced energy and carbon).
        self.allocation: dict[str, float] = {}
        self.average: dict[str, float] = {}
        self._first = True

    def initial(
        self,
        frontiers: Mapping[str, tuple[FrontierPoint, ...]],
        expected: Mapping[str, tuple[FrontierPoint, ...]],
    ) -> None:
        with self._cond:
            if self._first:
                self._first = False
                peak, average = self._allowances(self._start)
                halves = ((frontiers, peak, self.allocation), (expected, average, self.average))
                for parts, watts, out in halves:
                    got = allocate(
                        [Member(k, self._priority[k], f) for k, f in sorted(parts.items())],
                        watts,
                        on_exhausted=self.budget.on_exhausted,
                    )
                    out.update(got.power_w)

    def allocated(self, key: str) -> float:
        """The member's powerW cap (math.inf: none)."""
        with self._cond:
            return self.allocation.get(key, math.inf)

    def allocated_average(self, key: str) -> float:
        """The member's average-power allowance (math.inf: none)."""
        with self._cond:
            return self.average.get(key, math.inf)

    def report(self, key: str, now_epoch: float, report: _Report) -> None:
        with self._cond:
            self._raise_if_failed()
            generation = self._generation
            self._reports[key] = report
            if self._active <= set(self._reports):
                self._advance(now_epoch)
                return
            if not self._cond.wait_for(
                lambda: self._generation != generation or self._failed is not None, _LOCKSTEP_TIMEOUT_S
            ):
                self._failed = f"member {key} waited {_LOCKSTEP_TIMEOUT_S:.0f} s for the others"
                self._cond.notify_all()
            self._raise_if_failed()

    def leave(self, key: str, now_epoch: float) -> None:
        with self._cond:
            self._active.discard(key)
            if self._reports and self._active <= set(self._reports):
                self._advance(now_epoch)

    def fail(self, why: str) -> None:
        with self._cond:
            self._failed = self._failed or why
            self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise SimulationError(f"team run stopped: {self._failed}")

    def _allowances(self, now_epoch: float) -> tuple[float, float]:
        """The team's powerW and its paced energy and carbon (core.allocation.team_allowances_w), W;
        math.inf: no such limit."""
        used_kwh = sum(a.energy_kwh for a in self._accounts.values())
        used_g = sum(a.carbon_grams for a in self._accounts.values())
        start = budget_rules.current_period_start(self._start, self._period_s, now_epoch)
        peak, average = team_allowances_w(self.budget, used_kwh, used_g, start, now_epoch, self._carbon)
        return (math.inf if peak is None else peak, math.inf if average is None else average)

    def _advance(self, now_epoch: float) -> None:
        """All reports are in: account the energy, divide the allowance, release the members."""
        for key, r in self._reports.items():
            obs = r.observation
            account = self._accounts[key]
            if obs is not None:
                account = budget_rules.record(
                    account, self._period_s, obs.time, obs.energy_j_total, obs.power_w, self._carbon
                )
            self._accounts[key] = budget_rules.roll(account, self._period_s, now_epoch)
        allowance, average = self._allowances(now_epoch)
        members = [Member(k, self._priority[k], r.frontier) for k, r in sorted(self._reports.items())]
        previous = {k: v for k, v in self.allocation.items() if k in self._reports}
        got: Allocation = allocate(
            members, allowance, previous=previous or None, on_exhausted=self.budget.on_exhausted
        )
        self.allocation.update(got.power_w)
        expected = [
            Member(k, self._priority[k], r.expected_frontier) for k, r in sorted(self._reports.items())
        ]
        previous_avg = {k: v for k, v in self.average.items() if k in self._reports}
        got_avg = allocate(
            expected, average, previous=previous_avg or None, on_exhausted=self.budget.on_exhausted
        )
        self.average.update(got_avg.power_w)
        self.history.append(
            IntervalRecord(
                average_allowance_w=None if math.isinf(average) else average,
                average_allocation=dict(got_avg.power_w),
                t=now_epoch - self._start,
                allowance_w=None if math.isinf(allowance) else allowance,
                used_kwh=sum(a.energy_kwh for a in self._accounts.values()),
                allocation=dict(got.power_w),
                served=dict(got.served),
                demand={k: r.demand for k, r in self._reports.items()},
                overcommitted=got.overcommitted or got_avg.overcommitted,
                degraded=(*got.degraded, *got_avg.degraded),
                # Kept when every limited part kept its allocation in force (an unlimited one has none).
                kept=all(a.kept for a, w in ((got, allowance), (got_avg, average)) if math.isfinite(w))
                and math.isfinite(min(allowance, average)),
            )
        )
        self._reports = {}
        self._generation += 1
        self._cond.notify_all()


class TeamMemberPolicy(GreenllmPolicy):
    """The operator's loop for one member, run with its effective spec (its powerW allocation as
    budget.powerW) and its average-power allowance (core.step.plan_step's `extra_allowance_w`), reporting
    its two frontiers to the coordinator after each step. Wraps GreenllmPolicy's decide."""

    def __init__(
        self,
        member: MemberInput,
        source: EnergyModel,
        coordinator: Coordinator,
        *,
        start_epoch: float,
        carbon_g_per_kwh: float,
        window: str,
    ) -> None:
        super().__init__(
            member.spec, source, start_epoch=start_epoch, carbon_g_per_kwh=carbon_g_per_kwh, window=window
        )
        self.name = "greenllm-shared"
        self._member = member
        self._source = source
        self._coordinator = coordinator
        # Recent demands over the scale-down window, one per interval: how the demand moves under the
        # peak the step plans on (core.frontier).
        down_s = member.spec.scaling.scale_down_stabilization.seconds
        self._recent: deque[float] = deque(maxlen=max(1, round(down_s / self.interval_s)))

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        member = self._member
        coordinator = self._coordinator
        average = coordinator.allocated_average(member.key)
        self.spec = effective_spec(
            member.spec, coordinator.allocated(member.key), coordinator.budget, average
        )
        self.extra_allowance_w = None if math.isinf(average) else average
        log = super().decide(now, view, truth)
        obs = log.observation
        if obs is not None and obs.has_demand:
            # The demand now (served + queue), of which the step plans on the window's peak.
            self._recent.append(estimate_demand(member.spec, obs)[0].output_tokens_per_s)
        demand = Demand(log.demand_prompt_tokens_per_s or 0.0, log.demand_output_tokens_per_s or 0.0)
        # Priced as the member's cap counts it, with the warm floor this tick kept (core.frontier).
        warm = None
        if obs is not None and self._state is not None:
            warm = WarmFloor(self._state.floor, obs, self._start_epoch + now)
        recent = tuple(self._recent)
        frontier = power_frontier(member.spec, demand, self._source, recent_output=recent, warm=warm)
        # Priced as its planner counts an average allowance: expected power (core.frontier).
        expected = power_frontier(member.spec, demand, self._source, recent_output=recent, expected=True)
        report = _Report(frontier, demand.output_tokens_per_s, obs, expected)
        coordinator.report(member.key, self._start_epoch + now, report)
        return log


# ------------------------------------------------------------------------------------------ the runs


@dataclass
class ArmResult:
    runs: dict[str, PolicyRun] = field(default_factory=dict)
    history: list[IntervalRecord] = field(default_factory=list)


def _run_threads(
    jobs: Mapping[str, Callable[[], PolicyRun]], on_error: Callable[[str], None]
) -> dict[str, PolicyRun]:
    results: dict[str, PolicyRun] = {}
    errors: dict[str, BaseException] = {}

    def work(key: str, job: Callable[[], PolicyRun]) -> None:
        try:
            results[key] = job()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors[key] = exc
            on_error(f"{key}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(k, j), name=f"team-{k}") for k, j in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        # The first failure, not the members it stopped.
        first = next((e for e in errors.values() if not isinstance(e, SimulationError)), None)
        raise first or next(iter(errors.values()))
    return results


def run_shared(
    members: Sequence[MemberInput],
    scenarios: Mapping[str, Scenario],
    budget: EnergyBudgetSpec,
    source: EnergyModel,
    *,
    carbon_g_per_kwh: float,
    window: str,
) -> ArmResult:
    start = min(m.trace.start_epoch for m in members)
    coordinator = Coordinator(budget, members, start, carbon_g_per_kwh)
    coordinator.initial(
        {m.key: power_frontier(m.spec, Demand(0.0, 0.0), source) for m in members},
        {m.key: power_frontier(m.spec, Demand(0.0, 0.0), source, expected=True) for m in members},
    )
    policies = {
        m.key: TeamMemberPolicy(
            m, source, coordinator, start_epoch=start, carbon_g_per_kwh=carbon_g_per_kwh, window=window
        )
        for m in members
    }

    def job(key: str) -> Callable[[], PolicyRun]:
        def run() -> PolicyRun:
            scenario = scenarios[key]
            try:
                return run_policy(scenario, policies[key])
            finally:
                coordinator.leave(key, start + scenario.steps * scenario.step_s)

        return run

    runs = _run_threads({m.key: job(m.key) for m in members}, coordinator.fail)
    return ArmResult(runs, coordinator.history)


def run_split(
    members: Sequence[MemberInput],
    scenarios: Mapping[str, Scenario],
    budget: EnergyBudgetSpec,
    source: EnergyModel,
    *,
    carbon_g_per_kwh: float,
    window: str,
) -> ArmResult:
    start = min(m.trace.start_epoch for m in members)
    team = budget.budget()
    runs: dict[str, PolicyRun] = {}
    for m in members:
        policy = GreenllmPolicy(
            split_spec(m.spec, team, len(members)),
            source,
            start_epoch=start,
            carbon_g_per_kwh=carbon_g_per_kwh,
            window=window,
        )
        policy.name = "greenllm-split"
        runs[m.key] = run_policy(scenarios[m.key], policy)
    return ArmResult(runs)


# ------------------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class TeamTotals:
    energy_kwh: float
    requests: int
    requests_within_slo: float
    output_tokens: float
    output_tokens_within_slo: float
    mean_power_w: float
    peak_power_w: float  # highest 1-minute mean of the team's summed power

    @property
    def attainment(self) -> float:
        return self.requests_within_slo / self.requests if self.requests else 1.0

    def as_json(self) -> dict[str, Any]:
        return {
            "energy_kwh": self.energy_kwh,
            "requests": self.requests,
            "requests_within_slo": self.requests_within_slo,
            "slo_attainment": self.attainment,
            "output_tokens": self.output_tokens,
            "output_tokens_within_slo": self.output_tokens_within_slo,
            "mean_power_w": self.mean_power_w,
            "peak_minute_power_w": self.peak_power_w,
        }


def totals(runs: Mapping[str, PolicyRun], scenarios: Mapping[str, Scenario]) -> TeamTotals:
    energy = requests = within = out = out_within = 0.0
    steps = min(r.steps for r in runs.values())
    step_s = next(iter(runs.values())).step_s
    power = np.zeros(steps)
    for key, run in runs.items():
        sc = scenarios[key]
        _, _, both = request_outcomes(run, sc.ttft_slo_s, sc.tpot_slo_s)
        energy += run.energy_j
        requests += run.arrival_s.size
        within += float(both.sum())
        out += float(run.output_tokens.sum())
        out_within += float(run.output_tokens[both].sum())
        power += run.power_w[:steps]
    per_minute = max(1, round(60.0 / step_s))
    usable = steps - steps % per_minute
    minutes = power[:usable].reshape(-1, per_minute).mean(axis=1) if usable else power
    seconds = steps * step_s
    return TeamTotals(
        energy_kwh=energy / J_PER_KWH,
        requests=int(requests),
        requests_within_slo=within,
        output_tokens=out,
        output_tokens_within_slo=out_within,
        mean_power_w=energy / seconds if seconds > 0 else 0.0,
        peak_power_w=float(minutes.max()) if minutes.size else 0.0,
    )


def budget_summary(history: Sequence[IntervalRecord], keys: Sequence[str]) -> dict[str, Any]:
    """What the budget did over the run: allowance, how much of it was allocated, how often the split
    moved, overcommitted intervals and who was cut."""
    if not history:
        return {"intervals": 0}
    allocated = [sum(v for v in r.allocation.values() if math.isfinite(v)) for r in history]
    allowances = [r.allowance_w for r in history]
    over = [a - w for a, w in zip(allocated, allowances, strict=True) if w is not None and a > w + 1e-6]
    # Watts moved between members: some member got less while another got more (a paced allowance that
    # rises or falls moves every member the same way, and is not counted).
    moves = 0
    for a, b in itertools.pairwise(history):
        common = set(a.allocation) & set(b.allocation)
        up = any(b.allocation[k] > a.allocation[k] + 1.0 for k in common)
        down = any(b.allocation[k] < a.allocation[k] - 1.0 for k in common)
        moves += int(up and down)
    degraded: dict[str, int] = {}
    for r in history:
        for key, _ in r.degraded:
            degraded[key] = degraded.get(key, 0) + 1
    finite = [w for w in allowances if w is not None]
    avg_allowances = [r.average_allowance_w for r in history]
    avg_finite = [w for w in avg_allowances if w is not None]
    avg_over = [
        a - w
        for a, w in zip(
            (sum(v for v in r.average_allocation.values() if math.isfinite(v)) for r in history),
            avg_allowances,
            strict=True,
        )
        if w is not None and a > w + 1e-6
    ]
    return {
        "intervals": len(history),
        # The paced energy and carbon (an average), divided over the expected-power frontiers.
        "average_allowance_w_min": min(avg_finite) if avg_finite else None,
        "average_allowance_w_max": max(avg_finite) if avg_finite else None,
        "intervals_over_average_allowance": len(avg_over),
        "average_allocation_w_range": {
            k: (
                min(r.average_allocation.get(k, 0.0) for r in history),
                max(r.average_allocation.get(k, 0.0) for r in history),
            )
            for k in keys
        },
        "allowance_w_min": min(finite) if finite else None,
        "allowance_w_max": max(finite) if finite else None,
        "moves_between_members": moves,
        "protected_by_hysteresis": sum(1 for r in history if r.kept),
        "intervals_over_allowance": len(over),
        "overcommitted_intervals": sum(1 for r in history if r.overcommitted),
        "degraded_intervals": degraded,
        "mean_allocation_w": {
            k: float(
                np.mean(
                    [r.allocation.get(k, 0.0) for r in history if math.isfinite(r.allocation.get(k, 0.0))]
                    or [0.0]
                )
            )
            for k in keys
        },
        "allocation_w_range": {
            k: (
                min(r.allocation.get(k, 0.0) for r in history),
                max(r.allocation.get(k, 0.0) for r in history),
            )
            for k in keys
        },
        # The most the coordinator counted in one period (from the members' observed energy, as the
        # operator counts it): what the energy limit was held to.
        "energy_counted_kwh_max": max(r.used_kwh for r in history),
    }


def member_summary(run: PolicyRun, scenario: Scenario, carbon: float) -> Summary:
    return summarize(run, carbon, scenario.ttft_slo_s, scenario.tpot_slo_s)


ARMS = ("shared", "split", "shared-same-energy")
ARM_TEXT = {
    "shared": "the budget divided every interval (core.allocation)",
    "split": "each GreenModel alone with a fixed 1/N of every limit of the budget",
    "shared-same-energy": "shared, its limits scaled (or its power cap moved) to the energy split used",
}


def _gain(a: float, b: float) -> float | None:
    return (a - b) / b if b > 0 else None


def versus(a: TeamTotals, b: TeamTotals) -> dict[str, float | None]:
    """Relative differences of team totals a over b."""
    return {
        "requests_within_slo": _gain(a.requests_within_slo, b.requests_within_slo),
        "output_tokens_within_slo": _gain(a.output_tokens_within_slo, b.output_tokens_within_slo),
        "energy_kwh": _gain(a.energy_kwh, b.energy_kwh),
        "requests_within_slo_per_kwh": _gain(
            a.requests_within_slo / a.energy_kwh if a.energy_kwh else 0.0,
            b.requests_within_slo / b.energy_kwh if b.energy_kwh else 0.0,
        ),
    }


def comparison(
    members: Sequence[MemberInput],
    scenarios: Mapping[str, Scenario],
    arms: Mapping[str, ArmResult],
    carbon: float,
) -> dict[str, Any]:
    keys = [m.key for m in members]
    team = {name: totals(arm.runs, scenarios) for name, arm in arms.items()}
    split = team["split"]
    return {
        "members": {
            m.key: {
                "priority": m.spec.priority,
                "trace": m.trace_text,
                "requests": len(m.trace),
                **{
                    name: member_summary(arm.runs[m.key], scenarios[m.key], carbon).as_json()
                    for name, arm in arms.items()
                },
            }
            for m in members
        },
        "team": {name: t.as_json() for name, t in team.items()},
        "budget": {name: budget_summary(arm.history, keys) for name, arm in arms.items() if arm.history},
        "over_split": {name: versus(t, split) for name, t in team.items() if name != "split"},
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def report_text(result: dict[str, Any]) -> str:
    s = result["scenario"]
    b = s["budget"]
    units = (
        ("power_w", "powerW", " W"),
        ("energy_kwh", "energyKwh", " kWh"),
        ("carbon_grams", "carbonGrams", " g"),
    )
    limits = ", ".join(f"{name} {b[key]:g}{unit}" for key, name, unit in units if b.get(key) is not None)
    head = (
        f"EnergyBudget {s['budget_name']}: {limits} per {b['period']}, onExhausted {b['on_exhausted']}; "
        f"{len(result['members'])} GreenModels over {s['duration_s'] / 60:.1f} min"
    )
    lines = [
        head,
        "",
        f"{'member':<28} {'arm':<19} {'kWh':>7} {'SLO met':>8} {'requests':>9} {'mean W':>7} {'chg':>4} "
        f"{'peak W':>7}",
        "-" * 95,
    ]
    for key, m in result["members"].items():
        for arm in ARMS:
            if arm in m:
                x = m[arm]
                lines.append(
                    f"{key:<28} {arm:<19} {x['energy_kwh']:>7.3f} {x['slo_attainment']:>8.2%} "
                    f"{m['requests']:>9d} {x['mean_power_w']:>7.0f} {x['changes']:>4d}"
                )
    for arm in ARMS:
        if arm in result["team"]:
            t = result["team"][arm]
            lines.append(
                f"{'team':<28} {arm:<19} {t['energy_kwh']:>7.3f} {t['slo_attainment']:>8.2%} "
                f"{t['requests']:>9d} {t['mean_power_w']:>7.0f} {'':>4} {t['peak_minute_power_w']:>7.0f}"
            )
    lines += [
        "",
        "peak W: the team's highest 1-minute mean power (what a power cap is about)",
        *(f"{arm}: {ARM_TEXT[arm]}" for arm in ARMS if arm in result["team"]),
    ]
    lines += ["members: " + "; ".join(f"{k}: {m['trace']}" for k, m in result["members"].items())]
    if s.get("same_energy"):
        lines.append(f"same energy: {s['same_energy']}")
    for arm, g in result["over_split"].items():
        lines.append(
            f"{arm} vs split: requests within SLO {_pct(g['requests_within_slo'])}, output tokens within "
            f"SLO {_pct(g['output_tokens_within_slo'])}, energy {_pct(g['energy_kwh'])}, requests within SLO "
            f"per kWh {_pct(g['requests_within_slo_per_kwh'])}"
        )
    for arm, bs in result["budget"].items():
        if not bs.get("intervals"):
            continue
        ranges = ", ".join(f"{k} {lo:.0f}-{hi:.0f} W" for k, (lo, hi) in bs["allocation_w_range"].items())
        allowance = (
            "no power limit"
            if bs["allowance_w_min"] is None
            else f"powerW allowance {bs['allowance_w_min']:.0f}-{bs['allowance_w_max']:.0f} W"
        )
        if bs["average_allowance_w_min"] is not None:
            avg = ", ".join(
                f"{k} {lo:.0f}-{hi:.0f} W" for k, (lo, hi) in bs["average_allocation_w_range"].items()
            )
            allowance += (
                f", energy/carbon paced {bs['average_allowance_w_min']:.0f}-"
                f"{bs['average_allowance_w_max']:.0f} W average (members' average allowances {avg}; over "
                f"it {bs['intervals_over_average_allowance']} times)"
            )
        lines.append(
            f"budget ({arm}): {bs['intervals']} intervals, {allowance}, watts moved between members "
            f"{bs['moves_between_members']} times (the allocation in force protected "
            f"{bs['protected_by_hysteresis']} times), allocated over the allowance "
            f"{bs['intervals_over_allowance']} times, overcommitted {bs['overcommitted_intervals']}; "
            f"powerW allocations {ranges}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the command


def simulate_team(args: argparse.Namespace) -> dict[str, Any]:
    """`greenllm simulate --model A --model B ... --budget EB`: the result --json prints."""
    import time

    from greenllm.calibration import default_energy_model
    from greenllm.modelfile import load_energy_budget, load_green_models, require_supported_gpu
    from greenllm.sim.command import DEFAULT_CARBON_G_PER_KWH, DEFAULT_CARBON_SOURCE, POLICIES, scenario_for
    from greenllm.sim.trace import load_trace

    # Flags of the single-model comparison that mean nothing here: refused, not silently ignored.
    single = {
        "--scale-to-peak-replicas (use --member-trace scale=K)": args.scale_to_peak_replicas is not None,
        "--policies": args.policies != ",".join(POLICIES),
        "--sensitivity": args.sensitivity,
        "--decisions-out": args.decisions_out is not None,
        "--plot": args.plot is not None,
        "--peak-window": args.peak_window is not None,
    }
    refused = [flag for flag, given in single.items() if given]
    if refused:
        raise SimulationError(f"{', '.join(refused)}: not with --budget (team mode compares its own arms)")
    paths: list[Path] = list(args.model)
    budget = load_energy_budget(args.budget)
    source = default_energy_model()
    models = []
    for path in paths:
        for model in load_green_models(path):  # a team's file may hold several, in order
            require_supported_gpu(model, path, source)
            models.append((path, model))
    keys = covered_members(budget, models)
    options: list[TraceOptions] = list(args.member_trace or [])
    if len(options) > len(models):
        raise SimulationError(f"{len(options)} --member-trace for {len(models)} GreenModels")
    options += [TraceOptions()] * (len(models) - len(options))
    intervals = {m.spec.scaling.interval.seconds for _, m in models}
    if len(intervals) > 1:
        raise SimulationError(
            "the members of a simulated team must share spec.scaling.interval (the budget is divided once "
            f"per interval); got {', '.join(sorted({m.spec.scaling.interval for _, m in models}))}"
        )
    carbon = args.carbon_intensity if args.carbon_intensity is not None else DEFAULT_CARBON_G_PER_KWH
    carbon_source = "--carbon-intensity" if args.carbon_intensity is not None else DEFAULT_CARBON_SOURCE
    members: list[MemberInput] = []
    for i, ((path, model), key, opts) in enumerate(zip(models, keys, options, strict=True)):
        base = load_trace(opts.path if opts.path is not None else args.trace)
        if args.start is not None or args.duration is not None:
            base = base.window(args.start or 0.0, args.duration)
        scale = opts.scale if opts.scale is not None else (args.rate_scale or 1.0)
        mode = opts.mode or args.scale_mode
        try:
            trace = base.replicated(scale, mode, args.seed + i)
        except ValueError as exc:
            raise TraceError(f"{path}: {exc}") from exc
        offset = opts.offset_s if opts.offset_s is not None else i * trace.duration_s / len(models)
        trace = rotated(trace, offset)
        text = f"{trace.name} x{scale:g} ({mode}) from {offset / 60:g} min"
        members.append(MemberInput(key, model.spec, trace, text))
    scenarios: dict[str, Scenario] = {}
    for m in members:
        gpus = args.gpus if args.gpus is not None else m.spec.replicas.max * m.spec.gpu.count
        if gpus < m.spec.gpu.count:
            raise SimulationError(f"--gpus {gpus} cannot hold one replica of {m.key}")
        scenarios[m.key] = scenario_for(m.spec, m.trace, source, args, gpus)
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"carbon_g_per_kwh": carbon, "window": args.rate_window}
    arms: dict[str, ArmResult] = {}
    arms["shared"] = run_shared(members, scenarios, budget.spec, source, **kwargs)
    arms["split"] = run_split(members, scenarios, budget.spec, source, **kwargs)
    duration = max(sc.steps * sc.step_s for sc in scenarios.values())
    target = totals(arms["split"].runs, scenarios).energy_kwh
    matched, how = same_energy_arm(
        lambda b: run_shared(members, scenarios, b, source, **kwargs),
        lambda arm: totals(arm.runs, scenarios).energy_kwh,
        budget.spec,
        arms["shared"],
        target,
    )
    arms["shared-same-energy"] = matched
    result = comparison(members, scenarios, arms, carbon)
    team = budget.spec.budget()
    namespace = budget.metadata.get("namespace") or "default"
    result["scenario"] = {
        "budget_name": f"{namespace}/{budget.metadata.get('name') or args.budget.stem}",
        "budget": {
            "power_w": team.power_w,
            "energy_kwh": team.energy_kwh,
            "carbon_grams": team.carbon_grams,
            "period": team.period,
            "on_exhausted": team.on_exhausted.value,
        },
        "duration_s": duration,
        "same_energy": how,
        "step_s": args.step,
        "startup_delay_s": args.startup_delay,
        "carbon_g_per_kwh": carbon,
        "carbon_source": carbon_source,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    return result
