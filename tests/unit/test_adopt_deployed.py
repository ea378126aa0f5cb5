"""core.continuity.adopt_deployed: after a restart, keep what the owned Deployment already runs."""

from __future__ import annotations

from typing import Any

from greenllm.api import v1alpha1 as api
from greenllm.core import render
from greenllm.core.continuity import adopt_deployed
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting

UID = "uid-1"
OWNER = {"metadata": {"name": "m", "namespace": "ns", "uid": UID}}


def spec(**overrides: Any) -> api.GreenModelSpec:
    data: dict[str, Any] = {
        "model": {"name": "m", "paramsBillions": 8},
        "variants": [
            {"name": "bf16", "precision": "bf16", "image": "i", "quality": 1.0},
            {"name": "int8", "precision": "int8", "image": "i", "quality": 0.99, "args": ["--x"]},
            {"name": "int4", "precision": "int4", "image": "i", "quality": 0.9},
        ],
        "slo": {"minQuality": 0.95},
        "replicas": {"min": 1, "max": 4},
    }
    data.update(overrides)
    return api.GreenModelSpec.model_validate(data)


RECORDED = Decision("bf16", 1, PowerSetting(), None, "recorded", token_budget=1024)


def running(variant: str, replicas: int, budget: int | None = 2048, uid: str = UID) -> dict[str, Any]:
    s = spec()
    owner = {"metadata": {**OWNER["metadata"], "uid": uid}}
    return render.deployment(
        owner, s, Decision(variant, replicas, PowerSetting(), None, "t", token_budget=budget)
    )


def test_the_running_variant_is_adopted_with_its_replicas_and_budget() -> None:
    s = spec()
    adopted = adopt_deployed(s, RECORDED, running("int8", 3), UID)
    assert (adopted.variant, adopted.replicas, adopted.token_budget) == ("int8", 3, 2048)
    assert "already runs" in adopted.reason
    # Rendering the adopted decision reproduces the running template: no roll.
    again = render.deployment(OWNER, s, adopted)
    assert again["spec"]["template"] == running("int8", 3)["spec"]["template"]


def test_replicas_are_clamped_into_the_spec() -> None:
    assert adopt_deployed(spec(), RECORDED, running("int8", 9), UID).replicas == 4


def test_nothing_to_adopt() -> None:
    s = spec()
    assert adopt_deployed(s, RECORDED, None, UID) is RECORDED
    assert adopt_deployed(s, RECORDED, running("bf16", 3), UID) is RECORDED  # same variant: the recorded one
    assert adopt_deployed(s, RECORDED, running("int8", 3, uid="someone-else"), UID) is RECORDED  # not ours
    assert adopt_deployed(s, RECORDED, running("int4", 3), UID) is RECORDED  # below the quality floor
    gone = running("int8", 3)
    gone["metadata"]["labels"][render.VARIANT_LABEL] = "fp8"  # a variant the spec no longer has
    assert adopt_deployed(s, RECORDED, gone, UID) is RECORDED
