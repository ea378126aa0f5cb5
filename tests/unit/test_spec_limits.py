"""Issue 11: bounds on the scaling interval, the budget period and the Fixed power limit, the same in the
model and in the CRD (CEL), and the Fixed limit clamped to the GPU's range in what the operator writes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.test_crd import api_server_errors, good

from greenllm.api import v1alpha1 as api
from greenllm.calibration import default_energy_model
from greenllm.core.status import decided
from greenllm.core.step import initial_decision

INTERVALS = {
    "0s": False,
    "1ms": False,
    "999ms": False,
    "0.5s": False,
    "1s": True,
    "1000ms": True,
    "15s": True,
    "1m30s": True,
    "1h": True,
    "3601s": False,
    "2h": False,
    "1d": False,
    "3650d": False,
    "0d15s": False,  # days are not a Go duration: CEL's duration() cannot read them
}
PERIODS = {
    "0s": False,
    "59s": False,
    "1m": True,
    "24h": True,
    "36h": True,
    "1d": True,
    "7d": True,
    "366d": True,
    "8784h": True,
    "367d": False,
    "8785h": False,
    "0d": False,
    "1.5d": False,
    "1d12h": False,
}


def spec_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": {"name": "m"},
        "variants": [{"name": "bf16", "precision": "bf16", "image": "i"}],
    }
    doc.update(overrides)
    return doc


def model_accepts(doc: dict[str, Any]) -> bool:
    try:
        api.GreenModelSpec.model_validate(doc)
    except ValidationError:
        return False
    return True


def crd_accepts(spec: dict[str, Any]) -> bool:
    obj = good()
    obj["spec"] = spec
    return not api_server_errors(obj)


@pytest.mark.parametrize(("interval", "ok"), INTERVALS.items())
def test_scaling_interval_is_between_1s_and_1h_in_the_model_and_the_crd(interval: str, ok: bool) -> None:
    doc = spec_doc(scaling={"interval": interval})
    assert model_accepts(doc) is ok
    assert crd_accepts(doc) is ok


@pytest.mark.parametrize(("period", "ok"), PERIODS.items())
def test_budget_period_is_between_1m_and_366d_in_the_model_and_the_crd(period: str, ok: bool) -> None:
    doc = spec_doc(budget={"period": period, "energyKwh": 10})
    assert model_accepts(doc) is ok
    assert crd_accepts(doc) is ok


@pytest.mark.parametrize(("limit", "ok"), [(1e308, False), (5001, False), (5000, True), (300, True)])
def test_fixed_power_limit_has_an_upper_bound(limit: float, ok: bool) -> None:
    doc = spec_doc(power={"mode": "Fixed", "limitW": limit})
    assert model_accepts(doc) is ok
    assert crd_accepts(doc) is ok


@pytest.mark.parametrize("limit", [4000.0, 1.0])
def test_fixed_limit_written_is_clamped_to_the_gpus_range(limit: float) -> None:
    energy = default_energy_model()
    spec = api.GreenModelSpec.model_validate(
        spec_doc(
            model={"name": "m", "paramsBillions": 8},
            gpu={"type": "H100-SXM"},
            power={"mode": "Fixed", "limitW": limit},
        )
    )
    gpu = energy.gpu_limits("H100-SXM")
    decision = initial_decision(spec, energy)
    assert decision.setting.limit_w == gpu.clamp(limit) != limit
    assert gpu.min_w <= (decision.setting.limit_w or 0) <= gpu.max_w
    assert decided(decision).power_limit_w == gpu.clamp(limit)
