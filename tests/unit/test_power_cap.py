"""budget.powerW as a cap on what the fleet can draw at once: core.burst.power_cap_fit and the decision
step's burst rules under a binding power budget (the warm floor and the burst setting priced at peak)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.calibration import default_energy_model
from greenllm.core.burst import (
    MAX_MARGIN,
    Floor,
    FloorState,
    chunked_prefill_rate,
    peak_power_w,
    power_cap_fit,
    setting_performance,
)
from greenllm.core.decision import Decision, Observation, ReasonKind
from greenllm.core.energy import EnergyModel
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.step import LoopState, initial_state, step
from greenllm.modelfile import load_green_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-3.1-8b-h100.yaml"
DEFAULT = PowerSetting()
CAP_450 = PowerSetting(limit_w=450.0)
CAP_300 = PowerSetting(limit_w=300.0)
CAP_250 = PowerSetting(limit_w=250.0)
TTFT_S = 2.0


def perf(prompt: float, peak: float, *, idle: float = 100.0) -> ReplicaPerformance:
    """A replica prefilling `prompt` tokens/s at `peak` W; its batch curve peaks at `peak` too."""
    return ReplicaPerformance(
        output_tokens_per_s=2000.0,
        prompt_tokens_per_s=prompt,
        prefill_power_w=peak * 0.9,
        decode_curve=((0.0, idle), (2000.0, peak * 0.8)),
        batch_curve=((1.0, 0.01, idle + 50.0), (64.0, 0.03, peak)),
    )


# Default power: 30,000 prompt tok/s at 700 W; 300 W: 22,000 at 300 W; 250 W: 18,000 at 250 W.
PERFS = {DEFAULT: perf(30_000.0, 700.0), CAP_300: perf(22_000.0, 300.0), CAP_250: perf(18_000.0, 250.0)}


def rate(p: ReplicaPerformance) -> float:
    return p.prompt_tokens_per_s  # the floor's unit, kept simple here


def floor_of(tokens: float) -> Floor:
    """A floor for `tokens` prompt tokens within a 2 s TTFT."""
    return Floor(0, FloorState(), "", tokens, TTFT_S)


def fit(cap_w: float, planned: int, tokens: float, efficient: PowerSetting = CAP_300, **kw: Any) -> Any:
    f = floor_of(tokens)
    wanted = max(planned, f.at_rate(rate(PERFS[DEFAULT]), 100))
    return power_cap_fit(
        cap_w, planned, wanted, efficient, DEFAULT, PERFS, lambda p: f.at_rate(rate(p), 100), rate, **kw
    )


# ------------------------------------------------------------------------------------------ peak power


def test_peak_power_is_the_most_of_prefill_decode_and_batch_curves() -> None:
    p = perf(10_000.0, 500.0)
    assert peak_power_w(p) == 500.0  # the batch curve's largest batch
    hot_prefill = replace(p, prefill_power_w=620.0)
    assert peak_power_w(hot_prefill) == 620.0
    no_batches = replace(p, batch_curve=())
    assert peak_power_w(no_batches) == 450.0  # prefill 0.9 x 500 beats the decode curve's 400


# ------------------------------------------------------------------------------------------ the fit


def test_a_cap_that_does_not_bind_changes_nothing() -> None:
    # Floor at default power: 240,000 tokens / (30,000 x 2 s) = 4 replicas x 700 W = 2,800 W <= 3,000 W.
    f = fit(3000.0, 2, 240_000.0)
    assert (f.replicas, f.setting, f.burst, f.lost, f.note) == (4, CAP_300, DEFAULT, False, "")
    assert f.peak_w == 2800.0


def test_the_burst_setting_is_lowered_before_the_floor_is_cut() -> None:
    # 4 x 700 W breaks 2,000 W; at 300 W the same burst needs ceil(240,000 / 44,000) = 6 replicas: 1,800 W.
    f = fit(2000.0, 2, 240_000.0)
    assert (f.replicas, f.burst, f.lost) == (6, CAP_300, False)
    assert f.replicas * peak_power_w(PERFS[f.burst]) <= 2000.0
    assert "burst setting lowered from default power to 300 W/GPU" in f.note
    assert "floor cut" not in f.note


def test_when_no_setting_keeps_the_floor_the_most_burst_capacity_wins() -> None:
    # 1,500 W: default fits 2 (60,000 tok/s), 300 W fits 5 (110,000), 250 W fits 6 (108,000): 300 W.
    f = fit(1500.0, 2, 240_000.0)
    assert (f.replicas, f.burst, f.lost) == (5, CAP_300, True)
    assert f.peak_w == 1500.0
    assert "warm floor cut to 5 replicas" in f.note


def test_burst_settings_slower_than_the_efficient_one_are_never_used() -> None:
    # Efficient at 300 W: 250 W (slower) may not be the burst setting even though it fits more replicas.
    f = fit(1250.0, 2, 240_000.0)
    assert f.burst in (DEFAULT, CAP_300)
    assert f.replicas * peak_power_w(PERFS[f.burst]) <= 1250.0


def test_planned_replicas_that_break_the_cap_themselves_get_the_most_capacity_it_pays_for() -> None:
    # 7 x 300 W = 2,100 W > 1,800 W. Within it: 6 x 300 W (132,000 prompt tok/s), 7 x 250 W (126,000),
    # 2 x default (60,000): 6 replicas at 300 W, no fast tier, and the capacity lost is said.
    f = fit(1800.0, 7, 0.0)
    assert (f.replicas, f.setting, f.burst, f.lost) == (6, CAP_300, CAP_300, True)
    assert f.peak_w == 1800.0
    assert "could draw more" in f.note


def test_replicas_min_wins_over_the_cap_and_the_note_says_so() -> None:
    f = fit(400.0, 3, 0.0, min_replicas=2)
    assert (f.replicas, f.setting, f.lost) == (2, CAP_250, True)
    assert f.peak_w == 500.0 > 400.0
    assert "over it: replicas.min is 2" in f.note


@pytest.mark.parametrize("cap_w", [300.0, 700.0, 1100.0, 1500.0, 1800.0, 2000.0, 2600.0, 5000.0])
@pytest.mark.parametrize("planned", [1, 2, 4])
@pytest.mark.parametrize("tokens", [0.0, 60_000.0, 240_000.0, 900_000.0])
def test_the_worst_case_fits_whenever_the_planned_replicas_can(
    cap_w: float, planned: int, tokens: float
) -> None:
    f = fit(cap_w, planned, tokens)
    assert f.peak_w == f.replicas * peak_power_w(PERFS[f.burst])
    if planned * peak_power_w(PERFS[CAP_250]) <= cap_w:
        assert f.peak_w <= cap_w * (1 + 1e-12)
        assert f.replicas >= min(planned, 1)
    wanted = max(planned, floor_of(tokens).at_rate(rate(PERFS[DEFAULT]), 100))
    if wanted * 700.0 <= cap_w:  # nothing to give up: exactly the uncapped rules
        assert (f.replicas, f.burst, f.lost) == (wanted, DEFAULT, False)


# ------------------------------------------------------------------------- the step, on the energy model


@pytest.fixture(scope="module")
def source() -> EnergyModel:
    return default_energy_model()


def example(**budget: Any) -> GreenModelSpec:
    """The reference example with `budget` (its wire names: powerW, energyKwh, period) set."""
    spec = load_green_model(EXAMPLE).spec
    if not budget:
        return spec
    doc = spec.model_dump(by_alias=True, exclude_unset=True)
    doc["budget"] = budget
    return GreenModelSpec.model_validate(doc)


def in_force(spec: GreenModelSpec, replicas: int = 2, margin: float = 1.0) -> LoopState:
    state = initial_state(spec, 0.0, Decision("int8", replicas, CAP_450, None, "seed", True))
    return replace(state, floor=FloorState(margin=margin))


def burst_obs(t: float, *, attainment: float = 0.995, arrivals: float = 440.0) -> Observation:
    """A moderate load (int8 x2 at 450 W serves it) after a burst of `arrivals` requests of 2,000 prompt
    tokens within one second."""
    return Observation(
        time=t,
        prompt_tokens_per_s=50_000.0,
        output_tokens_per_s=800.0,
        requests_per_s=25.0,
        requests_waiting=0.0,
        attainment=attainment,
        peak_arrivals=arrivals,
    )


def worst_case_w(spec: GreenModelSpec, d: Decision, source: EnergyModel) -> float:
    perfs = setting_performance(spec, spec.variant(d.variant), source)
    burst = d.fast_tier.burst if d.fast_tier is not None else d.setting
    return d.replicas * peak_power_w(perfs[burst])


def test_without_a_budget_the_floor_and_the_burst_setting_are_unchanged(source: EnergyModel) -> None:
    spec = example()
    _, d = step(spec, in_force(spec), burst_obs(15.0), 15.0, source)
    assert d.kind is ReasonKind.BURST and d.budget_met
    assert d.fast_tier is not None and d.fast_tier.burst == DEFAULT
    assert d.replicas > 2  # the floor raised them
    # A power budget far above the worst case decides the same.
    _, roomy = step(example(powerW=100_000.0), in_force(spec), burst_obs(15.0), 15.0, source)
    assert (roomy.replicas, roomy.setting, roomy.fast_tier, roomy.budget_met, roomy.kind) == (
        d.replicas,
        d.setting,
        d.fast_tier,
        True,
        ReasonKind.BURST,
    )


@pytest.mark.parametrize("power_w", [1800.0, 3000.0, 4500.0])
def test_a_binding_power_budget_caps_the_floor_and_the_burst_setting_at_peak(
    source: EnergyModel, power_w: float
) -> None:
    spec = example(powerW=power_w)
    _, uncapped = step(example(), in_force(spec), burst_obs(15.0), 15.0, source)
    assert worst_case_w(spec, uncapped, source) > power_w  # the rules alone would break it
    _, d = step(spec, in_force(spec), burst_obs(15.0), 15.0, source)
    assert worst_case_w(spec, d, source) <= power_w
    assert d.replicas >= 2  # the plan's own replicas stay
    assert "caps what the GPUs can draw at once" in d.reason
    # The floor was cut: the budget cannot pay for what the error budget asked, and the decision says so.
    assert (d.budget_met, d.kind) == (False, ReasonKind.BUDGET_BINDS)


def test_a_cap_that_only_lowers_the_burst_setting_keeps_budget_met(source: EnergyModel) -> None:
    spec = example()
    perfs = setting_performance(spec, spec.variant("int8"), source)
    _, free = step(spec, in_force(spec), burst_obs(15.0, arrivals=100.0), 15.0, source)
    assert free.fast_tier is not None
    need = free.replicas * peak_power_w(perfs[DEFAULT])
    # Just under the default-power worst case, with room for the floor at a lower burst setting.
    spec = example(powerW=need - 1.0)
    _, d = step(spec, in_force(spec), burst_obs(15.0, arrivals=100.0), 15.0, source)
    assert worst_case_w(spec, d, source) <= need - 1.0
    assert d.budget_met and "burst setting lowered" in d.reason and "floor cut" not in d.reason
    burst = d.fast_tier.burst if d.fast_tier is not None else d.setting
    rate_at = chunked_prefill_rate(perfs[burst], d.token_budget or 0, 0.05)
    free_rate = chunked_prefill_rate(perfs[DEFAULT], free.token_budget or 0, 0.05)
    assert d.replicas * rate_at >= free.replicas * free_rate * (1 - 1e-9)  # the same burst capacity


def test_the_floor_stays_on_while_the_power_budget_binds(source: EnergyModel) -> None:
    """Before: a plan over the budget (BudgetBinds, budget_met False) switched the floor off, the next
    plan within it switched it on again: pods started and were deleted on every flip."""
    spec = example(powerW=1800.0)
    state = in_force(spec, replicas=4)
    busy = replace(burst_obs(15.0), prompt_tokens_per_s=180_000.0, output_tokens_per_s=3000.0)
    state, over = step(spec, state, busy, 15.0, source)
    state, calm = step(spec, state, burst_obs(30.0), 30.0, source)
    assert not over.budget_met
    assert over.replicas == calm.replicas  # no flip of the floor between the two
    assert worst_case_w(spec, over, source) <= 1800.0 and worst_case_w(spec, calm, source) <= 1800.0


def test_misses_while_the_cap_cuts_the_floor_do_not_raise_its_margin(source: EnergyModel) -> None:
    """Before: the misses a binding budget caused were read as a floor too small and the margin climbed to
    its maximum (4x): once the budget stopped binding, 24 replicas stayed warm (4.09 kWh instead of 2.25)."""
    spec = example(powerW=1800.0)
    state = in_force(spec)
    for i, attainment in enumerate((0.98, 0.97, 0.96, 0.95, 0.94)):
        t = 15.0 + 300.0 * i
        state, d = step(spec, state, burst_obs(t, attainment=attainment), t, source)
        assert not d.budget_met
    assert state.floor.margin == 1.0
    # Without a budget the same misses do raise it: the rule above is the budget's exception only.
    free, spec_free = in_force(example()), example()
    for i, attainment in enumerate((0.98, 0.97)):
        t = 15.0 + 300.0 * i
        free, _ = step(spec_free, free, burst_obs(t, attainment=attainment), t, source)
    assert 1.0 < free.floor.margin <= MAX_MARGIN


def test_an_energy_budget_that_binds_skips_the_floor_and_forgets_its_misses(source: EnergyModel) -> None:
    spec = example(energyKwh=0.001, period="24h")
    state = in_force(spec)
    state, d = step(spec, state, burst_obs(15.0, attainment=0.97), 15.0, source)
    assert not d.budget_met and d.kind is not ReasonKind.BURST
    assert state.floor.last_attainment == 0.97  # not read later as a floor still falling short
    assert state.floor.margin == 1.0
    assert not math.isnan(d.expected_power_w or 0.0)


def test_on_exhausted_hold_keeps_the_configuration_in_force_as_it_is(source: EnergyModel) -> None:
    spec = example(powerW=1000.0, onExhausted="Hold")
    busy = replace(burst_obs(15.0), prompt_tokens_per_s=180_000.0, output_tokens_per_s=3000.0)
    _, d = step(spec, in_force(spec, replicas=4), busy, 15.0, source)
    assert (d.replicas, d.setting, d.budget_met, d.kind) == (4, CAP_450, False, ReasonKind.BUDGET_BINDS)
    assert "onExhausted Hold" in d.reason and "caps what the GPUs" not in d.reason
