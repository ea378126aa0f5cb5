"""The baselines: the HPA algorithm and the oracle's choice."""

from __future__ import annotations

from typing import Any

import pytest
from simkit import FakeSource, spec_dict

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.performance import PowerSetting
from greenllm.sim.policies import HpaPolicy, OraclePolicy, PerfTable, StaticPolicy, Truth, top_variant


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


def oracle_choice(spec: GreenModelSpec, prompt: float, output: float) -> tuple[str, int, PowerSetting]:
    oracle = OraclePolicy(spec, PerfTable(spec, FakeSource()), 1.0, 8)
    truth = Truth(lambda start, dt: (prompt, output))
    view: Any = None
    t = oracle.decide(0.0, view, truth).target
    return t.variant, t.replicas, t.setting


def test_oracle_takes_the_cheapest_configuration_for_the_exact_work(spec: GreenModelSpec) -> None:
    # 15,000 prompt tokens in one second. fast @300 W (16,000 tok/s): 0.9375 x 300 + 0.0625 x 100 = 287.5 W;
    # fast at default (20,000 tok/s): 0.75 x 500 + 0.25 x 100 = 400 W; hq needs 2 replicas.
    assert oracle_choice(spec, 15_000.0, 0.0) == ("fast", 1, PowerSetting(limit_w=300.0))


def test_oracle_respects_the_quality_floor() -> None:
    strict = GreenModelSpec.model_validate(spec_dict(slo={"minQuality": 0.995}))
    variant, replicas, _ = oracle_choice(strict, 15_000.0, 0.0)
    assert variant == "hq"
    assert replicas == 2


def test_oracle_keeps_replicas_min_when_idle(spec: GreenModelSpec) -> None:
    assert oracle_choice(spec, 0.0, 0.0)[1] == 1
    zero = GreenModelSpec.model_validate(spec_dict(replicas={"min": 0, "max": 8}))
    assert oracle_choice(zero, 0.0, 0.0)[1] == 0


def test_oracle_cannot_exceed_the_replica_limit(spec: GreenModelSpec) -> None:
    variant, replicas, _ = oracle_choice(spec, 1_000_000.0, 0.0)
    assert replicas == 8
    assert variant == "fast"  # the most capacity when nothing suffices


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
