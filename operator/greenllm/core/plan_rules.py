"""The rules one (variant, power setting) pair must meet at a demand, and what they say about it.

`Pair`: the fewest replicas that meet the capacity rule (with headroom) and the TTFT estimate, or why no
count does, and a lower bound on its power; `CurveFacts`: demand-independent facts about a replica's
decode curve that bound its power; `Candidate`: one configuration evaluated under the demand. The rules
are written down in the `core.planner` module doc; `PerformanceSource` is what they need from the energy
model.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, Variant
from greenllm.core.decision import Option
from greenllm.core.performance import PowerSetting, ReplicaPerformance

if TYPE_CHECKING:
    from greenllm.core.plan_space import PlanSpace

# Mean prompt length in tokens: the mean ContextTokens of the Azure LLM inference code trace (8,819
# requests; shared/data/traces/AzureLLMInferenceTrace_code_2023.csv, Patel et al., Splitwise,
# ISCA 2024, CC-BY 4.0), DERIVED = 2047.8. Its p90 (5188) is close to the p90 of an exponential law
# with that mean (4716), which is what the M/M/1 TTFT estimate assumes.
MEAN_PROMPT_TOKENS = 2048.0
LN10 = math.log(10.0)
EPS = 1e-9  # tolerance on ceilings and budget comparisons (float noise only)


class PerformanceSource(Protocol):
    """What the planner needs from the energy model (greenllm.core.energy.EnergyModel satisfies it).

    Answers may depend on the GPU, the model, the TPOT SLO, the power settings and the variant only, and
    must not change for the same arguments: a source that keeps a `core.plan_catalog.CatalogMemo` as its
    `catalogs` attribute (EnergyModel does) has them remembered per spec content."""

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
        return allowed_w is None or self.power_w <= allowed_w * (1.0 + EPS) + EPS

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


def curve_facts(perf: ReplicaPerformance) -> CurveFacts:
    """Facts of `perf`'s decode curve (planner doc). On each linear piece D(r) = a + b r, D(r) / r = a / r + b
    is monotone in r, so its least value over the curve is at a measured point. Computed once per
    catalog entry (`core.plan_catalog.Catalog.facts`), not on every tick."""
    curve = perf.decode_curve
    monotone = all(
        p0 - (p1 - p0) / (r1 - r0) * r0 >= 0.0 for (r0, p0), (r1, p1) in itertools.pairwise(curve) if r1 > r0
    )
    per_token = [w / r for r, w in curve if r > 0.0]
    if perf.output_tokens_per_s > curve[-1][0]:  # flat beyond the last point: J/token still falls
        per_token.append(curve[-1][1] / perf.output_tokens_per_s)
    return CurveFacts(
        monotone,
        min(per_token) if per_token else 0.0,
        min(w for _, w in curve),
        max(perf.prefill_power_w, max(w for _, w in curve)),
        all(p1 >= p0 for (_, p0), (_, p1) in itertools.pairwise(curve)),
    )


def power_rises_with_replicas(perf: ReplicaPerformance) -> bool:
    """True when the fewest replicas that meet the SLOs also draw the least power (planner doc)."""
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
        facts: CurveFacts,
        prompt: float,
        out: float,
        space: PlanSpace,
    ):
        """`facts`: curve_facts(perf), computed once with the catalog."""
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
            need = math.ceil(x - EPS * x) if x > 1.0 else 1
        if need < space.min_replicas:
            need = space.min_replicas
        why = _FEASIBLE
        if prompt > 0.0:
            k = space.ttft_k / pc
            if k >= 1.0:
                why = _TTFT_UNREACHABLE
            else:
                x = prefill_replicas / (1.0 - k)
                n_ttft = math.ceil(x - EPS * x) if x > 1.0 else 1
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
