"""The energy model for pruned and distilled variants (issue 14): a variant's own model priced for its size,
2:4 sparsity derived from the published claims it reproduces, and the inputs it refuses."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from greenllm import calibration as cal
from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.calibration import default_energy_model
from greenllm.core.derived_profiles import derive_sparse, sparse_speedup_at
from greenllm.core.energy import EnergyModel
from greenllm.core.performance import PowerSetting, ReplicaPerformance

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
MINITRON = {"name": "nvidia/Llama-3.1-Minitron-4B-Width-Base", "paramsBillions": 4.5}
STATED = {"quality": 0.93, "qualitySource": "Open LLM v1 tasks vs Llama-3.1-8B"}


@pytest.fixture(scope="module")
def model() -> EnergyModel:
    return default_energy_model()


def spec_with(*extra: dict[str, Any], gpu: str = "H100-SXM", params: float = 8) -> GreenModelSpec:
    variants = [{"name": p, "precision": p, "image": "vllm"} for p in ("bf16", "fp8", "int8")]
    variants += [{"image": "vllm", **STATED, **e} for e in extra]
    return GreenModelSpec.model_validate(
        {"model": {"name": LLAMA, "paramsBillions": params}, "gpu": {"type": gpu}, "variants": variants}
    )


def perf(model: EnergyModel, spec: GreenModelSpec, name: str) -> ReplicaPerformance:
    result = model.performance(spec, spec.variant(name), PowerSetting())
    assert result is not None
    return result


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(cal.read_data(name))))


# ------------------------------------------------------------------------------ 2:4 sparsity, DERIVED


def test_the_claims_are_read_as_the_source_words_them() -> None:
    claims = cal.parse_sparsity_claims(cal.read_data(cal.SPARSITY_CLAIMS))
    rows = _rows(cal.SPARSITY_CLAIMS)
    assert len(claims) == len(rows) == 4
    for c, r in zip(claims, rows, strict=True):
        value = float(r["value"])
        assert c.gpu == "H100" and c.baseline == "bf16" and c.source == r["source"]
        if "latency reduction" in r["claim"]:  # 30 % less time = 1/0.7 x faster
            assert (c.metric, c.speedup) == ("latency", pytest.approx(1 / (1 - value)))
        else:
            assert c.speedup == value
            assert c.metric == ("latency" if "latency" in r["claim"] else "throughput")
        assert c.precision == ("fp8" if "FP8" in r["subject"] else "bf16")


@pytest.mark.parametrize(
    ("precision", "latency_reduction", "throughput_gain"),
    [("bf16", 0.30, 1.20), ("fp8", 1 - 1 / 1.7, 1.5)],  # the source rows, as published
)
def test_a_sparse_curve_reproduces_its_source_rows(
    model: EnergyModel, precision: str, latency_reduction: float, throughput_gain: float
) -> None:
    sparse = spec_with({"name": "sparse", "precision": precision, "sparsity": "2:4"})
    dense, derived = perf(model, sparse, "bf16"), perf(model, sparse, "sparse")
    # Latency of one request at a time = the one-stream decode step (the curve's first point after idle).
    (dense_rate, dense_w), (rate, watts) = dense.decode_curve[1], derived.decode_curve[1]
    assert 1000 / rate == pytest.approx((1 - latency_reduction) * 1000 / dense_rate)
    assert watts == pytest.approx(dense_w)  # no sparse energy was measured: power per GPU as dense
    # Throughput of a saturated server = the largest measured batch, before any SLO cut.
    top_dense, top = dense.batch_curve[-1], derived.batch_curve[-1]
    assert top[0] == top_dense[0]
    assert top_dense[1] / top[1] == pytest.approx(throughput_gain)
    assert top[2] == pytest.approx(top_dense[2])


def test_sparse_prefill_is_the_dense_prefill_of_its_precision(model: EnergyModel) -> None:
    spec = spec_with(
        {"name": "sparse-fp8", "precision": "fp8", "sparsity": "2:4"},
        {"name": "sparse-int8", "precision": "int8", "sparsity": "2:4"},
    )
    assert perf(model, spec, "sparse-fp8").prompt_tokens_per_s == perf(model, spec, "fp8").prompt_tokens_per_s
    assert (
        perf(model, spec, "sparse-int8").prompt_tokens_per_s == perf(model, spec, "int8").prompt_tokens_per_s
    )
    # int8 W8A8 takes the fp8 claims (the 8-bit rule), and says so in its provenance.
    assert perf(model, spec, "sparse-int8").decode_curve == perf(model, spec, "sparse-fp8").decode_curve
    why = model.explain(spec, spec.variant("sparse-fp8"))
    assert "DERIVED for 2:4 sparse fp8" in why and "no sparse energy measured" in why


def test_the_speedup_moves_from_the_latency_claim_to_the_throughput_claim_in_log_batch(
    model: EnergyModel,
) -> None:
    (dense,) = [p for p in model.profiles if p.gpu == "H100" and p.model == LLAMA]
    first, last = dense.points[0].batch, dense.points[-1].batch
    assert sparse_speedup_at(dense, first, 1.7, 1.5) == 1.7
    assert sparse_speedup_at(dense, last, 1.7, 1.5) == 1.5
    assert sparse_speedup_at(dense, (first * last) ** 0.5, 1.7, 1.5) == pytest.approx(1.6)
    derived = derive_sparse(dense, 1.7, 1.5)
    assert all(a.itl_ms <= b.itl_ms for a, b in zip(derived.points, derived.points[1:], strict=False))
    with pytest.raises(ValueError, match="positive"):
        derive_sparse(dense, 0.0, 1.5)


def test_a_sparse_variant_uses_less_energy_per_token_than_its_dense_twin(model: EnergyModel) -> None:
    spec = spec_with({"name": "sparse-fp8", "precision": "fp8", "sparsity": "2:4"})
    dense, sparse = perf(model, spec, "fp8"), perf(model, spec, "sparse-fp8")
    for rate in (500.0, 5000.0, 9000.0):
        assert sparse.decode_power_w(rate) < dense.decode_power_w(rate)
    assert sparse.output_tokens_per_s > dense.output_tokens_per_s


# ------------------------------------------------------------------------- a variant's own model


def test_a_distilled_variant_is_priced_for_its_own_size(model: EnergyModel) -> None:
    spec = spec_with({"name": "minitron", "precision": "bf16", "model": MINITRON})
    teacher, student = perf(model, spec, "bf16"), perf(model, spec, "minitron")
    k = 4.5 / 8  # the nearest calibrated sweep is the 8B teacher's own: step time x weight bytes
    assert 1000 / student.decode_curve[1][0] == pytest.approx(k * 1000 / teacher.decode_curve[1][0])
    assert student.decode_curve[1][1] == pytest.approx(teacher.decode_curve[1][1])
    assert student.prompt_tokens_per_s == pytest.approx(teacher.prompt_tokens_per_s * 8 / 4.5)
    why = model.explain(spec, spec.variant("minitron"))
    assert "Llama-3.1-8B-Instruct (8B, bf16) on 1x H100" in why and "scaled x0.562 to 4.5B" in why
    assert model.variant_params(spec, spec.variant("minitron")) == 4.5
    assert model.variant_params(spec, spec.variant("bf16")) == 8


def test_a_variant_model_that_is_calibrated_uses_its_own_sweep(model: EnergyModel) -> None:
    spec = spec_with({"name": "qwen", "precision": "bf16", "model": {"name": "Qwen/Qwen3-8B"}})
    assert model.variant_params(spec, spec.variant("qwen")) == 8  # known from the calibration
    why = model.explain(spec, spec.variant("qwen"))
    assert "Qwen/Qwen3-8B (8B, bf16)" in why and "task lm-arena-chat" in why
    assert perf(model, spec, "qwen").decode_curve != perf(model, spec, "bf16").decode_curve


def test_a_variant_model_without_a_size_is_named_in_the_error(model: EnergyModel) -> None:
    spec = spec_with({"name": "x", "precision": "bf16", "model": {"name": "acme/student"}})
    with pytest.raises(ValueError, match=r"acme/student.*paramsBillions in variant 'x'"):
        model.performance(spec, spec.variant("x"), PowerSetting())


def test_cache_keys_tell_variants_of_one_precision_apart(model: EnergyModel) -> None:
    spec = spec_with(
        {"name": "minitron", "precision": "bf16", "model": MINITRON},
        {"name": "sparse", "precision": "bf16", "sparsity": "2:4"},
    )
    curves = {v.name: perf(model, spec, v.name).decode_curve for v in spec.variants if v.precision == "bf16"}
    assert len(set(curves.values())) == 3


# ------------------------------------------------------------------------------- refused inputs


@pytest.mark.parametrize("gpu", ["A100-SXM4-80GB", "B200"])
def test_sparsity_on_a_gpu_without_evidence_is_refused(model: EnergyModel, gpu: str) -> None:
    spec = spec_with({"name": "sparse", "precision": "fp8", "sparsity": "2:4"}, gpu=gpu)
    with pytest.raises(
        ValueError,
        match=rf"'sparse': 2:4 sparsity has no published speed evidence on {gpu}"
        r" \(sparsity_speed_claims.csv covers H100 only\); give the variant a measured",
    ):
        model.performance(spec, spec.variant("sparse"), PowerSetting())


def test_sparsity_with_int4_is_refused(model: EnergyModel) -> None:
    spec = spec_with({"name": "sparse", "precision": "int4", "sparsity": "2:4"})
    with pytest.raises(ValueError, match="2:4 sparsity with int4 has no published speed evidence"):
        model.performance(spec, spec.variant("sparse"), PowerSetting())


def test_a_measured_profile_overrides_the_sparsity_evidence(model: EnergyModel) -> None:
    profile = {"outputTokensPerSecond": 4000.0, "idlePowerW": 80.0, "loadedPowerW": 350.0}
    for gpu in ("A100-SXM4-80GB", "H100-SXM"):
        for precision in ("fp8", "int4"):
            spec = spec_with(
                {"name": "sparse", "precision": precision, "sparsity": "2:4", "profile": profile}, gpu=gpu
            )
            result = perf(model, spec, "sparse")
            assert result.decode_curve == ((0.0, 80.0), (4000.0, 350.0))
            assert "variant's profile" in model.explain(spec, spec.variant("sparse"))


@pytest.mark.parametrize(
    ("gpu", "params", "range_text"),
    [
        ("H100-SXM", 1.5, "4-810B: within 2x of the 8-405B models"),
        ("H100-SXM", 900, "4-810B"),
        ("A100-SXM4-80GB", 0.9, "1-246B: within 2x of the 2-123B models"),
    ],
)
def test_a_size_outside_the_calibrated_range_is_refused(
    model: EnergyModel, gpu: str, params: float, range_text: str
) -> None:
    own = spec_with(
        {"name": "small", "precision": "bf16", "model": {"name": "acme/s", "paramsBillions": params}}, gpu=gpu
    )
    with pytest.raises(
        ValueError,
        match=rf"variant 'small': model acme/s has paramsBillions {params:g}, "
        rf"outside the range calibrated for {gpu} \({range_text}",
    ):
        model.performance(own, own.variant("small"), PowerSetting())
    whole = spec_with(gpu=gpu, params=params)  # the GreenModel's own model: every variant is refused
    with pytest.raises(ValueError, match="outside the range calibrated"):
        model.performance(whole, whole.variant("bf16"), PowerSetting())
    # A measured profile needs no calibrated sweep.
    measured = Variant.model_validate(
        {
            "name": "small",
            "precision": "bf16",
            "image": "i",
            "model": {"name": "acme/s", "paramsBillions": params},
            "profile": {"outputTokensPerSecond": 100.0, "idlePowerW": 50.0, "loadedPowerW": 100.0},
            **STATED,
        }
    )
    assert model.performance(own, measured, PowerSetting()) is not None


def test_the_range_edges_are_accepted(model: EnergyModel) -> None:
    for params in (4.0, 810.0):
        spec = spec_with(
            {"name": "edge", "precision": "bf16", "model": {"name": "acme/e", "paramsBillions": params}}
        )
        model.performance(spec, spec.variant("edge"), PowerSetting())  # no error
