"""The GreenModel pydantic models: defaults, wire names and the cross-field rules."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from pydantic import ValidationError

from greenllm.api import v1alpha1 as api
from greenllm.api.durations import parse_duration


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "m"},
        "variants": [
            {"name": "bf16", "precision": "bf16", "image": "img:1", "quality": 1.0},
            {"name": "int4", "precision": "int4", "image": "img:1", "quality": 0.95},
        ],
    }
    base.update(overrides)
    return base


def test_defaults_fill_every_section() -> None:
    s = api.GreenModelSpec.model_validate(spec())
    assert s.gpu.type == "H100-SXM" and s.gpu.count == 1 and s.gpu.resource_name == "nvidia.com/gpu"
    assert (s.replicas.min, s.replicas.max) == (1, 4)
    assert s.budget.on_exhausted is api.OnExhausted.DEGRADE
    assert s.budget.period_seconds == 86400
    assert s.power.mode is api.PowerMode.AUTO
    assert parse_duration(s.scaling.interval) == 15
    assert s.metrics.power_source is api.PowerSource.DCGM


def test_wire_names_are_camel_case() -> None:
    s = api.GreenModelSpec.model_validate(spec(slo={"tpotP90Ms": 40, "minQuality": 0.9}))
    dumped = s.model_dump(by_alias=True)
    assert dumped["slo"] == {
        "tpotP90Ms": 40,
        "ttftP90Ms": 2000.0,
        "minQuality": 0.9,
        "attainment": 0.99,
        "attainmentWindow": "1h",
    }
    assert "onExhausted" in dumped["budget"] and "powerW" in dumped["budget"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"replicas": {"min": 5, "max": 2}}, "replicas.min (5) must be <= replicas.max (2)"),
        ({"slo": {"minQuality": 1.5}}, "no variant meets slo.minQuality 1.5"),
        ({"power": {"mode": "Fixed"}}, "power.limitW is required"),
        ({"budget": {"period": "one day"}}, "invalid duration 'one day': use e.g. 15s"),
        ({"budget": {"energyKwh": -1}}, "greater than 0"),
        ({"variants": []}, "at least 1 item"),
        ({"unknownField": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_are_refused_with_a_reason(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        api.GreenModelSpec.model_validate(spec(**overrides))
    assert needle in str(err.value)


def test_duplicate_variant_names_are_named() -> None:
    doubled = spec()["variants"] + [{"name": "bf16", "precision": "fp8", "image": "x"}]
    with pytest.raises(ValidationError, match="bf16 repeated"):
        api.GreenModelSpec.model_validate(spec(variants=doubled))


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("5m", 300), ("1h30m", 5400), ("7d", 604800), ("250ms", 0.25)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "s", "1y", "-5m", "5 m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_durations_carry_their_seconds_parsed_once_defaults_included() -> None:
    parsed = api.GreenModelSpec.model_validate(spec(scaling={"interval": "1m30s"}))
    assert parsed.scaling.interval == "1m30s" and parsed.scaling.interval.seconds == 90.0
    assert parsed.scaling.switch_hold.seconds == 300.0  # a default, validated like a given value
    assert parsed.slo.attainment_window.seconds == 3600.0 and parsed.budget.period_seconds == 86400.0
    wire = parsed.model_dump(by_alias=True, mode="json")["scaling"]
    assert wire["interval"] == "1m30s" and type(wire["interval"]) is str
    copied = pickle.loads(pickle.dumps(parsed))  # the simulator's worker processes get specs this way
    assert copied == parsed and copied.scaling.interval.seconds == 90.0


def test_status_tolerates_unknown_fields_and_round_trips() -> None:
    raw = {
        "variant": "bf16",
        "replicas": 2,
        "powerLimitW": 450.0,
        "lastDecision": {"time": "2026-01-01T00:00:00Z", "variant": "bf16", "replicas": 2, "reason": "r"},
        "futureField": True,
    }
    status = api.GreenModelStatus.model_validate(raw)
    assert status.power_limit_w == 450.0
    assert status.last_decision is not None and status.last_decision.replicas == 2
    assert "futureField" not in status.model_dump(by_alias=True)


# ------------------------------------------------------------------ pruned and distilled variants (issue 14)

MINITRON = {"name": "nvidia/Llama-3.1-Minitron-4B-Width-Base", "paramsBillions": 4.5}


def test_a_variant_defaults_to_the_greenmodels_model_and_no_sparsity() -> None:
    v = api.GreenModelSpec.model_validate(spec()).variants[0]
    assert v.model is None and v.sparsity is api.Sparsity.NONE and v.quality_source is None
    assert not v.compressed_structure


def test_a_distilled_and_a_sparse_variant_with_stated_quality_are_accepted() -> None:
    s = api.GreenModelSpec.model_validate(
        spec(
            variants=[
                {"name": "bf16", "precision": "bf16", "image": "i"},
                {
                    "name": "minitron",
                    "precision": "bf16",
                    "image": "j",
                    "model": MINITRON,
                    "quality": 0.93,
                    "qualitySource": "Open LLM v1 tasks vs Llama-3.1-8B",
                },
                {
                    "name": "sparse-fp8",
                    "precision": "fp8",
                    "sparsity": "2:4",
                    "image": "i",
                    "quality": 0.975,
                    "qualitySource": "Open LLM v1 average",
                },
            ]
        )
    )
    minitron, sparse = s.variant("minitron"), s.variant("sparse-fp8")
    assert minitron.model is not None and minitron.model.params_billions == 4.5
    assert sparse.sparsity is api.Sparsity.TWO_FOUR and sparse.precision is api.Precision.FP8
    assert minitron.compressed_structure and sparse.compressed_structure
    dumped = s.model_dump(by_alias=True, exclude_none=True)["variants"]
    assert dumped[1]["model"] == MINITRON and dumped[2]["sparsity"] == "2:4"
    assert dumped[1]["qualitySource"] == "Open LLM v1 tasks vs Llama-3.1-8B"
    assert api.GreenModelSpec.model_validate(s.model_dump(by_alias=True)) == s


@pytest.mark.parametrize(
    "variant",
    [
        {"model": MINITRON},  # no quality: the 1.0 default would claim the student equals the teacher
        {"model": MINITRON, "quality": 0.93},  # no qualitySource
        {"model": MINITRON, "qualitySource": "MMLU 5-shot"},  # a source without a quality
        {"sparsity": "2:4"},
        {"sparsity": "2:4", "quality": 0.98},
    ],
)
def test_a_pruned_or_distilled_variant_must_state_its_quality_and_source(variant: dict[str, Any]) -> None:
    doc = spec(variants=[{"name": "small", "precision": "bf16", "image": "i", **variant}])
    with pytest.raises(ValidationError, match=r"variant 'small' has .*give its quality and qualitySource"):
        api.GreenModelSpec.model_validate(doc)


@pytest.mark.parametrize("sparsity", ["2:8", "4:8", "unstructured", ""])
def test_only_the_known_sparsity_patterns_are_accepted(sparsity: str) -> None:
    doc = spec(
        variants=[
            {
                "name": "s",
                "precision": "bf16",
                "image": "i",
                "sparsity": sparsity,
                "quality": 0.9,
                "qualitySource": "x",
            }
        ]
    )
    with pytest.raises(ValidationError, match="sparsity"):
        api.GreenModelSpec.model_validate(doc)
