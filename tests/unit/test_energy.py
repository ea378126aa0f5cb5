"""The energy model: fit to its source rows, monotonicity, SLO cut, power knobs, derivations, overrides."""

from __future__ import annotations

import itertools
import math
from statistics import median
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, PowerMode, Variant
from greenllm.calibration import default_energy_model
from greenllm.core.calibration_records import ClockEvidence, GpuPowerLimits
from greenllm.core.derived_profiles import (
    derive_eight_bit,
    derive_int4,
    fp8_ratio_at,
    scale_profile,
    weight_read_ms,
)
from greenllm.core.energy import EnergyModel
from greenllm.core.model_names import params_from_name
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.power_response import PowerResponse, power_for_response, response_at
from greenllm.core.profile_fit import CurvePoint, Profile, pav

# Stated tolerances (docs/energy-model.md, "Fit and tolerances"): every shipped source row is reproduced
# by its fitted curve within these relative errors; the isotonic fit only moves rows that break
# monotonicity, so most rows are reproduced exactly.
TOL_THROUGHPUT = 0.12
TOL_ITL = 0.16
TOL_P90 = 0.12
TOL_POWER = 0.35
SHARE_WITHIN_5_PERCENT = 0.90
TOL_REFERENCE = 0.02  # Llama-3.1-8B on one H100, bf16: the simulator's reference profile

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def model() -> EnergyModel:
    return default_energy_model()


def spec_of(
    *,
    name: str = LLAMA,
    params: float | None = 8,
    gpu: str = "H100-SXM",
    count: int = 1,
    precisions: tuple[str, ...] = ("bf16", "fp8", "int8", "int4"),
    tpot_ms: float = 50.0,
    profile: dict[str, float] | None = None,
) -> GreenModelSpec:
    variants: list[dict[str, Any]] = [{"name": p, "precision": p, "image": "vllm"} for p in precisions]
    if profile is not None:
        for v in variants:
            v["profile"] = profile
    doc: dict[str, Any] = {
        "model": {"name": name},
        "gpu": {"type": gpu, "count": count},
        "variants": variants,
        "slo": {"tpotP90Ms": tpot_ms},
    }
    if params is not None:
        doc["model"]["paramsBillions"] = params
    return GreenModelSpec.model_validate(doc)


def perf(
    model: EnergyModel, spec: GreenModelSpec, precision: str, setting: PowerSetting
) -> ReplicaPerformance:
    result = model.performance(spec, spec.variant(precision), setting)
    assert result is not None
    return result


def reference_profile(model: EnergyModel) -> Profile:
    (found,) = [p for p in model.profiles if p.gpu == "H100" and p.model == LLAMA and p.precision == "bf16"]
    return found


def row(profile: Profile, batch: int) -> Any:
    (found,) = [r for r in profile.rows if r.batch == batch]
    return found


# ------------------------------------------------------------------------------------ fit to the data


def test_every_source_row_is_reproduced_within_the_stated_tolerance(model: EnergyModel) -> None:
    errors: dict[str, list[float]] = {"throughput": [], "power": [], "itl": [], "p90": []}
    for profile in model.profiles:
        for r in profile.rows:
            fit = profile.at(r.batch)
            errors["throughput"].append(abs(fit.tokens_per_s / r.output_tokens_per_s - 1))
            errors["power"].append(abs(fit.power_w / r.power_per_gpu_w - 1))
            errors["itl"].append(abs(fit.itl_ms / r.itl_ms - 1))
            if r.itl_p90_ms is not None:
                errors["p90"].append(abs(fit.itl_p90_ms / r.itl_p90_ms - 1))
    limits = {"throughput": TOL_THROUGHPUT, "power": TOL_POWER, "itl": TOL_ITL, "p90": TOL_P90}
    for what, errs in errors.items():
        assert max(errs) <= limits[what], what
        within = sum(e <= 0.05 for e in errs) / len(errs)
        assert within >= SHARE_WITHIN_5_PERCENT, what
        assert median(errs) == 0.0, what  # the median row is reproduced exactly
    assert sum(len(p.rows) for p in model.profiles) == len(model.calibration.profiles)


def test_reference_sweep_is_reproduced_within_two_percent(model: EnergyModel) -> None:
    profile = reference_profile(model)
    assert len(profile.rows) == 11
    for r in profile.rows:
        fit = profile.at(r.batch)
        assert fit.tokens_per_s == pytest.approx(r.output_tokens_per_s, rel=TOL_REFERENCE)
        assert fit.power_w == pytest.approx(r.power_per_gpu_w, rel=TOL_REFERENCE)
        assert fit.itl_ms == pytest.approx(r.itl_ms, rel=TOL_REFERENCE)
        assert fit.itl_p90_ms == pytest.approx(r.itl_p90_ms, rel=TOL_REFERENCE)


def test_batch_one_point_is_extrapolated_from_the_two_smallest_batches(model: EnergyModel) -> None:
    profile = reference_profile(model)
    b8, b16 = row(profile, 8), row(profile, 16)
    first = profile.points[0]
    assert first.batch == 1
    itl1 = b8.itl_ms - (b16.itl_ms - b8.itl_ms) * 7 / 8
    assert first.itl_ms == pytest.approx(itl1)
    assert first.tokens_per_s == pytest.approx(1000 / itl1)
    assert first.power_w == pytest.approx(b8.power_w - (b16.power_w - b8.power_w) * 7 / 8)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40))
def test_pav_is_a_monotone_fit_that_keeps_the_mean(values: list[float]) -> None:
    fitted = pav(values)
    assert len(fitted) == len(values)
    assert all(a <= b + 1e-6 * (1 + abs(b)) for a, b in itertools.pairwise(fitted))
    assert sum(fitted) == pytest.approx(sum(values), rel=1e-9, abs=1e-3)
    if all(a <= b for a, b in itertools.pairwise(values)):
        assert fitted == pytest.approx(values)


def test_pav_pools_violators() -> None:
    assert pav([1.0, 3.0, 2.0, 4.0]) == (1.0, 2.5, 2.5, 4.0)


# -------------------------------------------------------------------------------------- monotonicity


@pytest.mark.parametrize("gpu", ["H100-SXM", "A100-SXM4-80GB", "B200"])
@pytest.mark.parametrize("precision", ["bf16", "fp8", "int8", "int4"])
def test_curves_are_monotone_for_every_setting(model: EnergyModel, gpu: str, precision: str) -> None:
    spec = spec_of(gpu=gpu)
    for setting in model.power_settings(spec.gpu, Power(mode=PowerMode.AUTO)):
        result = model.performance(spec, spec.variant(precision), setting)
        if result is None:
            continue
        rates = [r for r, _ in result.decode_curve]
        watts = [w for _, w in result.decode_curve]
        assert rates[0] == 0.0
        assert all(a < b for a, b in itertools.pairwise(rates)), setting
        assert all(a <= b + 1e-9 for a, b in itertools.pairwise(watts)), setting
        assert result.output_tokens_per_s == rates[-1]
        assert result.idle_power_w == pytest.approx(model.gpu(gpu).idle_w)
        assert result.prompt_tokens_per_s > 0 and result.prefill_power_w > 0


def test_fitted_profiles_are_non_decreasing_in_batch(model: EnergyModel) -> None:
    for p in model.profiles:
        for a, b in zip(p.points, p.points[1:], strict=False):
            assert a.batch < b.batch
            assert a.tokens_per_s <= b.tokens_per_s
            assert a.power_w <= b.power_w
            assert a.itl_ms <= b.itl_ms
            assert a.itl_p90_ms <= b.itl_p90_ms


@settings(max_examples=60, deadline=None)
@given(st.floats(5.0, 400.0), st.floats(5.0, 400.0))
def test_a_looser_slo_never_lowers_capacity(tight: float, loose: float) -> None:
    tight, loose = min(tight, loose), max(tight, loose)
    model = default_energy_model()
    a = model.performance(spec_of(tpot_ms=tight), spec_of().variant("bf16"), PowerSetting())
    b = model.performance(spec_of(tpot_ms=loose), spec_of().variant("bf16"), PowerSetting())
    assert b is not None or a is None
    if a is not None and b is not None:
        assert a.output_tokens_per_s <= b.output_tokens_per_s + 1e-9


# -------------------------------------------------------------------------------------- the SLO cut


def test_slo_at_a_measured_p90_cuts_exactly_at_that_row(model: EnergyModel) -> None:
    b256 = row(reference_profile(model), 256)
    result = perf(model, spec_of(tpot_ms=b256.itl_p90_ms), "bf16", PowerSetting())
    assert result.output_tokens_per_s == pytest.approx(b256.output_tokens_per_s, rel=1e-9)
    fitted = reference_profile(model).at(256).power_w  # the isotonic fit pools 192..768 (within 0.4 %)
    assert result.decode_curve[-1][1] == pytest.approx(fitted, rel=1e-9)
    assert fitted == pytest.approx(b256.power_w, rel=TOL_REFERENCE)


def test_slo_between_rows_interpolates_in_batch(model: EnergyModel) -> None:
    profile = reference_profile(model)
    b256, b384 = row(profile, 256), row(profile, 384)
    slo = 40.0
    cut = 256 + (slo - b256.itl_p90_ms) / (b384.itl_p90_ms - b256.itl_p90_ms) * 128
    expected = (
        b256.output_tokens_per_s + (b384.output_tokens_per_s - b256.output_tokens_per_s) * (cut - 256) / 128
    )
    result = perf(model, spec_of(tpot_ms=slo), "bf16", PowerSetting())
    assert result.output_tokens_per_s == pytest.approx(expected, rel=1e-6)


def test_slo_below_one_stream_is_infeasible_and_a_huge_slo_takes_the_largest_batch(
    model: EnergyModel,
) -> None:
    profile = reference_profile(model)
    assert (
        model.performance(
            spec_of(tpot_ms=profile.points[0].itl_p90_ms * 0.9), spec_of().variant("bf16"), PowerSetting()
        )
        is None
    )
    result = perf(model, spec_of(tpot_ms=1e6), "bf16", PowerSetting())
    assert result.output_tokens_per_s == pytest.approx(profile.points[-1].tokens_per_s)


def test_a_slower_clock_shrinks_capacity_at_the_same_slo(model: EnergyModel) -> None:
    spec = spec_of(tpot_ms=40)
    default = perf(model, spec, "bf16", PowerSetting())
    locked = perf(model, spec, "bf16", PowerSetting(locked_clock_mhz=1035))
    assert locked.output_tokens_per_s < default.output_tokens_per_s


# --------------------------------------------------------------------------------------- power knobs


def test_power_caps_only_bind_at_high_load(model: EnergyModel) -> None:
    profile = reference_profile(model)
    cap = 575.0
    assert row(profile, 32).power_per_gpu_w < cap < row(profile, 64).power_per_gpu_w
    spec = spec_of()
    default = perf(model, spec, "bf16", PowerSetting())
    capped = perf(model, spec, "bf16", PowerSetting(limit_w=cap))
    below = row(profile, 32).output_tokens_per_s
    for rate in (0.0, 50.0, 500.0, 2000.0, below):
        assert capped.decode_power_w(rate) == pytest.approx(default.decode_power_w(rate), rel=1e-12)
    assert capped.decode_curve[-1][1] == pytest.approx(cap)
    assert default.decode_curve[-1][1] > cap
    assert capped.output_tokens_per_s < default.output_tokens_per_s
    # a cap above anything decode draws changes nothing in decode
    loose = perf(model, spec, "bf16", PowerSetting(limit_w=700))
    assert loose.decode_curve == default.decode_curve


def test_clock_locking_saves_power_at_low_load(model: EnergyModel) -> None:
    spec = spec_of()
    default = perf(model, spec, "bf16", PowerSetting())
    locked = perf(model, spec, "bf16", PowerSetting(locked_clock_mhz=1035))
    rate = 300.0  # a trickle, far below any cap
    assert locked.decode_power_w(rate) < default.decode_power_w(rate)
    for cap in (450.0, 575.0):
        capped = perf(model, spec, "bf16", PowerSetting(limit_w=cap))
        # caps at or above the one-stream draw leave a trickle untouched
        if cap >= reference_profile(model).points[1].power_w:
            assert capped.decode_power_w(rate) == pytest.approx(default.decode_power_w(rate))


H100_CLOCK = ClockEvidence(ref_mhz=1770, low_mhz=1035, time_change=0.013, energy_change=-0.116)


def test_clock_model_reproduces_its_source_row() -> None:
    response = PowerResponse(
        GpuPowerLimits(200, 700, 700), idle_w=0.0, clock=H100_CLOCK, curve=((0.5, 0.5), (1, 1))
    )
    watts, time_factor = response.decode(500.0, PowerSetting(locked_clock_mhz=1035))
    assert time_factor == pytest.approx(1.013)
    assert watts / 500.0 * time_factor == pytest.approx(1 - 0.116)  # energy per token
    assert H100_CLOCK.phi == pytest.approx(0.013 / (1770 / 1035 - 1))
    assert H100_CLOCK.gamma == pytest.approx((1 - 0.884 / 1.013) / (1 - 1035 / 1770))


def test_a_cap_inside_the_clock_evidence_costs_only_the_clock_slowdown() -> None:
    response = PowerResponse(
        GpuPowerLimits(200, 700, 700), idle_w=145.0, clock=H100_CLOCK, curve=((0.5, 0.5), (1, 1))
    )
    watts, time_factor = response.decode(690.0, PowerSetting(limit_w=650))
    x = 1 - (1 - (650 - 145) / (690 - 145)) / H100_CLOCK.gamma
    assert x > H100_CLOCK.low_ratio
    assert watts == 650
    assert time_factor == pytest.approx(1 + H100_CLOCK.phi * (1 / x - 1))
    # beyond the evidence the compute-bound response takes over, from the lowest evidenced clock
    watts, time_factor = response.decode(690.0, PowerSetting(limit_w=400))
    at_low = 145 + 545 * (1 - H100_CLOCK.gamma * (1 - H100_CLOCK.low_ratio))
    slow = 1 + H100_CLOCK.phi * (1 / H100_CLOCK.low_ratio - 1)
    assert watts == 400
    assert time_factor == pytest.approx(slow / response_at(response.curve, 400 / at_low))
    # the limit is clamped to the device range
    assert response.decode(690.0, PowerSetting(limit_w=10))[0] == 200


def test_prefill_under_a_cap_follows_the_compute_bound_response(model: EnergyModel) -> None:
    spec = spec_of()
    default = perf(model, spec, "bf16", PowerSetting())
    capped = perf(model, spec, "bf16", PowerSetting(limit_w=450))
    q = 450 / 700
    assert capped.prefill_power_w == pytest.approx(450)
    assert capped.prompt_tokens_per_s == pytest.approx(
        default.prompt_tokens_per_s * response_at(model.compute_bound_curve, q)
    )


def test_compute_bound_response_fits_the_zeus_sweeps(model: EnergyModel) -> None:
    curve = model.compute_bound_curve
    assert curve[-1] == (1.0, 1.0)
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in itertools.pairwise(curve))
    series: dict[str, list[Any]] = {}
    for p in model.calibration.cap_sweeps:
        series.setdefault(p.series, []).append(p)
    deviations = []
    for pts in series.values():
        ref = max(pts, key=lambda p: p.limit_w)
        if ref.power_w < 0.7 * ref.limit_w:
            continue
        deviations += [abs(response_at(curve, p.power_w / ref.power_w) - ref.time_s / p.time_s) for p in pts]
    deviations.sort()
    assert len(deviations) > 400
    assert median(deviations) <= 0.02
    assert deviations[int(0.9 * len(deviations))] <= 0.16


@given(st.floats(0.01, 1.0))
def test_power_for_response_inverts_response_at(r: float) -> None:
    curve = default_energy_model().compute_bound_curve
    q = power_for_response(curve, r)
    assert response_at(curve, q) == pytest.approx(r, abs=1e-9)


def test_power_settings_per_mode(model: EnergyModel) -> None:
    gpu = GpuSpec(type="H100-SXM")
    assert model.power_settings(gpu, Power(mode=PowerMode.OFF)) == (PowerSetting(),)
    assert model.power_settings(gpu, Power(mode=PowerMode.FIXED, limit_w=900)) == (PowerSetting(limit_w=700),)
    assert model.power_settings(gpu, Power(mode=PowerMode.FIXED, limit_w=50)) == (PowerSetting(limit_w=200),)
    auto = model.power_settings(gpu, Power(mode=PowerMode.AUTO))
    assert auto[0] == PowerSetting()
    assert 1 < len(auto) <= 8 and len(set(auto)) == len(auto)
    caps = [s.limit_w for s in auto if s.limit_w is not None]
    clocks = [s.locked_clock_mhz for s in auto if s.locked_clock_mhz is not None]
    assert min(caps) == 200 and max(caps) < 700
    assert min(clocks) == 1035 and max(clocks) < 1770
    assert model.power_settings(GpuSpec(type="B200"), Power(mode=PowerMode.AUTO)) == (PowerSetting(),)


def test_locked_clocks_need_clock_evidence(model: EnergyModel) -> None:
    spec = spec_of(gpu="B200", precisions=("bf16",))
    with pytest.raises(ValueError, match="locked-clock"):
        model.performance(spec, spec.variant("bf16"), PowerSetting(locked_clock_mhz=1200))


# ------------------------------------------------------------------------------------ derivations


def test_int4_takes_the_published_speedup_off_the_weight_reading_part(model: EnergyModel) -> None:
    profile = reference_profile(model)
    b8, b16 = row(profile, 8), row(profile, 16)
    weight_ms = b8.itl_ms - (b16.itl_ms - b8.itl_ms) / 8 * 8  # ITL extrapolated to batch 0
    assert weight_read_ms(profile) == pytest.approx(weight_ms)
    saved = weight_ms * (1 - 1 / 2.7)  # H100 int4 speed-up (quantization_speedups.csv)
    derived = derive_int4(profile, 2.7)
    at8 = derived.at(8)
    assert at8.itl_ms == pytest.approx(b8.itl_ms - saved)
    assert at8.tokens_per_s == pytest.approx(b8.output_tokens_per_s * b8.itl_ms / (b8.itl_ms - saved))
    assert at8.power_w == pytest.approx(b8.power_per_gpu_w)
    one = profile.points[0].itl_ms / derived.points[0].itl_ms
    assert 2.0 < one < 2.7  # the whole step speeds up a little less than its weight-reading part
    assert "int4 (W4A16)" in model.explain(spec_of(), spec_of().variant("int4"))
    assert "speed-up 2.7" in model.explain(spec_of(), spec_of().variant("int4"))


def test_int4_speedup_is_the_nearest_published_one(model: EnergyModel) -> None:
    a100 = spec_of(gpu="A100-SXM4-80GB")
    assert "speed-up 2.25 (published for A100: A100, 8B)" in model.explain(a100, a100.variant("int4"))
    b200 = spec_of(gpu="B200")
    assert "borrowed from another GPU" in model.explain(b200, b200.variant("int4"))


def test_eight_bit_ratios_follow_the_blog_buckets(model: EnergyModel) -> None:
    ratios = model.calibration.fp8_ratios
    assert fp8_ratio_at(ratios, 8) == pytest.approx((1.30, 1.07))
    assert fp8_ratio_at(ratios, math.sqrt(17 * 64)) == pytest.approx((1.01, 0.88))
    assert fp8_ratio_at(ratios, 2000) == pytest.approx((0.89, 0.89))
    mid = math.sqrt(math.sqrt(8 * 16) * math.sqrt(17 * 64))  # half-way in log(batch) between two centres
    assert fp8_ratio_at(ratios, mid) == pytest.approx(((1.30 + 1.01) / 2, (1.07 + 0.88) / 2))
    flat = Profile("H100", "m", 8, "bf16", 1, "chat", "test", (CurvePoint(8, 1000, 400, 8, 9),), ())
    (p,) = derive_eight_bit(flat, ratios).points
    assert p.tokens_per_s == pytest.approx(1000 / 1.07)
    assert p.power_w == pytest.approx(400 * 1.30 / 1.07)
    assert p.itl_p90_ms == pytest.approx(9 * 1.07)


def test_int8_uses_the_eight_bit_decode_and_int8_peak_for_prefill(model: EnergyModel) -> None:
    spec = spec_of(gpu="A100-SXM4-80GB")
    fp8 = perf(model, spec, "fp8", PowerSetting())
    int8 = perf(model, spec, "int8", PowerSetting())
    assert int8.decode_curve == fp8.decode_curve
    assert fp8.prompt_tokens_per_s == pytest.approx(0.5 * 312e12 / 16e9)  # no FP8 tensor cores on A100
    assert int8.prompt_tokens_per_s == pytest.approx(0.5 * 624e12 / 16e9)
    assert "DERIVED for int8" in model.explain(spec, spec.variant("int8"))


def test_a_measured_fp8_sweep_is_used_only_for_a_model_of_comparable_size(model: EnergyModel) -> None:
    big = spec_of(name="meta-llama/Llama-3.1-405B-Instruct", params=405, count=8, precisions=("fp8", "bf16"))
    assert "MEASURED (fp8)" in model.explain(big, big.variant("fp8"))
    assert "Llama-3.1-405B-Instruct-FP8" in model.explain(big, big.variant("fp8"))
    small = spec_of()
    assert "DERIVED for fp8" in model.explain(small, small.variant("fp8"))


def test_prefill_is_derived_from_flops_peak_and_utilisation(model: EnergyModel) -> None:
    spec = spec_of()
    bf16 = perf(model, spec, "bf16", PowerSetting())
    fp8 = perf(model, spec, "fp8", PowerSetting())
    int4 = perf(model, spec, "int4", PowerSetting())
    assert bf16.prompt_tokens_per_s == pytest.approx(0.5 * 989.4e12 / (2 * 8e9))  # 30,918.75 tokens/s
    assert fp8.prompt_tokens_per_s == pytest.approx(0.5 * 1978.9e12 / (2 * 8e9))
    assert int4.prompt_tokens_per_s == bf16.prompt_tokens_per_s  # W4A16 computes in 16 bit
    assert bf16.prefill_power_w == 700
    assert bf16.prefill_power_w / bf16.prompt_tokens_per_s == pytest.approx(0.02264, rel=1e-3)  # J/token
    two = perf(model, spec_of(count=2), "bf16", PowerSetting())
    assert two.prompt_tokens_per_s == pytest.approx(2 * bf16.prompt_tokens_per_s)
    assert two.prefill_power_w == 1400
    assert "prefill DERIVED" in model.explain(spec, spec.variant("bf16"))


# ----------------------------------------------------------------------------------- size and count


def test_scaling_moves_a_curve_by_weight_bytes_per_gpu(model: EnergyModel) -> None:
    profile = reference_profile(model)
    scaled = scale_profile(profile, params_b=16, num_gpus=2)  # same bytes per GPU: unchanged step time
    assert scaled.points[3].itl_ms == pytest.approx(profile.points[3].itl_ms)
    bigger = scale_profile(profile, params_b=16, num_gpus=1)
    assert bigger.points[3].itl_ms == pytest.approx(2 * profile.points[3].itl_ms)
    assert bigger.points[3].tokens_per_s == pytest.approx(profile.points[3].tokens_per_s / 2)
    assert bigger.points[3].power_w == profile.points[3].power_w
    two = spec_of(name="meta-llama/Llama-3.1-70B-Instruct", params=70, count=2, precisions=("bf16",))
    assert "scaled x2 to 70B on 2 GPU(s)" in model.explain(two, two.variant("bf16"))


def test_replica_power_counts_every_gpu(model: EnergyModel) -> None:
    four = spec_of(name="meta-llama/Llama-3.1-70B-Instruct", params=70, count=4, precisions=("bf16",))
    result = perf(model, four, "bf16", PowerSetting())
    assert result.idle_power_w == pytest.approx(4 * 145)
    assert "70B, bf16) on 4x H100" in model.explain(four, four.variant("bf16"))


def test_model_size_from_the_spec_a_known_name_or_the_name(model: EnergyModel) -> None:
    assert model.model_params(spec_of(params=None)) == 8
    assert model.model_params(spec_of(name="microsoft/Phi-3-mini-4k-instruct", params=None)) == 4
    assert model.model_params(spec_of(name="acme/coder-13b", params=None)) == 13
    with pytest.raises(ValueError, match="paramsBillions"):
        model.model_params(spec_of(name="acme/coder", params=None))


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8.0),
        ("Qwen/Qwen3-235B-A22B-Instruct-2507", 235.0),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56.0),
        ("google/gemma-3-27b-it", 27.0),
        ("Qwen/Qwen2.5-0.5B", 0.5),
        ("my-model", None),
    ],
)
def test_params_from_name(name: str, size: float | None) -> None:
    assert params_from_name(name) == size


# --------------------------------------------------------------------------- overrides, errors, cache


def test_a_variant_profile_overrides_the_calibration(model: EnergyModel) -> None:
    profile = {"outputTokensPerSecond": 5000.0, "idlePowerW": 100.0, "loadedPowerW": 600.0}
    spec = spec_of(count=2, precisions=("int4",), profile=profile)
    result = perf(model, spec, "int4", PowerSetting())
    assert result.decode_curve == ((0.0, 200.0), (5000.0, 1200.0))
    assert result.output_tokens_per_s == 5000.0
    assert result.prompt_tokens_per_s == pytest.approx(2 * 0.5 * 989.4e12 / 16e9)  # not given: derived
    given_prompt = spec_of(precisions=("bf16",), profile={**profile, "promptTokensPerSecond": 12345.0})
    assert perf(model, given_prompt, "bf16", PowerSetting()).prompt_tokens_per_s == 12345.0
    assert "variant's profile" in model.explain(spec, spec.variant("int4"))
    capped = perf(model, spec, "int4", PowerSetting(limit_w=450))
    assert capped.decode_curve[-1][1] == pytest.approx(2 * 450)
    assert capped.output_tokens_per_s < 5000.0
    locked = perf(model, spec, "int4", PowerSetting(locked_clock_mhz=1035))
    x = 1035 / 1770
    assert locked.idle_power_w == 200.0  # the profile's idle, not the calibrated one
    assert locked.decode_curve[-1][1] == pytest.approx(2 * (100 + 500 * (1 - H100_CLOCK.gamma * (1 - x))))
    assert locked.output_tokens_per_s == pytest.approx(5000 / (1 + H100_CLOCK.phi * (1 / x - 1)))


def test_unknown_gpu_is_a_clear_error(model: EnergyModel) -> None:
    with pytest.raises(ValueError, match=r"unknown GPU type 'L40S'.*H100-SXM"):
        model.gpu_limits("L40S")
    with pytest.raises(ValueError, match="unknown GPU type"):
        model.power_settings(GpuSpec(type="L40S"), Power())
    spec = spec_of(gpu="L40S", precisions=("bf16",))
    with pytest.raises(ValueError, match="unknown GPU type"):
        model.performance(spec, spec.variant("bf16"), PowerSetting())


@pytest.mark.parametrize("alias", ["H100-SXM", "h100", "H100_SXM5", "NVIDIA H100 80GB HBM3"])
def test_gpu_aliases(model: EnergyModel, alias: str) -> None:
    assert model.gpu_limits(alias) == GpuPowerLimits(min_w=200, max_w=700, default_w=700)


def test_results_are_cached_per_key(model: EnergyModel) -> None:
    spec = spec_of()
    variant: Variant = spec.variant("fp8")
    first = model.performance(spec, variant, PowerSetting(limit_w=450))
    assert model.performance(spec_of(), spec_of().variant("fp8"), PowerSetting(limit_w=450)) is first
    assert model.performance(spec, variant, PowerSetting(limit_w=575)) is not first


def test_identity_fast_path_never_serves_a_changed_spec(model: EnergyModel) -> None:
    """The identity-keyed fast path gives the same object as the full key, and a spec or variant that
    changed (new objects) never gets the old answer."""
    spec = spec_of()
    variant = spec.variant("bf16")
    cap = PowerSetting(limit_w=450)
    first = model.performance(spec, variant, cap)
    assert model.performance(spec, variant, cap) is first  # fast path
    assert model.performance(spec.model_copy(), variant, cap) is first  # new spec object, same content
    tighter = spec_of(tpot_ms=20.0)
    other = model.performance(tighter, tighter.variant("bf16"), cap)
    assert other is not None
    assert other.output_tokens_per_s < first.output_tokens_per_s
    # A variant that is not the spec's own object is looked up by what it is, not where it sits.
    loose = Variant.model_validate({"name": "bf16", "precision": "int4", "image": "vllm"})
    assert model.performance(spec, loose, cap) == model.performance(spec, spec.variant("int4"), cap)


def test_power_settings_are_cached_per_gpu_and_mode(model: EnergyModel) -> None:
    auto = model.power_settings(GpuSpec(type="H100-SXM"), Power())
    assert model.power_settings(GpuSpec(type="H100-SXM"), Power()) is auto
    fixed = model.power_settings(GpuSpec(type="H100-SXM"), Power(mode=PowerMode.FIXED, limit_w=300))
    assert fixed == (PowerSetting(limit_w=300),)
    assert model.power_settings(GpuSpec(type="B200"), Power()) != auto


def test_a_binding_cap_is_the_prefill_power_exactly(model: EnergyModel) -> None:
    """450 / 700 x 700 is 450.00000000000006 in floating point; a cap that binds is the power itself."""
    spec = spec_of()
    for watts in (200.0, 325.0, 450.0, 575.0):
        p = perf(model, spec, "int8", PowerSetting(limit_w=watts))
        assert p.prefill_power_w == watts
