"""The planner (greenllm.core.planner) against fakes built from ReplicaPerformance."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.table_source import TableSource

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.decision import Decision, Demand
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_rules import MEAN_PROMPT_TOKENS
from greenllm.core.plan_space import PlanSpace
from greenllm.core.planner import choose, plan

DEFAULT = PowerSetting()
CAP = PowerSetting(limit_w=300.0)


def perf(out_tps: float, prompt_tps: float, idle_w: float, full_w: float) -> ReplicaPerformance:
    """A replica whose decode power rises linearly from idle to full; prefill at full power."""
    return ReplicaPerformance(out_tps, prompt_tps, full_w, ((0.0, idle_w), (out_tps, full_w)))


def make_spec(**overrides: Any) -> GreenModelSpec:
    doc: dict[str, Any] = {
        "model": {"name": "m"},
        "variants": [
            {"name": "fp16", "precision": "fp16", "image": "vllm", "quality": 1.0},
            {"name": "fp8", "precision": "fp8", "image": "vllm", "quality": 0.98},
            {"name": "int4", "precision": "int4", "image": "vllm", "quality": 0.9},
        ],
        "replicas": {"min": 1, "max": 8},
    }
    doc.update(overrides)
    return GreenModelSpec.model_validate(doc)


def source() -> TableSource:
    # Per replica: fp16 1000 out tok/s, fp8 1500, int4 2000; a 300 W cap costs 20% speed, saves power.
    return TableSource(
        (DEFAULT, CAP),
        {
            ("fp16", DEFAULT): perf(1000.0, 20000.0, 100.0, 700.0),
            ("fp16", CAP): perf(800.0, 16000.0, 100.0, 300.0),
            ("fp8", DEFAULT): perf(1500.0, 30000.0, 100.0, 700.0),
            ("fp8", CAP): perf(1200.0, 24000.0, 100.0, 300.0),
            ("int4", DEFAULT): perf(2000.0, 40000.0, 80.0, 650.0),
            ("int4", CAP): perf(1600.0, 32000.0, 80.0, 300.0),
        },
    )


# ------------------------------------------------------------------------- a brute-force reference


def ttft_p90_s(p: ReplicaPerformance, prompt_rate: float, n: int) -> float:
    rho = prompt_rate / (n * p.prompt_tokens_per_s)
    if rho >= 1.0:
        return math.inf
    return math.log(10) * (MEAN_PROMPT_TOKENS / p.prompt_tokens_per_s) / (1.0 - rho)


def brute_force(spec: GreenModelSpec, demand: Demand, src: TableSource, allowed: float | None) -> Any:
    """Every variant x setting x replica count, checked rule by rule (module doc of the planner)."""
    best: tuple[float, float, int, str, PowerSetting] | None = None
    pr, orate = demand.prompt_tokens_per_s, demand.output_tokens_per_s
    for v in spec.variants:
        if v.quality < spec.slo.min_quality:
            continue
        for s in src.settings:
            p = src.performance(spec, v, s)
            if p is None:
                continue
            work = pr / p.prompt_tokens_per_s + orate / p.output_tokens_per_s
            for n in range(spec.replicas.min, spec.replicas.max + 1):
                if n == 0:
                    if work > 0 or pr > 0:  # (a sub-normal prompt rate can vanish from `work`)
                        continue
                    power = 0.0
                else:
                    if n < work * (1 + spec.scaling.headroom) - 1e-9:
                        continue
                    if pr > 0 and ttft_p90_s(p, pr, n) > spec.slo.ttft_p90_ms / 1000 * (1 + 1e-9):
                        continue
                    power = n * p.power_w(pr / n, orate / n)
                if allowed is not None and power > allowed * (1 + 1e-9):
                    continue
                key = (power, -v.quality, n, v.name, s)
                if best is None or key[:3] < best[:3]:
                    best = key
    return best


# ------------------------------------------------------------------------- feasibility and choice


def test_least_power_meeting_slos() -> None:
    spec = make_spec()
    demand = Demand(20000.0, 3000.0)
    d = plan(spec, demand, None, source())
    ref = brute_force(spec, demand, source(), None)
    assert ref is not None
    assert (d.variant, d.replicas, d.setting) == (ref[3], ref[2], ref[4])
    assert d.expected_power_w == pytest.approx(ref[0])
    assert d.budget_met
    assert "least power meeting SLOs" in d.reason


def test_capacity_rule_keeps_headroom() -> None:
    # One variant, one setting: work = 3000/1000 = 3 replicas; +20% headroom needs 3.6 -> 4.
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "x"}])
    src = TableSource((DEFAULT,), {("fp16", DEFAULT): perf(1000.0, 1e9, 100.0, 700.0)})
    assert plan(spec, Demand(0.0, 3000.0), None, src).replicas == 4
    spec0 = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "x"}], scaling={"headroom": 0})
    assert plan(spec0, Demand(0.0, 3000.0), None, src).replicas == 3


def test_quality_floor_excludes_variants() -> None:
    spec = make_spec(slo={"minQuality": 0.95})
    d = plan(spec, Demand(20000.0, 3000.0), None, source())
    assert d.variant in {"fp16", "fp8"}
    assert all(a.variant != "int4" for a in d.alternatives)


def test_tpot_infeasible_pairs_are_skipped() -> None:
    full = source()
    src = TableSource(full.settings, {k: v for k, v in full.table.items() if k[0] != "int4"})
    space = PlanSpace(make_spec(), Demand(1000.0, 1000.0), src)
    assert "TPOT" in space.unusable["int4"]
    assert plan(make_spec(), Demand(1000.0, 1000.0), None, src).variant != "int4"


def test_ttft_rule_adds_replicas_beyond_capacity() -> None:
    # Prefill 4000 tok/s: a mean prompt takes 0.512 s; ln10 x 0.512 = 1.18 s of a 2 s SLO, so
    # rho <= 1 - 1.18/2 = 0.41 and 8000 prompt tok/s need 8000 / (4000 x 0.41) = 4.9 -> 5 replicas,
    # while capacity alone (work 8000/4000 + 100/10000 = 2.01, x1.2) needs 3.
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "x"}])
    p = perf(10000.0, 4000.0, 100.0, 700.0)
    src = TableSource((DEFAULT,), {("fp16", DEFAULT): p})
    d = plan(spec, Demand(8000.0, 100.0), None, src)
    k = math.log(10) * MEAN_PROMPT_TOKENS / 4000.0 / 2.0
    assert d.replicas == math.ceil(8000.0 / (4000.0 * (1 - k)))
    assert ttft_p90_s(p, 8000.0, d.replicas) <= 2.0 < ttft_p90_s(p, 8000.0, d.replicas - 1)
    fewer = d.alternatives[0]
    assert fewer.replicas == d.replicas - 1
    assert "TTFT" in fewer.why_not


def test_ttft_unreachable_when_one_prefill_is_too_slow() -> None:
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "x"}], slo={"ttftP90Ms": 500})
    src = TableSource((DEFAULT,), {("fp16", DEFAULT): perf(1000.0, 4000.0, 100.0, 700.0)})
    d = plan(spec, Demand(100.0, 100.0), None, src)
    assert "SLOs unreachable" in d.reason
    assert "TTFT" in d.reason


def test_demand_beyond_max_replicas_is_best_effort() -> None:
    spec = make_spec()
    d = plan(spec, Demand(0.0, 50000.0), None, source())
    assert d.replicas == spec.replicas.max
    assert d.variant == "int4"  # the most capacity per replica
    assert d.setting == DEFAULT
    assert "SLOs unreachable" in d.reason
    assert "serves 32%" in d.reason  # 8 x 2000 = 16000 of 50000 output tok/s


def test_zero_demand_with_min_zero_scales_to_zero() -> None:
    d = plan(make_spec(replicas={"min": 0, "max": 4}), Demand(0.0, 0.0), None, source())
    assert d.replicas == 0
    assert d.expected_power_w == 0.0


def test_zero_demand_keeps_replicas_min() -> None:
    d = plan(make_spec(replicas={"min": 2, "max": 4}), Demand(0.0, 0.0), None, source())
    assert d.replicas == 2


# ------------------------------------------------------------------------- exactness


curve_points = st.lists(
    st.tuples(st.floats(min_value=1.0, max_value=3000.0), st.floats(min_value=0.0, max_value=900.0)),
    min_size=1,
    max_size=5,
)


@st.composite
def replica_perf(draw: st.DrawFn) -> ReplicaPerformance:
    idle = draw(st.floats(min_value=0.0, max_value=300.0))
    pts = sorted({round(r, 3): w for r, w in draw(curve_points)}.items())
    curve = ((0.0, idle), *pts)
    return ReplicaPerformance(
        pts[-1][0], draw(st.floats(min_value=500.0, max_value=50000.0)), draw(st.floats(200.0, 900.0)), curve
    )


@settings(max_examples=200, deadline=None)
@given(
    perfs=st.lists(replica_perf(), min_size=1, max_size=6),
    prompt=st.floats(min_value=0.0, max_value=40000.0),
    out=st.floats(min_value=0.0, max_value=20000.0),
    rmin=st.integers(min_value=0, max_value=3),
    rmax=st.integers(min_value=3, max_value=40),
    headroom=st.sampled_from([0.0, 0.2, 0.5]),
    allowed=st.one_of(st.none(), st.floats(min_value=100.0, max_value=20000.0)),
)
def test_plan_matches_brute_force(
    perfs: list[ReplicaPerformance],
    prompt: float,
    out: float,
    rmin: int,
    rmax: int,
    headroom: float,
    allowed: float | None,
) -> None:
    """Random decode curves (including convex ones, where more replicas can cost less) and budgets: the
    planner's argmin equals the exhaustive search over every replica count."""
    names = ["a", "b", "c"]
    settings_ = (DEFAULT, CAP)
    table = {(names[i % 3], settings_[i // 3 % 2]): p for i, p in enumerate(perfs)}
    spec = make_spec(
        variants=[
            {"name": n, "precision": "fp16", "image": "x", "quality": 1.0 - i * 0.01}
            for i, n in enumerate(names)
        ],
        replicas={"min": rmin, "max": rmax},
        scaling={"headroom": headroom},
    )
    src = TableSource(settings_, table)
    demand = Demand(prompt, out)
    ref = brute_force(spec, demand, src, allowed)
    space = PlanSpace(spec, demand, src)
    got = space.best_of(space.pairs, allowed)
    if ref is None:
        assert got is None
        return
    assert got is not None
    assert got.power_w == pytest.approx(ref[0], rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(p=replica_perf(), out=st.floats(0.0, 20000.0), allowed=st.floats(0.0, 20000.0))
def test_most_within_matches_a_linear_scan(p: ReplicaPerformance, out: float, allowed: float) -> None:
    spec = make_spec(
        variants=[{"name": "a", "precision": "fp16", "image": "x"}], replicas={"min": 0, "max": 30}
    )
    space = PlanSpace(spec, Demand(0.0, out), TableSource((DEFAULT,), {("a", DEFAULT): p}))
    pair = space.pairs[0]
    got = space.most_within(pair, 0, 30, allowed)
    fits = [n for n in range(0, 31) if space.power(pair, n) <= allowed * (1 + 1e-9) + 1e-9]
    if not fits:
        assert got is None
    else:
        assert got is not None
        assert got.replicas == max(fits)


# ------------------------------------------------------------------------- budgets and onExhausted


def test_budget_that_does_not_bind_changes_nothing() -> None:
    spec, demand = make_spec(), Demand(20000.0, 3000.0)
    free = plan(spec, demand, None, source())
    assert free.expected_power_w is not None
    capped = plan(spec, demand, free.expected_power_w + 1.0, source())
    assert (capped.variant, capped.replicas, capped.setting) == (free.variant, free.replicas, free.setting)
    assert capped.budget_met
    assert "budget allows" in capped.reason


def _exhausted(mode: str, allowed: float, current: Decision | None = None) -> Decision:
    spec = make_spec(budget={"powerW": 100, "onExhausted": mode})
    return plan(spec, Demand(0.0, 6000.0), allowed, source(), current, "power budget")


def test_degrade_serves_the_most_within_budget() -> None:
    free = plan(make_spec(), Demand(0.0, 6000.0), None, source())
    assert free.expected_power_w is not None
    allowed = free.expected_power_w * 0.6
    d = _exhausted("Degrade", allowed)
    assert not d.budget_met  # onExhausted acted: the budget cannot pay for the SLOs
    assert d.expected_power_w is not None
    assert d.expected_power_w <= allowed
    assert "onExhausted Degrade" in d.reason
    assert "budget exhausted" in d.reason
    # Nothing within budget serves more: check every variant/setting/replica count.
    spec = make_spec()
    space = PlanSpace(spec, Demand(0.0, 6000.0), source())
    served = [
        space.candidate(pair, n).served
        for pair in space.pairs
        for n in range(1, 9)
        if space.power(pair, n) <= allowed
    ]
    chosen_pair = space.find(d.variant, d.setting)
    assert chosen_pair is not None
    assert space.served(chosen_pair, d.replicas) == pytest.approx(max(served))


def test_cap_replicas_keeps_the_current_variant() -> None:
    current = Decision("fp16", 8, DEFAULT, None, "running", True)
    d = _exhausted("CapReplicas", 1200.0, current)
    assert d.variant == "fp16"
    assert not d.budget_met
    assert d.expected_power_w is not None
    assert d.expected_power_w <= 1200.0
    assert "onExhausted CapReplicas" in d.reason
    space = PlanSpace(make_spec(), Demand(0.0, 6000.0), source())
    pair = space.find(d.variant, d.setting)
    assert pair is not None
    assert space.power(pair, d.replicas + 1) > 1200.0 or d.replicas == pair.n_need


def test_hold_keeps_the_current_configuration_and_reports_the_breach() -> None:
    current = Decision("fp16", 8, DEFAULT, None, "running", True)
    d = _exhausted("Hold", 500.0, current)
    assert (d.variant, d.replicas, d.setting) == ("fp16", 8, DEFAULT)
    assert not d.budget_met
    assert "onExhausted Hold" in d.reason


def test_nothing_fits_even_at_replicas_min() -> None:
    d = _exhausted("Degrade", 10.0)
    assert not d.budget_met
    assert d.replicas == 1
    assert "nothing fits" in d.reason
    capped = _exhausted("CapReplicas", 10.0, Decision("fp8", 3, DEFAULT, None, "", True))
    assert not capped.budget_met
    assert (capped.variant, capped.replicas) == ("fp8", 1)


def test_exhausted_energy_with_min_zero_scales_to_zero() -> None:
    spec = make_spec(replicas={"min": 0, "max": 8}, budget={"energyKwh": 1})
    d = plan(spec, Demand(100.0, 500.0), 0.0, source())
    assert d.replicas == 0
    assert d.expected_power_w == 0.0
    assert not d.budget_met  # the demand goes unserved: the budget does not cover the SLOs


# ------------------------------------------------------------------------- alternatives


def test_runner_ups_explain_why_not() -> None:
    d = plan(make_spec(), Demand(20000.0, 3000.0), None, source())
    assert 1 <= len(d.alternatives) <= 3
    for a in d.alternatives:
        assert a.why_not
        assert (a.variant, a.replicas, a.setting) != (d.variant, d.replicas, d.setting)
    # The first runner-up is one replica fewer of the chosen configuration.
    assert (d.alternatives[0].variant, d.alternatives[0].replicas) == (d.variant, d.replicas - 1)
    others = [a for a in d.alternatives[1:] if a.why_not.startswith("+")]
    assert others
    assert all(d.expected_power_w is not None and a.power_w >= d.expected_power_w for a in others)


def test_runner_ups_show_the_budget_breach() -> None:
    spec = make_spec(budget={"onExhausted": "Degrade"})
    d = plan(spec, Demand(0.0, 6000.0), 900.0, source())
    assert any("over budget" in a.why_not for a in d.alternatives)


def test_choose_reports_no_runnable_variant() -> None:
    src = TableSource((DEFAULT,), {})
    space = PlanSpace(make_spec(), Demand(1.0, 1.0), src)
    c = choose(space, None)
    assert c.candidate is None
    assert "no variant can run" in c.reason


@settings(max_examples=200, deadline=None)
@given(
    p=replica_perf(),
    prompt=st.floats(min_value=0.0, max_value=40000.0),
    out=st.floats(min_value=0.0, max_value=20000.0),
    extra=st.floats(min_value=1.0, max_value=1.5),
)
def test_lower_bound_never_exceeds_any_feasible_power(
    p: ReplicaPerformance, prompt: float, out: float, extra: float
) -> None:
    """The bound that lets the search skip pairs is below the power of every replica count it covers,
    also when the curve stops short of the replica's capacity."""
    stretched = ReplicaPerformance(
        p.output_tokens_per_s * extra, p.prompt_tokens_per_s, p.prefill_power_w, p.decode_curve
    )
    for perf_ in (p, stretched):
        spec = make_spec(
            variants=[{"name": "a", "precision": "fp16", "image": "x"}], replicas={"min": 0, "max": 40}
        )
        space = PlanSpace(spec, Demand(prompt, out), TableSource((DEFAULT,), {("a", DEFAULT): perf_}))
        pair = space.pairs[0]
        if pair.n_need is None:
            continue
        for n in range(max(pair.n_need, 1), 41):
            assert pair.lower_w <= space.power(pair, n) * (1 + 1e-9) + 1e-9


def test_runner_ups_are_the_least_power_other_variants() -> None:
    names = [f"v{i}" for i in range(6)]
    table = {}
    for i, name in enumerate(names):
        for j, s in enumerate((DEFAULT, CAP)):
            table[(name, s)] = perf(
                1000.0 + 150 * i - 100 * j, 30000.0, 90.0 + 7 * i, 700.0 - 60 * i - 200 * j
            )
    src = TableSource((DEFAULT, CAP), table)
    spec = make_spec(
        variants=[{"name": n, "precision": "fp16", "image": "x"} for n in names],
        replicas={"min": 1, "max": 16},
    )
    demand = Demand(10000.0, 5000.0)
    d = plan(spec, demand, None, src)
    space = PlanSpace(spec, demand, src)
    per_variant = {}
    for pair in space.pairs:
        for n in range(1, 17):
            c = space.candidate(pair, n)
            if c.slo_met:
                per_variant[pair.variant] = min(per_variant.get(pair.variant, math.inf), c.power_w)
    others = sorted((w, v) for v, w in per_variant.items() if v != d.variant)
    shown = [(a.power_w, a.variant) for a in d.alternatives[1:]]
    assert [v for _, v in shown] == [v for _, v in others[:2]]
    assert [w for w, _ in shown] == pytest.approx([w for w, _ in others[:2]])


# ------------------------------------------------------------------------- budget semantics, float noise


def test_the_reported_degrade_case_is_budget_not_met_without_float_noise() -> None:
    """`greenllm plan` on the Llama example with powerW 450 at 60000 prompt + 1000 output tok/s: Degrade
    acts (so BudgetMet is False) and the power it reports is not a hair over the budget."""
    from pathlib import Path

    from greenllm.calibration import default_energy_model
    from greenllm.modelfile import load_green_model

    example = Path(__file__).resolve().parents[2] / "examples" / "llama-3.1-8b-h100.yaml"
    spec = load_green_model(example).spec
    spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"power_w": 450.0})})
    d = plan(spec, Demand(60000.0, 1000.0), 450.0, default_energy_model(), binding="power budget 450 W")
    assert "onExhausted Degrade" in d.reason
    assert not d.budget_met
    assert d.expected_power_w is not None
    assert d.expected_power_w <= 450.0  # exactly, not within a tolerance
    for a in d.alternatives:
        assert a.power_w == pytest.approx(round(a.power_w), abs=0.0)  # n x 450 W, no float noise


@settings(max_examples=200, deadline=None)
@given(p=replica_perf(), prompt=st.floats(0.0, 40000.0), out=st.floats(0.0, 20000.0), n=st.integers(1, 40))
def test_power_never_exceeds_the_replicas_largest_draw(
    p: ReplicaPerformance, prompt: float, out: float, n: int
) -> None:
    spec = make_spec(
        variants=[{"name": "a", "precision": "fp16", "image": "x"}], replicas={"min": 0, "max": 40}
    )
    space = PlanSpace(spec, Demand(prompt, out), TableSource((DEFAULT,), {("a", DEFAULT): p}))
    peak = max(p.prefill_power_w, max(w for _, w in p.decode_curve))
    assert space.power(space.pairs[0], n) <= n * peak


def exhaustive_most_served(
    space: PlanSpace, allowed: float | None, upto_need: bool, wanted: float
) -> tuple[float, float, float] | None:
    """(share, quality, -power) of the rule of `most_served` without pruning: each pair at the most replicas
    (up to what its SLOs need if `upto_need`) whose power fits, then the best share, quality, power."""
    best: tuple[float, float, float] | None = None
    for pair in space.pairs:
        hi = pair.n_need if upto_need and pair.n_need is not None else space.max_replicas
        fits = [
            n
            for n in range(space.min_replicas, hi + 1)
            if allowed is None or space.power(pair, n) <= allowed * (1 + 1e-9) + 1e-9
        ]
        if not fits:
            continue
        n = max(fits)
        share = 1.0 if pair.work <= 0 else min(n / (pair.work * wanted), 1.0)
        key = (share, pair.quality, -space.power(pair, n))
        if best is None or key > best:
            best = key
    return best


@settings(max_examples=200, deadline=None)
@given(
    perfs=st.lists(replica_perf(), min_size=1, max_size=6),
    prompt=st.floats(min_value=0.0, max_value=40000.0),
    out=st.floats(min_value=0.0, max_value=20000.0),
    rmin=st.integers(min_value=0, max_value=3),
    rmax=st.integers(min_value=3, max_value=30),
    allowed=st.one_of(st.none(), st.floats(min_value=0.0, max_value=20000.0)),
    upto_need=st.booleans(),
    wanted=st.sampled_from([1.0, 1.2, 2.5]),
)
def test_pruned_degrade_search_matches_the_exhaustive_one(
    perfs: list[ReplicaPerformance],
    prompt: float,
    out: float,
    rmin: int,
    rmax: int,
    allowed: float | None,
    upto_need: bool,
    wanted: float,
) -> None:
    """The branch and bound of `most_served` (share bounds, searches capped at the budget's replica bound)
    finds the same share, quality and power as trying every pair and replica count."""
    names = ["a", "b", "c"]
    settings_ = (DEFAULT, CAP)
    table = {(names[i % 3], settings_[i // 3 % 2]): p for i, p in enumerate(perfs)}
    spec = make_spec(
        variants=[
            {"name": n, "precision": "fp16", "image": "x", "quality": 1.0 - i * 0.01}
            for i, n in enumerate(names)
        ],
        replicas={"min": rmin, "max": rmax},
    )
    space = PlanSpace(spec, Demand(prompt, out), TableSource(settings_, table))
    want = exhaustive_most_served(space, allowed, upto_need, wanted)
    got = space.most_served(space.pairs, allowed, upto_need, wanted)
    if want is None:
        assert got is None
        return
    assert got is not None
    pair = space.find(got.variant, got.setting)
    assert pair is not None
    share = 1.0 if pair.work <= 0 else min(got.replicas / (pair.work * wanted), 1.0)
    assert (share, got.quality) == (pytest.approx(want[0], rel=1e-12), want[1])
    assert got.power_w == pytest.approx(-want[2], rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------------- capacity floor, best effort


def test_min_capacity_raises_the_capacity_rule() -> None:
    spec = make_spec(variants=[{"name": "fp16", "precision": "fp16", "image": "x"}])
    src = TableSource((DEFAULT,), {("fp16", DEFAULT): perf(1000.0, 1e9, 100.0, 700.0)})
    plain = PlanSpace(spec, Demand(0.0, 3000.0), src)
    assert plain.best_of(plain.pairs, None) is not None
    raised = PlanSpace(spec, Demand(0.0, 3000.0), src, min_capacity=2.0)
    best = raised.best_of(raised.pairs, None)
    assert best is not None
    assert best.replicas == 6  # 3000 x 2 / 1000
    lower = PlanSpace(spec, Demand(0.0, 3000.0), src, min_capacity=0.5)  # never below 1 + headroom
    assert lower.headroom_factor == pytest.approx(1.2)
    assert "capacity kept at 2.00x demand" in choose(raised, None).reason
    assert "capacity 167% of demand < 200%" in raised.candidate(raised.pairs[0], 5).why_not


def test_best_effort_runs_the_most_capacity_not_the_best_quality() -> None:
    """Beyond replicas.max both variants serve the bare demand, neither its headroom: best effort runs the
    one with more capacity (towards the capacity rule), not the higher quality one."""
    spec = make_spec(
        variants=[
            {"name": "hq", "precision": "fp16", "image": "x", "quality": 1.0},
            {"name": "fast", "precision": "int4", "image": "x", "quality": 0.9},
        ],
        replicas={"min": 1, "max": 4},
    )
    src = TableSource(
        (DEFAULT,),
        {
            ("hq", DEFAULT): perf(1000.0, 1e9, 100.0, 500.0),
            ("fast", DEFAULT): perf(1150.0, 1e9, 100.0, 500.0),
        },
    )
    d = plan(spec, Demand(0.0, 4000.0), None, src)  # hq x4 serves 100%, fast x4 serves 115% of 4000
    assert "SLOs unreachable" in d.reason
    assert (d.variant, d.replicas) == ("fast", 4)


def test_catalog_follows_the_spec_content_not_the_object() -> None:
    """A spec parsed again with the same content reuses what the source said; a changed spec never gets a
    stale answer, and neither does another source."""
    from greenllm.core.plan_catalog import catalog

    spec, src = make_spec(), source()
    runnable, unusable = catalog(spec, src)
    assert {(v.name, s) for v, s, _ in runnable} == set(src.table)
    assert catalog(GreenModelSpec.model_validate(spec.model_dump(by_alias=True)), src)[0] is runnable
    floor = make_spec(slo={"minQuality": 0.95})
    assert {v.name for v, _, _ in catalog(floor, src)[0]} == {"fp16", "fp8"}
    assert "slo.minQuality" in catalog(floor, src)[1]["int4"]
    tighter = make_spec(slo={"tpotP90Ms": 20})
    assert catalog(tighter, src)[0] is not runnable
    fewer = TableSource((DEFAULT,), {("fp16", DEFAULT): perf(1000.0, 20000.0, 100.0, 700.0)})
    only, why = catalog(spec, fewer)
    assert [(v.name, s) for v, s, _ in only] == [("fp16", DEFAULT)]
    assert "TPOT" in why["int4"]
    assert not unusable
