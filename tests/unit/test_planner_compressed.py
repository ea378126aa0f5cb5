"""The planner over quantized, pruned and distilled variants (issue 14): the same rule for all of them,
with the real energy model and the compressed example; a distilled variant runs only when the quality
floor allows it, and then only where it is the least power."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.table_source import TableSource

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.calibration import default_energy_model
from greenllm.core.decision import Decision, Demand, Observation
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_catalog import catalog_of
from greenllm.core.planner import plan
from greenllm.core.step import initial_state, step
from greenllm.modelfile import load_green_model
from greenllm.sim.command import with_quality_floor

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-3.1-8b-compressed.yaml"
DEMANDS = [
    Demand(prompt, output)
    for prompt in (0.0, 2000.0, 20000.0, 60000.0, 150000.0)
    for output in (300.0, 1000.0, 8000.0, 20000.0)
]


def at_floor(floor: float) -> GreenModelSpec:
    return with_quality_floor(load_green_model(EXAMPLE).spec, floor)


def test_the_distilled_variant_never_runs_above_its_quality() -> None:
    model, spec = default_energy_model(), at_floor(0.97)
    assert "quality 0.927 < slo.minQuality 0.97" in catalog_of(spec, model).unusable["minitron"]
    for demand in DEMANDS:
        d = plan(spec, demand, None, model)
        assert d.variant != "minitron", demand
        assert all(a.variant != "minitron" for a in d.alternatives)


def test_the_distilled_variant_runs_where_the_floor_allows_it_and_it_is_least_power() -> None:
    model, high, low = default_energy_model(), at_floor(0.97), at_floor(0.92)
    chosen = []
    for demand in DEMANDS:
        d_low, d_high = plan(low, demand, None, model), plan(high, demand, None, model)
        assert d_low.expected_power_w is not None and d_high.expected_power_w is not None
        # A lower floor only widens the search: never more power for the same demand.
        assert d_low.expected_power_w <= d_high.expected_power_w + 1e-9, demand
        if d_low.variant == "minitron":
            chosen.append(demand)
            assert "least power meeting SLOs: minitron" in d_low.reason
        elif d_low.variant == d_high.variant:
            assert d_low.expected_power_w == pytest.approx(d_high.expected_power_w)
    assert Demand(20000.0, 20000.0) in chosen  # a mixed load: its 4.5B prefill and decode win
    assert len(chosen) < len(DEMANDS)  # not simply the smallest model: elsewhere another variant wins


def test_a_distilled_variant_with_the_least_power_is_chosen_only_when_the_floor_allows_it() -> None:
    """With a table source in which the student is by far the cheapest, the floor alone decides."""

    def perf(out: float, watts: float) -> ReplicaPerformance:
        return ReplicaPerformance(out, 20 * out, watts, ((0.0, 100.0), (out, watts)))

    default = PowerSetting()
    src = TableSource(
        (default,),
        {("teacher", default): perf(1000.0, 700.0), ("student", default): perf(4000.0, 400.0)},
    )

    def spec(floor: float) -> GreenModelSpec:
        return GreenModelSpec.model_validate(
            {
                "model": {"name": "m", "paramsBillions": 8},
                "variants": [
                    {"name": "teacher", "precision": "bf16", "image": "big"},
                    {
                        "name": "student",
                        "precision": "bf16",
                        "image": "small",
                        "quality": 0.93,
                        "qualitySource": "MMLU 5-shot",
                        "model": {"name": "s", "paramsBillions": 4.5},
                    },
                ],
                "slo": {"minQuality": floor},
                "replicas": {"max": 16},
            }
        )

    demand = Demand(10000.0, 3000.0)
    assert plan(spec(0.93), demand, None, src).variant == "student"
    assert plan(spec(0.9300001), demand, None, src).variant == "teacher"


def test_a_changed_variant_model_is_a_new_catalog() -> None:
    model = default_energy_model()
    spec = at_floor(0.92)
    doc = spec.model_dump(by_alias=True, exclude_unset=True)
    doc["variants"][-1]["model"]["paramsBillions"] = 6.0
    bigger = GreenModelSpec.model_validate(doc)
    a = dict((v.name, p) for v, s, p in catalog_of(spec, model).runnable if s == PowerSetting())
    b = dict((v.name, p) for v, s, p in catalog_of(bigger, model).runnable if s == PowerSetting())
    assert b["minitron"].output_tokens_per_s < a["minitron"].output_tokens_per_s
    assert b["bf16"] == a["bf16"]


# --------------------------------------- a switch is judged on the fleets as they run (warm floor, fast tier)


def _burst_obs(t: float, peak_arrivals: float | None) -> Observation:
    """A prefill-bound minute of the code trace at the README's scale (first decision of its run)."""
    return Observation(
        time=t,
        prompt_tokens_per_s=58338.0,
        output_tokens_per_s=937.0,
        requests_per_s=26.6,
        attainment=0.999,
        peak_arrivals=peak_arrivals,
    )


def _run_in_int8(peak_arrivals: float | None) -> list[Decision]:
    model, spec = default_energy_model(), at_floor(0.97)
    decision = Decision("int8", 15, PowerSetting(limit_w=450.0), None, "in force")
    state = initial_state(spec, 0.0, decision)
    decisions = []
    for k in range(1, 25):  # 6 minutes at the example's 15-s interval; switchHold is 5 minutes
        state, d = step(spec, state, _burst_obs(15.0 * k, peak_arrivals), 15.0 * k, model)
        decisions.append(d)
    return decisions


def test_a_switch_is_judged_on_the_warm_floors_fleet_not_on_the_fluid_plan() -> None:
    """The fluid plan (2 replicas, cap-bound) makes 2:4 sparse-fp8 only 7.5 % cheaper than int8 (833 vs
    900 W), under the 10 % switchThreshold; the warm floor runs 11 replicas at the fast tier's 450 W, each
    decoding about one stream, where sparse-fp8 costs half as much per token: that fleet's saving decides,
    and after switchHold the fleet moves to sparse-fp8."""
    with_floor = _run_in_int8(483.0)
    first = with_floor[0]
    assert "least power meeting SLOs: sparse-fp8 x2 at clock 1280 MHz = 833 W" in first.reason
    assert first.variant == "int8" and first.replicas == 11
    assert "as run: int8 x11 at 450 W/GPU = 4094 W, sparse-fp8 x10 at 450 W/GPU = 2939 W" in first.reason
    saving = re.search(r"switch to sparse-fp8 saves ([\d.]+)%, pending 0s", first.reason)
    assert saving is not None and float(saving.group(1)) == pytest.approx(100 * (1 - 2939 / 4094), abs=0.1)
    switched = [i for i, d in enumerate(with_floor) if d.variant == "sparse-fp8"]
    assert switched == list(range(20, 24))  # pending from the first tick (15 s), switched 300 s later
    assert "switched variant int8 -> sparse-fp8" in with_floor[20].reason
    # Without a burst in the window there is no floor: the fleet that runs is the plan at the fast tier's
    # setting (450 W for both, not the plan's 1,280 MHz clock), and no switch saves 10 %.
    without = _run_in_int8(None)
    assert all(d.variant == "int8" for d in without)
    assert "< switchThreshold 10%; as run: int8 x2 at 450 W/GPU = 900 W" in without[0].reason
