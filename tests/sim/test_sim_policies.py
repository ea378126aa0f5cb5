"""The policies: the HPA algorithm, static, the clairvoyant's foresight, and what a decision log says."""

from __future__ import annotations

from typing import Any

import pytest
from simkit import CAPPED, DEFAULT, FakeSource, make_trace, spec_dict

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.fasttier import FastTier
from greenllm.core.performance import PowerSetting
from greenllm.sim.fleet import FleetTarget
from greenllm.sim.policies import (
    ClairvoyantPolicy,
    DecisionLog,
    HpaPolicy,
    PerfTable,
    StaticPolicy,
    Truth,
    prompt_need,
    top_variant,
)


class StubView:
    """Just what the HPA reads: average utilization and ready replicas."""

    def __init__(self, util: float | None, ready: int | None) -> None:
        self.util = util
        self.ready = ready

    def ratio_of_rates(self, numerator: str, denominator: str, range_s: float) -> float | None:
        return self.util

    def gauge(self, name: str) -> float | None:
        return None if self.ready is None else float(self.ready)

    def rate(self, counter: str, range_s: float) -> float | None:
        return None


def decide(hpa: HpaPolicy, now: float, util: float | None, ready: int | None) -> int:
    view: Any = StubView(util, ready)
    return hpa.decide(now, view, None).target.replicas


def test_hpa_scales_up_to_the_target_utilization(spec: GreenModelSpec) -> None:
    hpa = HpaPolicy(spec, "hq")
    assert hpa.initial().replicas == 1
    assert decide(hpa, 15.0, 1.0, 1) == 2  # ceil(1 x 1.0 / 0.7)
    assert decide(hpa, 30.0, 1.0, 2) == 3  # ceil(2 / 0.7)


def test_hpa_scale_up_rate_is_limited(spec: GreenModelSpec) -> None:
    big = GreenModelSpec.model_validate(spec_dict(replicas={"min": 1, "max": 100}))
    hpa = HpaPolicy(big, "hq")
    assert decide(hpa, 15.0, 1.0, 1) == 2
    hpa2 = HpaPolicy(big, "hq")
    hpa2._current = 10  # as if it had scaled to 10 already
    assert decide(hpa2, 15.0, 1.0, 10) == 15  # ceil(10 / 0.7) = 15 <= max(10 + 4, 2 x 10)
    hpa3 = HpaPolicy(big, "hq")
    hpa3._current = 2
    assert decide(hpa3, 15.0, 5.0, 2) == 6  # wants ceil(2 x 5 / 0.7) = 15; at most max(2 + 4, 4) = 6


def test_hpa_tolerance_keeps_replicas(spec: GreenModelSpec) -> None:
    hpa = HpaPolicy(spec, "hq")
    hpa._current = 4
    assert decide(hpa, 15.0, 0.75, 4) == 4  # 0.75 / 0.7 = 1.07, inside the 10% tolerance


def test_hpa_scale_down_waits_out_the_window(spec: GreenModelSpec) -> None:
    hpa = HpaPolicy(spec, "hq")
    hpa._current = 6
    assert decide(hpa, 0.0, 0.7, 6) == 6
    assert decide(hpa, 15.0, 0.1, 6) == 6  # the recommendation of 6 at t=0 holds for 5 minutes
    assert decide(hpa, 285.0, 0.1, 6) == 6
    assert decide(hpa, 300.0, 0.1, 6) == 1  # t=0 has left the window: ceil(6 x 0.1 / 0.7) = 1


def test_hpa_holds_without_metrics_and_respects_bounds(spec: GreenModelSpec) -> None:
    hpa = HpaPolicy(spec, "hq")
    hpa._current = 6
    assert decide(hpa, 15.0, None, None) == 6
    assert decide(hpa, 30.0, 1.0, 6) == 8  # wants ceil(6 / 0.7) = 9 > replicas.max


def test_static_never_changes() -> None:
    static = StaticPolicy("hq", 7)
    view: Any = StubView(1.0, 7)
    assert static.initial().replicas == 7
    assert static.decide(100.0, view, None).target == static.initial()


def test_top_variant_is_the_highest_quality(spec: GreenModelSpec) -> None:
    assert top_variant(spec).name == "hq"


@pytest.mark.parametrize("name", ["hq", "fast"])
def test_perf_table_caches_and_falls_back_to_default_power(spec: GreenModelSpec, name: str) -> None:
    calls: list[tuple[str, PowerSetting]] = []

    class Picky(FakeSource):
        def performance(self, spec: GreenModelSpec, variant: Any, setting: PowerSetting) -> Any:
            calls.append((variant.name, setting))
            return None if setting.limit_w is not None else super().performance(spec, variant, setting)

    table = PerfTable(spec, Picky())
    capped = PowerSetting(limit_w=300.0)
    assert table(name, capped) == table(name, PowerSetting())
    table(name, capped)
    assert calls.count((name, capped)) == 1


def test_top_variant_takes_the_first_listed_on_a_tie() -> None:
    tied = GreenModelSpec.model_validate(
        spec_dict(
            variants=[
                {"name": "a", "precision": "bf16", "image": "i", "quality": 0.99},
                {"name": "b", "precision": "fp8", "image": "i", "quality": 1.0},
                {"name": "c", "precision": "fp8", "image": "i", "quality": 1.0},
            ]
        )
    )
    assert top_variant(tied).name == "b"


# ------------------------------------------------------------------------------------------- prompt_need


def test_prompt_need_counts_the_prompts_of_the_next_ttft() -> None:
    # Prompt tokens per 1-s step: 1000, 2000, 0, 4000, 0. TTFT 2 s at 1,000 tokens/s: a replica prefills
    # 2,000 tokens within it, so step k needs (tokens of steps k and k + 1) / 2,000 replicas.
    trace = make_trace([0.5, 1.2, 3.0], [1000.0, 2000.0, 4000.0], 1.0, duration=5.0)
    need = prompt_need(trace, 5, 2.0, 1000.0)
    assert need == pytest.approx([1.5, 1.0, 2.0, 2.0, 0.0])


def test_prompt_need_puts_late_arrivals_in_the_last_step() -> None:
    trace = make_trace([0.2, 9.0], [1000.0, 3000.0], 1.0, duration=9.0)
    assert prompt_need(trace, 3, 1.0, 1000.0) == pytest.approx([1.0, 0.0, 3.0])


# ------------------------------------------------------------------------------------------- clairvoyant


def clairvoyant(need: list[float], **kwargs: Any) -> ClairvoyantPolicy:
    options: dict[str, Any] = {
        "interval_s": 15.0,
        "lookahead_steps": 3,
        "margin": 1.0,
        "min_replicas": 1,
        "max_replicas": 8,
    }
    options.update(kwargs)
    return ClairvoyantPolicy("clairvoyant", "fast", None, CAPPED, need, **options)


TRUTH = Truth(make_trace([0.0], 1.0, 1.0))


def test_clairvoyant_asks_for_the_largest_need_it_foresees_times_its_margin() -> None:
    need = [0.5, 0.2, 2.1, 0.0, 0.0, 3.0, 0.0]
    policy = clairvoyant(need, margin=1.5)
    assert policy.initial() == FleetTarget("fast", 4, CAPPED)  # ceil(1.5 x 2.1)
    view: Any = None
    assert policy.decide(1.0, view, TRUTH).target.replicas == 4  # steps 1..3
    assert policy.decide(3.0, view, TRUTH).target.replicas == 5  # steps 3..5: ceil(1.5 x 3.0)
    assert policy.decide(6.0, view, TRUTH).target.replicas == 1  # replicas.min
    assert policy.decide(7.0, view, TRUTH).target.replicas == 1  # past the trace


def test_clairvoyant_is_bounded_and_keeps_its_settings() -> None:
    tier = FastTier(efficient=CAPPED, burst=DEFAULT)
    policy = ClairvoyantPolicy(
        "instant",
        "fast",
        tier,
        CAPPED,
        [100.0],
        interval_s=15.0,
        lookahead_steps=1,
        margin=1.0,
        min_replicas=0,
        max_replicas=6,
        instant=True,
    )
    assert policy.initial() == FleetTarget("fast", 6, CAPPED, tier)
    assert policy.instant and policy.clairvoyant and policy.interval_s == 0.0
    assert clairvoyant([0.0], min_replicas=0).initial().replicas == 1  # never below one replica


def test_only_clairvoyant_policies_are_handed_the_truth(spec: GreenModelSpec) -> None:
    assert clairvoyant([1.0]).clairvoyant
    assert not StaticPolicy("hq", 1).clairvoyant
    assert not HpaPolicy(spec, "hq").clairvoyant
    with pytest.raises(AssertionError):
        view: Any = None
        clairvoyant([1.0]).decide(0.0, view, None)


# ------------------------------------------------------------------------------------------ decision log


def test_a_decision_log_says_both_fast_tier_settings() -> None:
    tier = FastTier(efficient=PowerSetting(limit_w=300.0), burst=DEFAULT)
    log = DecisionLog(15.0, FleetTarget("fast", 3, PowerSetting(limit_w=300.0), tier), 1200.0, 80.0, "why")
    out = log.as_json()
    assert out["efficient"] == {"power_limit_w": 300.0, "locked_clock_mhz": None}
    assert out["burst"] == {"power_limit_w": None, "locked_clock_mhz": None}
    assert out["demand_prompt_tokens_per_s"] == 1200.0
    assert (out["variant"], out["replicas"], out["observed"]) == ("fast", 3, None)
    plain = DecisionLog(
        0.0, FleetTarget("hq", 1, PowerSetting(locked_clock_mhz=1500)), None, None, "x"
    ).as_json()
    assert plain["efficient"] == {"power_limit_w": None, "locked_clock_mhz": 1500}
    assert plain["burst"] is None
