"""The planner: the least-power configuration that meets the SLOs and the budgets.

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

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, OnExhausted, Power, PowerMode, Variant
from greenllm.core.decision import Decision, Option, ReasonKind
from greenllm.core.decision import Demand as Demand  # re-exported: the planner's input type
from greenllm.core.performance import PowerSetting, ReplicaPerformance

# Mean prompt length in tokens: the mean ContextTokens of the Azure LLM inference code trace (8,819
# requests; shared/data/traces/AzureLLMInferenceTrace_code_2023.csv, Patel et al., Splitwise,
# ISCA 2024, CC-BY 4.0), DERIVED = 2047.8. Its p90 (5188) is close to the p90 of an exponential law
# with that mean (4716), which is what the M/M/1 TTFT estimate assumes.
MEAN_PROMPT_TOKENS = 2048.0
LN10 = math.log(10.0)
_EPS = 1e-9  # tolerance on ceilings and budget comparisons (float noise only)
_BOUND_SLACK = 1e-9  # pruning bounds are loosened by this much so float noise never prunes a winner


class PerformanceSource(Protocol):
    """What the planner needs from the energy model (greenllm.core.energy.EnergyModel satisfies it).

    Answers may depend on the GPU, the model, the TPOT SLO, the power settings and the variant only, and
    must not change for the same arguments: the planner remembers them (`catalog`)."""

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        """The per-GPU power settings the planner may choose from (just one for mode Fixed / Off)."""
        ...

    def performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance | None:
        """One replica of `variant` at `setting`; None when it cannot meet the TPOT SLO at all."""
        ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configuration evaluated under the current demand."""

    variant: str
    quality: float
    setting: PowerSetting
    replicas: int
    power_w: float  # expected average power of all replicas at this demand
    served: float  # share of the demand the replicas can serve (capacity / demand, at most 1)
    slo_met: bool  # capacity with headroom, TTFT and TPOT all met
    why_not: str = ""  # why it breaks an SLO rule; empty when it meets them all

    def label(self) -> str:
        return f"{self.variant} x{self.replicas} at {self.setting.label()}"

    def within(self, allowed_w: float | None) -> bool:
        return allowed_w is None or self.power_w <= allowed_w * (1.0 + _EPS) + _EPS

    def option(self, why_not: str = "") -> Option:
        return Option(self.variant, self.replicas, self.setting, self.power_w, why_not)


@dataclass(frozen=True, slots=True)
class CurveFacts:
    """Demand-independent facts about one replica's decode curve, used to prune the search exactly."""

    monotone: bool  # every linear piece has a non-negative intercept: power rises with replicas
    min_joules_per_token: float  # least D(r) / r over the curve (attained at a measured point)
    min_power_w: float  # least power anywhere on the curve
    max_power_w: float  # most power of a replica: the largest of the curve and the prefill power
    nondecreasing: bool  # decode power never falls as the decode rate rises


_FACTS_MEMO: dict[int, tuple[ReplicaPerformance, CurveFacts]] = {}
_MEMO_LIMIT = 4096


def curve_facts(perf: ReplicaPerformance) -> CurveFacts:
    """Facts of `perf`'s decode curve (module doc). On each linear piece D(r) = a + b r, D(r) / r = a / r + b
    is monotone in r, so its least value over the curve is at a measured point. Memoised per (immutable)
    object: sources hand out the same ReplicaPerformance on every tick."""
    hit = _FACTS_MEMO.get(id(perf))
    if hit is not None and hit[0] is perf:
        return hit[1]
    curve = perf.decode_curve
    monotone = all(
        p0 - (p1 - p0) / (r1 - r0) * r0 >= 0.0 for (r0, p0), (r1, p1) in itertools.pairwise(curve) if r1 > r0
    )
    per_token = [w / r for r, w in curve if r > 0.0]
    if perf.output_tokens_per_s > curve[-1][0]:  # flat beyond the last point: J/token still falls
        per_token.append(curve[-1][1] / perf.output_tokens_per_s)
    facts = CurveFacts(
        monotone,
        min(per_token) if per_token else 0.0,
        min(w for _, w in curve),
        max(perf.prefill_power_w, max(w for _, w in curve)),
        all(p1 >= p0 for (_, p0), (_, p1) in itertools.pairwise(curve)),
    )
    if len(_FACTS_MEMO) >= _MEMO_LIMIT:
        _FACTS_MEMO.clear()
    _FACTS_MEMO[id(perf)] = (perf, facts)
    return facts


def power_rises_with_replicas(perf: ReplicaPerformance) -> bool:
    """True when the fewest replicas that meet the SLOs also draw the least power (module doc)."""
    return curve_facts(perf).monotone


class Pair:
    """One (variant, setting) under the current demand, with its fewest replicas meeting the SLO rules."""

    __slots__ = (
        "best",
        "best_n",
        "best_w",
        "evaluated",
        "floor_w",
        "lower_w",
        "monotone",
        "n_need",
        "need_any",
        "nondecreasing",
        "peak_w",
        "perf",
        "prefill_replicas",
        "quality",
        "setting",
        "space",
        "variant",
        "why_code",
        "work",
    )

    def __init__(
        self,
        variant: Variant,
        setting: PowerSetting,
        perf: ReplicaPerformance,
        prompt: float,
        out: float,
        space: PlanSpace,
    ):
        facts = curve_facts(perf)
        self.variant = variant.name
        self.quality = variant.quality
        self.setting = setting
        self.perf = perf
        self.space = space
        self.evaluated = False  # best_n / best_w set (PlanSpace.evaluate)
        self.best_n: int | None = None  # least-power replica count meeting the SLO rules
        self.best_w = math.inf  # its power
        self.best: Candidate | None = None  # the same as a Candidate, built on demand
        self.monotone = facts.monotone
        self.nondecreasing = facts.nondecreasing
        self.peak_w = facts.max_power_w
        self.floor_w = min_w = facts.min_power_w
        pc = perf.prompt_tokens_per_s
        self.prefill_replicas = prefill_replicas = prompt / pc
        self.work = work = prefill_replicas + out / perf.output_tokens_per_s
        need = 0
        if work > 0.0:
            x = work * space.headroom_factor
            need = math.ceil(x - _EPS * x) if x > 1.0 else 1
        if need < space.min_replicas:
            need = space.min_replicas
        why = _FEASIBLE
        if prompt > 0.0:
            k = space.ttft_k / pc
            if k >= 1.0:
                why = _TTFT_UNREACHABLE
            else:
                x = prefill_replicas / (1.0 - k)
                n_ttft = math.ceil(x - _EPS * x) if x > 1.0 else 1
                if n_ttft > need:
                    need = n_ttft
        if why == _FEASIBLE and need > space.max_replicas:
            why = _TOO_MANY
        self.why_code = why
        self.need_any = need
        self.n_need: int | None = need if why == _FEASIBLE else None
        # A lower bound on the power of any n >= n_need (to skip exact evaluations, never to decide): the
        # prefill part P/pc x prefill W is fixed; the decode part m x D(O/m) (m = n - P/pc) is at least
        # O x the least J/token of the curve, and at least m x its least power.
        by_energy = out * facts.min_joules_per_token
        by_idle = (need - prefill_replicas) * min_w
        decode_w = by_energy if by_energy > by_idle else by_idle
        self.lower_w = prefill_replicas * perf.prefill_power_w + decode_w

    @property
    def why(self) -> str:
        """Why no replica count meets the SLO rules; empty when some does (formatted on demand)."""
        space = self.space
        if self.why_code == _TTFT_UNREACHABLE:
            pc = self.perf.prompt_tokens_per_s
            slo_ms = space.ttft_s * 1000
            return (
                f"TTFT: prefill of a mean {MEAN_PROMPT_TOKENS:.0f}-token prompt at {pc:.0f} tok/s gives "
                f"p90 >= {space.ttft_k / pc * slo_ms:.0f} ms > {slo_ms:.0f} ms at any replica count"
            )
        if self.why_code == _TOO_MANY:
            return f"needs {self.need_any} replicas > replicas.max {space.max_replicas}"
        return ""


_FEASIBLE, _TTFT_UNREACHABLE, _TOO_MANY = 0, 1, 2  # Pair.why_code


Runnable = tuple[tuple[Variant, PowerSetting, ReplicaPerformance], ...]
_CATALOG_MEMO: dict[tuple[object, ...], tuple[object, Runnable, Mapping[str, str]]] = {}
_CATALOG_LIMIT = 64


def _catalog_key(spec: GreenModelSpec, source: PerformanceSource) -> tuple[object, ...]:
    """What a source's answers may depend on (PerformanceSource), and the source itself."""
    gpu, model, slo, power = spec.gpu, spec.model, spec.slo, spec.power
    variants = tuple((v.name, v.quality, v.precision, v.profile) for v in spec.variants)
    return (id(source), gpu.type, gpu.count, model.name, model.params_billions, slo.tpot_p90_ms,
            slo.min_quality, power.mode, power.limit_w, variants)  # fmt: skip


def catalog(spec: GreenModelSpec, source: PerformanceSource) -> tuple[Runnable, Mapping[str, str]]:
    """Every (variant, setting) of `spec` the source can run (variants below slo.minQuality left out), in
    spec and setting order, and why each other variant never runs. Memoised per source object and the
    spec fields a source's answers may depend on, so an operator that parses the spec again on every
    tick still asks the source once: sources are taken as immutable (the energy model is; TableSource's
    table is read-only), and each entry keeps its source, so an id is never mistaken for a later one's."""
    key = _catalog_key(spec, source)
    hit = _CATALOG_MEMO.get(key)
    if hit is not None and hit[0] is source:
        return hit[1], hit[2]
    runnable: list[tuple[Variant, PowerSetting, ReplicaPerformance]] = []
    unusable: dict[str, str] = {}
    settings = source.power_settings(spec.gpu, spec.power)
    for variant in spec.variants:
        if variant.quality < spec.slo.min_quality:
            unusable[variant.name] = f"quality {variant.quality:g} < slo.minQuality {spec.slo.min_quality:g}"
            continue
        count = len(runnable)
        for setting in settings:
            perf = source.performance(spec, variant, setting)
            if perf is not None:
                runnable.append((variant, setting, perf))
        if len(runnable) == count:
            unusable[variant.name] = f"cannot meet TPOT p90 {spec.slo.tpot_p90_ms:g} ms at any setting"
    if len(_CATALOG_MEMO) >= _CATALOG_LIMIT:
        _CATALOG_MEMO.clear()
    frozen, pairs = MappingProxyType(unusable), tuple(runnable)
    _CATALOG_MEMO[key] = (source, pairs, frozen)
    return pairs, frozen


class PlanSpace:
    """Every (variant, setting) pair of a spec under one demand; evaluates configurations on request."""

    def __init__(
        self, spec: GreenModelSpec, demand: Demand, source: PerformanceSource, min_capacity: float = 0.0
    ):
        """`min_capacity`: capacity every configuration must have, as a multiple of `demand`; it raises the
        capacity rule's 1 + headroom when larger (module doc)."""
        self.spec = spec
        self.demand = demand
        self.headroom = spec.scaling.headroom
        self.min_replicas = spec.replicas.min
        self.max_replicas = spec.replicas.max
        self.ttft_s = spec.slo.ttft_p90_ms / 1000.0
        self.headroom_factor = max(1.0 + self.headroom, min_capacity)
        self.ttft_k = LN10 * MEAN_PROMPT_TOKENS / self.ttft_s  # TTFT rule: k = this / pc
        self._ordered: list[Pair] | None = None
        runnable, unusable = catalog(spec, source)
        self.unusable: Mapping[str, str] = unusable  # variant -> why it is never considered
        prompt, out = demand.prompt_tokens_per_s, demand.output_tokens_per_s
        self.pairs: list[Pair] = [Pair(v, st, perf, prompt, out, self) for v, st, perf in runnable]

    # ------------------------------------------------------------------ evaluation
    def power(self, pair: Pair, n: int) -> float:
        if n <= 0:
            return 0.0
        w = pair.perf.power_w(self.demand.prompt_tokens_per_s / n, self.demand.output_tokens_per_s / n)
        return n * (w if w < pair.peak_w else pair.peak_w)  # the clamp removes float noise only (module doc)

    def served(self, pair: Pair, n: int) -> float:
        if pair.work <= 0.0:
            return 1.0
        return min(n / pair.work, 1.0)

    def candidate(self, pair: Pair, n: int) -> Candidate:
        """`pair` at `n` replicas, with why it breaks an SLO rule if it does."""
        why = ""
        if pair.n_need is None or n < pair.n_need or n > self.max_replicas:
            if n > self.max_replicas:
                why = f"{n} replicas > replicas.max {self.max_replicas}"
            elif pair.n_need is None:
                why = pair.why
            elif n < self.min_replicas:
                why = f"{n} replicas < replicas.min {self.min_replicas}"
            else:
                why = self._shortfall(pair, n)
        return Candidate(
            pair.variant,
            pair.quality,
            pair.setting,
            n,
            self.power(pair, n),
            self.served(pair, n),
            not why,
            why,
        )

    def _shortfall(self, pair: Pair, n: int) -> str:
        if n <= 0:
            return "no replica for a non-zero demand"
        if n < pair.work * self.headroom_factor * (1.0 - _EPS):
            return (
                f"capacity {n / pair.work * 100:.0f}% of demand < {self.headroom_factor * 100:.0f}% "
                f"({self.capacity_text()})"
            )
        rho = self.demand.prompt_tokens_per_s / (n * pair.perf.prompt_tokens_per_s)
        ttft = LN10 * MEAN_PROMPT_TOKENS / pair.perf.prompt_tokens_per_s / max(1.0 - rho, _EPS)
        return f"TTFT p90 estimate {ttft * 1000:.0f} ms > {self.ttft_s * 1000:.0f} ms"

    def evaluate(self, pair: Pair) -> None:
        """Set pair.best_n / best_w: the least-power replica count meeting the SLO rules (exact, module
        doc: n_need when power rises with replicas, else the best end or breakpoint)."""
        if pair.evaluated:
            return
        pair.evaluated = True
        if pair.n_need is None:
            return
        n_best = pair.n_need
        if not pair.monotone and n_best < self.max_replicas:
            n_best = self._argmin_n(pair, n_best, self.max_replicas)
        pair.best_n, pair.best_w = n_best, self.power(pair, n_best)

    def best(self, pair: Pair) -> Candidate | None:
        """Least-power configuration of `pair` meeting the SLO rules, as a Candidate."""
        self.evaluate(pair)
        if pair.best is None and pair.best_n is not None:
            n = pair.best_n
            pair.best = Candidate(
                pair.variant, pair.quality, pair.setting, n, pair.best_w, self.served(pair, n), True
            )
        return pair.best

    def _argmin_n(self, pair: Pair, lo: int, hi: int) -> int:
        prefill_replicas = self.demand.prompt_tokens_per_s / pair.perf.prompt_tokens_per_s
        out = self.demand.output_tokens_per_s
        points = {lo, hi}
        for r, _ in pair.perf.decode_curve:
            if r > 0.0:
                n = prefill_replicas + out / r
                points.update((math.floor(n), math.ceil(n)))
        best_n, best_w = lo, math.inf
        for n in sorted(points):
            if lo <= n <= hi:
                w = self.power(pair, n)
                if w < best_w * (1.0 - _EPS):
                    best_n, best_w = n, w
        return best_n

    def most_within(self, pair: Pair, lo: int, hi: int, allowed_w: float | None) -> Candidate | None:
        """The most replicas in [lo, hi] whose power fits `allowed_w`, as a Candidate."""
        found = self._most_n(pair, lo, hi, allowed_w)
        return None if found is None else self.candidate(pair, found[0])

    def _most_n(self, pair: Pair, lo: int, hi: int, allowed_w: float | None) -> tuple[int, float] | None:
        """(n, power) for the most replicas in [lo, hi] whose power fits `allowed_w`: a binary search when
        power rises with replicas, else a scan down from `hi`."""
        if hi < lo:
            return None
        if allowed_w is None:
            return hi, self.power(pair, hi)
        limit = allowed_w * (1.0 + _EPS) + _EPS
        if pair.monotone:
            w_hi = self.power(pair, hi)
            if w_hi <= limit:
                return hi, w_hi  # power rises with replicas: the most replicas fit
            w_lo = self.power(pair, lo)
            if w_lo > limit:
                return None
            a, b, w_a = lo, hi, w_lo  # invariant: power(a) = w_a fits
            while a < b:
                mid = (a + b + 1) // 2
                w = self.power(pair, mid)
                if w <= limit:
                    a, w_a = mid, w
                else:
                    b = mid - 1
            return a, w_a
        for n in range(hi, lo - 1, -1):
            w = self.power(pair, n)
            if w <= limit:
                return n, w
        return None

    # ------------------------------------------------------------------ queries
    def variant_pairs(self, name: str) -> list[Pair]:
        return [p for p in self.pairs if p.variant == name]

    def best_of(self, pairs: list[Pair], allowed_w: float | None) -> Candidate | None:
        """Least-power SLO-meeting candidate of `pairs` within `allowed_w` (ties: quality, fewer replicas)."""
        least = self.least(pairs)
        if least is None:
            return None
        c = self.best(least)
        return c if c is not None and c.within(allowed_w) else None

    def least(self, pairs: list[Pair]) -> Pair | None:
        """The pair whose best configuration draws the least power (ties: quality, fewer replicas).
        Exact branch and bound: pairs are evaluated in order of their lower bound, stopping once the
        bound exceeds the best power found."""
        order = self.ordered() if pairs is self.pairs else sorted(pairs, key=_lower)
        found: Pair | None = None
        for pair in order:
            if pair.n_need is None:
                continue
            if found is not None and pair.lower_w > found.best_w * (1.0 + _EPS) + _EPS:
                break
            self.evaluate(pair)
            if found is None or _better_pair(pair, found):
                found = pair
        return found

    def ordered(self) -> list[Pair]:
        """The pairs that meet the SLO rules, by lower bound (computed once)."""
        if self._ordered is None:
            self._ordered = sorted((p for p in self.pairs if p.n_need is not None), key=_lower)
        return self._ordered

    def least_by_variant(self, k: int, exclude: str | None) -> list[Pair]:
        """The least-power pair of each of the `k` variants (other than `exclude`) with the least power,
        by power. Exact branch and bound as in `least`, stopping at the k-th variant's power."""
        best: dict[str, Pair] = {}
        for pair in self.ordered():
            if pair.variant == exclude:
                continue
            if len(best) >= k:
                kth = sorted(p.best_w for p in best.values())[k - 1]
                if pair.lower_w > kth * (1.0 + _EPS) + _EPS:
                    break
            held = best.get(pair.variant)
            if held is not None and pair.lower_w > held.best_w * (1.0 + _EPS) + _EPS:
                continue
            self.evaluate(pair)
            if held is None or _better_pair(pair, held):
                best[pair.variant] = pair
        return sorted(best.values(), key=lambda p: (p.best_w, -p.quality))[:k]

    def best_at(self, name: str, n: int, allowed_w: float | None) -> Candidate | None:
        """Best setting for variant `name` at exactly `n` replicas: least power among those meeting the SLO
        rules and the budget; else the one serving most within budget; else the least power."""
        cands = [self.candidate(p, n) for p in self.variant_pairs(name)]
        if not cands:
            return None
        ok = [c for c in cands if c.slo_met and c.within(allowed_w)]
        if ok:
            return min(ok, key=lambda c: c.power_w)
        fits = [c for c in cands if c.within(allowed_w)]
        if fits:
            return max(fits, key=lambda c: (c.served, -c.power_w))
        return min(cands, key=lambda c: c.power_w)

    def find(self, name: str, setting: PowerSetting) -> Pair | None:
        for p in self.pairs:
            if p.variant == name and p.setting == setting:
                return p
        return None

    def most_served(
        self, pairs: list[Pair], allowed_w: float | None, upto_need: bool, wanted: float = 1.0
    ) -> Candidate | None:
        """Within budget, the configuration serving the largest share of `wanted` x demand (ties: quality,
        power, then the pairs' order). `upto_need` stops each pair at the replicas its SLOs need (no point
        paying for more). Exact branch and bound on an upper bound of each pair's share (module doc)."""
        lo = self.min_replicas
        bounded: list[tuple[float, float, int, int, Pair]] = []
        for i, pair in enumerate(pairs):
            hi = self.max_replicas
            if upto_need and pair.n_need is not None:
                hi = pair.n_need
            hi = self._replica_bound(pair, hi, allowed_w)
            if hi < lo:
                continue
            bounded.append((-self._share(pair, hi, wanted), -pair.quality, i, hi, pair))
        bounded.sort(key=_bound_order)
        found: tuple[float, float, float, int, int, Pair] | None = None  # served, quality, -W, -i, n, pair
        for neg_bound, neg_quality, i, hi, pair in bounded:
            if found is not None:
                bound = -neg_bound
                if bound < found[0] or (bound <= found[0] and -neg_quality < found[1]):
                    break  # every later pair has a lower bound, or the same bound and a lower quality
            got = self._most_n(pair, lo, hi, allowed_w)
            if got is None:
                continue
            n, w = got
            key = (self._share(pair, n, wanted), pair.quality, -w, -i, n, pair)
            if found is None or key[:4] > found[:4]:
                found = key
        return None if found is None else self.candidate(found[5], found[4])

    def _share(self, pair: Pair, n: int, wanted: float) -> float:
        if pair.work <= 0.0:
            return 1.0
        share = n / (pair.work * wanted)
        return share if share < 1.0 else 1.0

    def _replica_bound(self, pair: Pair, hi: int, allowed_w: float | None) -> int:
        """At most `hi`, and at least the most replicas of `pair` whose power fits `allowed_w` (module doc):
        each replica draws at least the least of its prefill power and its curve's least power; n >= P/pc
        replicas draw at least P/pc x prefill W + (n - P/pc) x D(O / (n - P/pc)), and on a non-decreasing
        curve D(O / (n - P/pc)) >= D(O / (b - P/pc)) for every n <= b, b being the first bound."""
        if allowed_w is None:
            return hi
        limit = (allowed_w * (1.0 + _EPS) + _EPS) * (1.0 + _BOUND_SLACK)
        prefill_w = pair.perf.prefill_power_w
        floor_w = pair.floor_w
        if prefill_w >= floor_w > 0.0:
            pr = pair.prefill_replicas
            if limit < pr * prefill_w:
                bound = limit / prefill_w  # fewer replicas than P/pc: all prefilling
            else:
                spare = limit - pr * prefill_w
                bound = pr + spare / floor_w  # also <= limit / floor_w, the bound below
                out = self.demand.output_tokens_per_s
                if pair.nondecreasing and out > 0.0 and bound > pr:
                    d = pair.perf.decode_power_w(out / (bound - pr))
                    if d > floor_w:
                        bound = pr + spare / d
        else:
            least = prefill_w if prefill_w < floor_w else floor_w
            if least <= 0.0:
                return hi
            bound = limit / least
        return hi if bound >= hi else math.floor(bound)

    def cheapest_at_min(self, pairs: list[Pair]) -> Candidate | None:
        n = max(self.min_replicas, 1 if self.demand_positive else 0)
        cands = [self.candidate(p, n) for p in pairs]
        return min(cands, key=lambda c: (c.power_w, -c.quality)) if cands else None

    def capacity_text(self) -> str:
        """The capacity rule in force, for reasons."""
        plain = 1.0 + self.headroom
        if self.headroom_factor > plain * (1.0 + _EPS):
            return f"capacity kept at {self.headroom_factor:.2f}x demand, above headroom {self.headroom:g}"
        return f"+{self.headroom * 100:.0f}% headroom"

    @property
    def demand_positive(self) -> bool:
        return self.demand.prompt_tokens_per_s > 0.0 or self.demand.output_tokens_per_s > 0.0


def _lower(pair: Pair) -> float:
    return pair.lower_w


def _bound_order(item: tuple[float, float, int, int, Pair]) -> tuple[float, float, int]:
    return item[0], item[1], item[2]


def _better_pair(a: Pair, b: Pair) -> bool:
    """a's best beats b's: less power, then higher quality, then fewer replicas."""
    if a.best_w < b.best_w * (1.0 - _EPS) - _EPS:
        return True
    if b.best_w < a.best_w * (1.0 - _EPS) - _EPS:
        return False
    return (a.quality, -(a.best_n or 0)) > (b.quality, -(b.best_n or 0))


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


def alternatives(
    space: PlanSpace, chosen: Candidate | None, allowed_w: float | None, count: int = 3
) -> tuple[Option, ...]:
    """Runner-ups with why not: one replica fewer than the chosen configuration (why more are needed),
    then the best configuration of the other variants with the least power (one each: the power
    difference, or the budget they break), then variants that cannot meet the SLOs (the rule they
    break), then other settings of the same variants when there are few variants."""
    picked: list[Option] = []
    if chosen is not None and chosen.replicas - 1 >= space.min_replicas and chosen.slo_met:
        pair = space.find(chosen.variant, chosen.setting)
        if pair is not None:
            fewer = space.candidate(pair, chosen.replicas - 1)
            picked.append(fewer.option(fewer.why_not or _over_budget(fewer, allowed_w) or "more power"))
    want = count - len(picked)
    chosen_variant = None if chosen is None else chosen.variant
    chosen_setting = None if chosen is None else chosen.setting
    shown = space.least_by_variant(want, chosen_variant) if want > 0 else []
    if len(shown) < want:  # variants that cannot meet the SLOs: the one serving the most first
        have = {p.variant for p in shown} | {chosen_variant}
        stuck = [p for p in space.pairs if p.variant not in have and p.n_need is None]
        top = space.max_replicas
        stuck.sort(key=lambda p: -(top / p.work if p.work > top else 1.0))  # by share served at the top
        for pair in stuck:
            if len(shown) >= want:
                break
            if pair.variant not in have:
                have.add(pair.variant)
                shown.append(pair)
    if len(shown) < want:  # few variants: other settings of the same variants
        used = {id(p) for p in shown}
        rest = [
            p
            for p in space.ordered()
            if id(p) not in used and not (p.variant == chosen_variant and p.setting == chosen_setting)
        ]
        for pair in rest:
            space.evaluate(pair)
        rest.sort(key=lambda p: p.best_w)
        shown.extend(rest[: want - len(shown)])
    picked.extend(_runner_up(space, pair, chosen, allowed_w) for pair in shown)
    return tuple(picked)


def _runner_up(space: PlanSpace, pair: Pair, chosen: Candidate | None, allowed_w: float | None) -> Option:
    c = space.best(pair)
    if c is None:
        return space.candidate(pair, space.max_replicas).option(pair.why)
    over = _over_budget(c, allowed_w)
    if over:
        return c.option(over)
    if chosen is None:
        return c.option("not chosen")
    diff = c.power_w - chosen.power_w
    pct = diff / chosen.power_w * 100.0 if chosen.power_w > 0.0 else 0.0
    why = f"+{diff:.0f} W (+{pct:.1f}%)" if diff >= 0.0 else f"{diff:.0f} W, held by stability rules"
    return c.option(why)


def _over_budget(c: Candidate, allowed_w: float | None) -> str:
    if c.within(allowed_w):
        return ""
    assert allowed_w is not None
    return f"over budget: {c.power_w:.0f} W > {allowed_w:.0f} W allowed"


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


class TableSource:
    """A PerformanceSource from a fixed table: (variant name, setting) -> ReplicaPerformance. Settings are
    offered in the order given; a missing entry means the pair cannot meet the TPOT SLO. For tests,
    benchmarks and what-if planning from measured profiles."""

    def __init__(
        self,
        settings: tuple[PowerSetting, ...],
        table: Mapping[tuple[str, PowerSetting], ReplicaPerformance],
    ):
        self.settings = settings
        # Read-only: the planner remembers what a source answered for a spec (`catalog`).
        self.table: Mapping[tuple[str, PowerSetting], ReplicaPerformance] = MappingProxyType(dict(table))

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        return self.settings

    def performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance | None:
        return self.table.get((variant.name, setting))
