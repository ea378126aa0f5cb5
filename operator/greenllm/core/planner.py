"""The planner: the least-power configuration that meets the SLOs and the budgets.

This module doc states the rules; the code is split by what it does: `core.plan_rules` (one pair's
replica count, curve facts, a configuration evaluated), `core.plan_catalog` (the pairs a source can run),
`core.plan_space` (the exact search), this module (the decision rule `choose`, and `plan`) and
`core.plan_alternatives` (the runner-ups).

Search space: variants with quality >= slo.minQuality x the power settings the source offers x replicas
in [replicas.min, replicas.max]. For one (variant, setting) pair, at demand P prompt and O output
tokens/s and a replica that prefills pc and decodes oc tokens/s (`ReplicaPerformance`):

- Work W = P/pc + O/oc: replica-equivalents kept busy (one replica can do 1.0).
- Capacity rule: n >= W x F with F = 1 + scaling.headroom, i.e. capacity >= demand x (1 + headroom). The
  decision step may raise F (`PlanSpace(min_capacity=...)`, never lower it) to keep at least the capacity
  in force while the SLO is breached or requests wait (core.step, "SLO feedback").
- TPOT rule: the source returns None for a pair that cannot meet slo.tpotP90Ms at any batch.
- TTFT rule (documented queueing estimate): vLLM schedules waiting prefills ahead of running decodes,
  so a prompt queues behind other prompts only. Each replica is an M/M/1 queue of prefills with mean
  service S = MEAN_PROMPT_TOKENS / pc and utilisation rho = P / (n x pc); the p90 of the M/M/1 time in
  system is ln(10) x S / (1 - rho). It must not exceed slo.ttftP90Ms, which gives the closed form
  n >= P / (pc x (1 - ln(10) x S / ttft)); when ln(10) x S alone exceeds the SLO, no n is enough.
- Power of n replicas = n x replica.power_w(P/n, O/n). The fewest replicas meeting the rules above
  (n_need) is exact from the closed forms, since both rules are monotone in n. Power is not always
  monotone in n: per replica it is P/pc x prefill W + m x D(O/m) with m = n - P/pc and D the decode
  curve; on each linear piece D(r) = a + b r that is a x m + b x O, so it falls with n only on pieces
  whose intercept a is negative. With no such piece n_need is the argmin; otherwise the argmin over
  [n_need, replicas.max] is at an end or next to a breakpoint m = O / r_k, and only those are
  evaluated. Exact either way, at a few evaluations per pair instead of 64.
- Budget rule: expected power <= the allowed power (budget module). The decision is the argmin of
  power over everything meeting all rules (ties: higher quality, then fewer replicas). A replica's power
  is a convex mix of its prefill power and its decode curve, so it never exceeds the largest of them; the
  planner clamps to that bound, so float noise never shows 450.00000000000006 W against a 450 W budget.
- Nothing meets all rules: when something meets the SLOs but not the budget, `budget.onExhausted`:
  Degrade = among all variants above the floor, the configuration within budget that serves the largest
  share of demand (ties: higher quality, lower power); CapReplicas = the current variant with as many
  replicas as the budget allows (at most what the SLOs need); Hold = keep the current configuration.
  If nothing fits the budget even at replicas.min, the lowest-power configuration at replicas.min.
  Whenever onExhausted acts, `budget_met` is False: the budget cannot pay for what the SLOs need, which
  is what the BudgetMet condition reports (the decision's own power may well fit the budget). When no
  configuration meets the SLOs at all (demand beyond replicas.max), the one within budget that serves
  the largest share of demand x the capacity rule's factor, i.e. the most capacity towards what the rule
  asks (best effort; budget_met says whether it fits).
- Degrade search, exact and pruned: a pair's served share within the budget is at most
  min(1, n_b / W), where n_b = P/pc + (allowed - P/pc x prefill W) / D_b bounds the replicas the budget
  can pay for (each replica's decode part draws at least D_b: the curve's least power, or on a
  non-decreasing curve its power at the decode rate of n_b replicas, refined once). Pairs are visited by
  that bound, each searched only up to n_b, and the search stops once the bound falls below the best
  share found.
- Reason kinds (`Choice.kind`, a closed set for metrics): LeastEnergy when the least-power SLO-meeting
  configuration fits the budget (FixedPower in power mode Fixed), BudgetBinds whenever onExhausted acts,
  SloUnreachable when nothing meets the SLOs (best effort) or no variant can run at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from greenllm.api.v1alpha1 import GreenModelSpec, OnExhausted, PowerMode
from greenllm.core.decision import Decision, Demand, ReasonKind
from greenllm.core.performance import PowerSetting
from greenllm.core.plan_alternatives import alternatives
from greenllm.core.plan_rules import Candidate, PerformanceSource
from greenllm.core.plan_space import PlanSpace


@dataclass(frozen=True, slots=True)
class Choice:
    """What the planner would run, before stability rules."""

    candidate: Candidate | None  # None: nothing can run (no variant meets the TPOT SLO) or Hold
    reason: str
    budget_met: bool  # False whenever onExhausted acted (the budget cannot pay for the SLOs) or it breaks
    kind: ReasonKind  # which rule decided, set next to `reason`
    exhausted: bool = False  # the budget, not the SLOs, ruled out every SLO-meeting configuration
    hold: bool = False  # onExhausted Hold: keep the current configuration


def _allowed_text(allowed_w: float | None, binding: str) -> str:
    if allowed_w is None:
        return "no budget limits power"
    return f"budget allows {allowed_w:.0f} W ({binding})" if binding else f"budget allows {allowed_w:.0f} W"


def choose(
    space: PlanSpace,
    allowed_w: float | None,
    binding: str = "",
    current: tuple[str, PowerSetting, int] | None = None,
) -> Choice:
    """The planner's decision rule (module doc), without stability. `current` = (variant, setting, replicas)
    in force, used by onExhausted CapReplicas and Hold."""
    spec = space.spec
    budget_text = _allowed_text(allowed_w, binding)
    demand = space.demand.label()
    if not space.pairs:
        why = "; ".join(f"{v}: {w}" for v, w in space.unusable.items())
        return Choice(None, f"no variant can run: {why}", allowed_w is None, ReasonKind.SLO_UNREACHABLE)
    best = space.best_of(space.pairs, allowed_w)
    if best is not None:
        headroom = space.capacity_text()
        # Mode Fixed leaves the planner variant and replicas only: the power limit is the spec's.
        fixed = spec.power.mode is PowerMode.FIXED
        return Choice(
            best,
            f"least power meeting SLOs: {best.label()} = {best.power_w:.0f} W for {demand} ({headroom}); "
            f"{budget_text}",
            True,
            ReasonKind.FIXED_POWER if fixed else ReasonKind.LEAST_ENERGY,
        )
    slo_best = space.best_of(space.pairs, None)
    if slo_best is None:
        # Best effort: the most capacity towards what the capacity rule asks (demand x its factor), so a
        # configuration that serves the bare demand but not the headroom never wins on quality alone.
        c = space.most_served(space.pairs, allowed_w, upto_need=False, wanted=space.headroom_factor)
        if c is None:
            c = space.cheapest_at_min(space.pairs)
            assert c is not None
            return Choice(
                c,
                f"SLOs unreachable for {demand} and nothing fits the budget: {c.label()} = {c.power_w:.0f} W "
                f"(lowest power at replicas.min); {budget_text}",
                False,
                ReasonKind.SLO_UNREACHABLE,
            )
        return Choice(
            c,
            f"SLOs unreachable for {demand} ({c.why_not or 'capacity short'}): "
            f"best effort {c.label()} serves {c.served * 100:.0f}% at {c.power_w:.0f} W; {budget_text}",
            c.within(allowed_w),
            ReasonKind.SLO_UNREACHABLE,
        )
    breach = f"budget exhausted: least power meeting SLOs is {slo_best.label()} = {slo_best.power_w:.0f} W; "
    mode = spec.budget.on_exhausted
    if mode is OnExhausted.HOLD:
        if current is not None:
            return Choice(
                None,
                f"{breach}{budget_text}; onExhausted Hold: kept the current configuration",
                False,
                ReasonKind.BUDGET_BINDS,
                exhausted=True,
                hold=True,
            )
        return Choice(
            slo_best,
            f"{breach}{budget_text}; onExhausted Hold with nothing running: started it anyway",
            False,
            ReasonKind.BUDGET_BINDS,
            exhausted=True,
        )
    if mode is OnExhausted.CAP_REPLICAS:
        name = current[0] if current is not None and space.variant_pairs(current[0]) else slo_best.variant
        pairs = space.variant_pairs(name)
        c = space.most_served(pairs, allowed_w, upto_need=True)
        if c is None:
            c = space.cheapest_at_min(pairs)
            assert c is not None
            return Choice(
                c,
                f"{breach}{budget_text}; onExhausted CapReplicas: even replicas.min of {name} "
                f"breaks it: {c.label()} = {c.power_w:.0f} W",
                False,
                ReasonKind.BUDGET_BINDS,
                exhausted=True,
            )
        return Choice(
            c,
            f"{breach}{budget_text}; onExhausted CapReplicas: {c.label()} = {c.power_w:.0f} W "
            f"serves {c.served * 100:.0f}% of demand",
            False,
            ReasonKind.BUDGET_BINDS,
            exhausted=True,
        )
    c = space.most_served(space.pairs, allowed_w, upto_need=True)
    if c is None:
        c = space.cheapest_at_min(space.pairs)
        assert c is not None
        return Choice(
            c,
            f"{breach}{budget_text}; onExhausted Degrade: nothing fits, lowest power at "
            f"replicas.min: {c.label()} = {c.power_w:.0f} W",
            False,
            ReasonKind.BUDGET_BINDS,
            exhausted=True,
        )
    return Choice(
        c,
        f"{breach}{budget_text}; onExhausted Degrade: {c.label()} = {c.power_w:.0f} W serves "
        f"{c.served * 100:.0f}% of demand",
        False,
        ReasonKind.BUDGET_BINDS,
        exhausted=True,
    )


def to_decision(
    choice: Choice, space: PlanSpace, allowed_w: float | None, current: Decision | None = None
) -> Decision:
    """A Choice as a Decision; Hold or nothing runnable keeps `current` (or the first variant at min)."""
    c = choice.candidate
    if c is None:
        if current is not None:
            return Decision(
                current.variant,
                current.replicas,
                current.setting,
                _current_power(space, current),
                choice.reason,
                choice.budget_met,
                alternatives(space, None, allowed_w),
                kind=choice.kind,
            )
        v = space.spec.variants[0]
        n = max(space.min_replicas, 1)
        return Decision(
            v.name, n, PowerSetting(), None, choice.reason, allowed_w is None, (), kind=choice.kind
        )
    return Decision(
        c.variant,
        c.replicas,
        c.setting,
        c.power_w,
        choice.reason,
        choice.budget_met,
        alternatives(space, c, allowed_w),
        kind=choice.kind,
    )


def _current_power(space: PlanSpace, current: Decision) -> float | None:
    pair = space.find(current.variant, current.setting)
    return None if pair is None else space.power(pair, current.replicas)


def plan(
    spec: GreenModelSpec,
    demand: Demand,
    allowed_power_w: float | None,
    source: PerformanceSource,
    current: Decision | None = None,
    binding: str = "",
) -> Decision:
    """One-shot plan without stability (what `greenllm plan` prints); `step` adds the stability rules."""
    space = PlanSpace(spec, demand, source)
    cur = None if current is None else (current.variant, current.setting, current.replicas)
    choice = choose(space, allowed_power_w, binding, cur)
    return to_decision(choice, space, allowed_power_w, current)
