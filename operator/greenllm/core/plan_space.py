"""The search: every (variant, power setting) pair of a spec under one demand, the least-power replica
count of each, and the exact branch-and-bound queries the decision rule asks (`PlanSpace`). The rules and
why the shortcuts are exact: the `core.planner` module doc."""

from __future__ import annotations

import math
from collections.abc import Mapping

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.decision import Demand
from greenllm.core.performance import PowerSetting
from greenllm.core.plan_catalog import catalog_of
from greenllm.core.plan_rules import EPS, LN10, MEAN_PROMPT_TOKENS, Candidate, Pair, PerformanceSource

_BOUND_SLACK = 1e-9  # pruning bounds are loosened by this much so float noise never prunes a winner


class PlanSpace:
    """Every (variant, setting) pair of a spec under one demand; evaluates configurations on request."""

    def __init__(
        self, spec: GreenModelSpec, demand: Demand, source: PerformanceSource, min_capacity: float = 0.0
    ):
        """`min_capacity`: capacity every configuration must have, as a multiple of `demand`; it raises the
        capacity rule's 1 + headroom when larger (planner doc)."""
        self.spec = spec
        self.demand = demand
        self.headroom = spec.scaling.headroom
        self.min_replicas = spec.replicas.min
        self.max_replicas = spec.replicas.max
        self.ttft_s = spec.slo.ttft_p90_ms / 1000.0
        self.headroom_factor = max(1.0 + self.headroom, min_capacity)
        self.ttft_k = LN10 * MEAN_PROMPT_TOKENS / self.ttft_s  # TTFT rule: k = this / pc
        self._ordered: list[Pair] | None = None
        found = catalog_of(spec, source)
        self.unusable: Mapping[str, str] = found.unusable  # variant -> why it is never considered
        prompt, out = demand.prompt_tokens_per_s, demand.output_tokens_per_s
        self.pairs: list[Pair] = [
            Pair(v, st, perf, facts, prompt, out, self)
            for (v, st, perf), facts in zip(found.runnable, found.facts, strict=True)
        ]

    # ------------------------------------------------------------------ evaluation
    def power(self, pair: Pair, n: int) -> float:
        if n <= 0:
            return 0.0
        w = pair.perf.power_w(self.demand.prompt_tokens_per_s / n, self.demand.output_tokens_per_s / n)
        return n * (w if w < pair.peak_w else pair.peak_w)  # the clamp removes float noise only (planner doc)

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
        if n < pair.work * self.headroom_factor * (1.0 - EPS):
            return (
                f"capacity {n / pair.work * 100:.0f}% of demand < {self.headroom_factor * 100:.0f}% "
                f"({self.capacity_text()})"
            )
        rho = self.demand.prompt_tokens_per_s / (n * pair.perf.prompt_tokens_per_s)
        ttft = LN10 * MEAN_PROMPT_TOKENS / pair.perf.prompt_tokens_per_s / max(1.0 - rho, EPS)
        return f"TTFT p90 estimate {ttft * 1000:.0f} ms > {self.ttft_s * 1000:.0f} ms"

    def evaluate(self, pair: Pair) -> None:
        """Set pair.best_n / best_w: the least-power replica count meeting the SLO rules (exact, planner
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
                if w < best_w * (1.0 - EPS):
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
        limit = allowed_w * (1.0 + EPS) + EPS
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
            if found is not None and pair.lower_w > found.best_w * (1.0 + EPS) + EPS:
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
                if pair.lower_w > kth * (1.0 + EPS) + EPS:
                    break
            held = best.get(pair.variant)
            if held is not None and pair.lower_w > held.best_w * (1.0 + EPS) + EPS:
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
        paying for more). Exact branch and bound on an upper bound of each pair's share (planner doc)."""
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
        """At most `hi`, and at least the most replicas of `pair` whose power fits `allowed_w` (planner doc):
        each replica draws at least the least of its prefill power and its curve's least power; n >= P/pc
        replicas draw at least P/pc x prefill W + (n - P/pc) x D(O / (n - P/pc)), and on a non-decreasing
        curve D(O / (n - P/pc)) >= D(O / (b - P/pc)) for every n <= b, b being the first bound."""
        if allowed_w is None:
            return hi
        limit = (allowed_w * (1.0 + EPS) + EPS) * (1.0 + _BOUND_SLACK)
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
        if self.headroom_factor > plain * (1.0 + EPS):
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
    if a.best_w < b.best_w * (1.0 - EPS) - EPS:
        return True
    if b.best_w < a.best_w * (1.0 - EPS) - EPS:
        return False
    return (a.quality, -(a.best_n or 0)) > (b.quality, -(b.best_n or 0))
