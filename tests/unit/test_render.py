"""Decision -> Deployment and Service (core.render), and carrying a decision across edits (the status is
tests/unit/test_status.py's)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from greenllm.api import v1alpha1 as api
from greenllm.core import render
from greenllm.core import status as st
from greenllm.core.continuity import carried_decision
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting

OWNER = {"metadata": {"name": "llama", "namespace": "team", "uid": "u-1"}}


def spec(**overrides: Any) -> api.GreenModelSpec:
    body: dict[str, Any] = {
        "model": {"name": "m"},
        "gpu": {"count": 2},
        "variants": [
            {
                "name": "bf16",
                "precision": "bf16",
                "image": "img:1",
                "args": ["--a"],
                "quality": 1.0,
                "resources": {"requests": {"cpu": "4"}},
            },
            {"name": "int4", "precision": "int4", "image": "img:2", "quality": 0.95},
        ],
        "slo": {"minQuality": 0.9},
        "replicas": {"min": 1, "max": 6},
    }
    body.update(overrides)
    return api.GreenModelSpec.model_validate(body)


def decision(variant: str = "bf16", replicas: int = 2, limit: float | None = None) -> Decision:
    return Decision(variant, replicas, PowerSetting(limit_w=limit), 900.0, "because")


def test_deployment_runs_the_variant_with_its_gpus_and_owner() -> None:
    d = render.deployment(OWNER, spec(), decision())
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "img:1" and container["args"] == ["--a"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"] == {"cpu": "4", "nvidia.com/gpu": "2"}
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {"greenllm.io/model": "llama"}}
    assert d["spec"]["template"]["metadata"]["labels"]["greenllm.io/variant"] == "bf16"
    assert d["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "greenllm.io/v1alpha1",
            "kind": "GreenModel",
            "name": "llama",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_deployment_patch_is_minimal() -> None:
    current = render.deployment(OWNER, spec(), decision())
    assert render.deployment_patch(current, render.deployment(OWNER, spec(), decision())) is None
    assert render.deployment_patch(current, render.deployment(OWNER, spec(), decision(replicas=3))) == {
        "spec": {"replicas": 3}
    }
    switched = render.deployment_patch(current, render.deployment(OWNER, spec(), decision("int4")))
    assert switched is not None
    assert switched["spec"]["template"]["spec"]["containers"][0]["image"] == "img:2"
    assert "selector" not in switched["spec"], "the selector is immutable: a variant change must roll"


def test_service_patch_only_when_ports_or_selector_differ() -> None:
    current = render.service(OWNER, spec())
    assert render.service_patch(current, render.service(OWNER, spec())) is None
    moved = render.service_patch(current, render.service(OWNER, spec(port=8080)))
    assert moved is not None and moved["spec"]["ports"][0]["port"] == 8080


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("llama", True),
        ("l-3", True),
        ("7b", False),
        ("a" * 64, False),
        ("a" * 63, True),
        ("Llama", False),
        ("llama-", False),
    ],
)
def test_names_that_can_name_a_service(name: str, ok: bool) -> None:
    assert (render.name_problem(name) is None) is ok


def record(**overrides: Any) -> api.DecisionRecord:
    return st.decision_record(decision(limit=400.0), "t").model_copy(update=overrides)


def test_carried_decision_survives_a_compatible_edit_and_clamps_replicas() -> None:
    kept = carried_decision(spec(), record())
    assert kept is not None and (kept.variant, kept.replicas, kept.setting.limit_w) == ("bf16", 2, 400.0)
    clamped = carried_decision(spec(replicas={"min": 3, "max": 6}), record())
    assert clamped is not None and clamped.replicas == 3 and "clamped" in clamped.reason


@pytest.mark.parametrize(
    "edit",
    [
        {
            "variants": [{"name": "int4", "precision": "int4", "image": "i", "quality": 0.95}]
        },  # variant removed
        {
            "slo": {"minQuality": 0.99},
            "variants": [
                {"name": "bf16", "precision": "bf16", "image": "i", "quality": 0.98},
                {"name": "x", "precision": "fp8", "image": "i", "quality": 1.0},
            ],
        },  # below the floor
        {"power": {"mode": "Off"}},  # a cap the spec no longer allows
        {"power": {"mode": "Fixed", "limitW": 300}},
    ],
)
def test_carried_decision_is_dropped_when_the_spec_no_longer_allows_it(edit: dict[str, Any]) -> None:
    assert carried_decision(spec(**copy.deepcopy(edit)), record()) is None
