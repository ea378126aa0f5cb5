"""Decision -> Deployment, Service and status (core.render), and carrying a decision across edits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from greenllm.api import v1alpha1 as api
from greenllm.core import render
from greenllm.core.continuity import carried_decision
from greenllm.core.decision import Decision, Observation
from greenllm.core.fasttier import FastTier, SwitchRule
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


def test_condition_transition_time_moves_only_on_a_status_change() -> None:
    first = render.set_condition([], api.ConditionType.READY, False, "Progressing", "0/2", "t1", 1)
    same = render.set_condition(first, api.ConditionType.READY, False, "Progressing", "1/2", "t2", 1)
    flipped = render.set_condition(same, api.ConditionType.READY, True, "Available", "2/2", "t3", 1)
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert (
        render.set_condition(flipped, api.ConditionType.SPEC_VALID, None, "Unknown", "", "t4", 1)[1]["status"]
        == "Unknown"
    )


def test_ready_follows_the_deployment() -> None:
    deploy = render.deployment(OWNER, spec(), decision())
    ready = render.with_ready([], deploy, "t", 3)[0]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "Progressing",
        "0/2 replicas ready (team/llama)",
    )
    deploy["status"] = {"readyReplicas": 2}
    assert render.with_ready([], deploy, "t", 3)[0]["status"] == "True"


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


def record(**overrides: Any) -> dict[str, Any]:
    base = render.decision_record(decision(limit=400.0), "t")
    base.update(overrides)
    return base


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


def test_same_decision_compares_what_the_agent_and_kubectl_read() -> None:
    assert render.same_decision(decision(limit=400.0), record())
    assert not render.same_decision(decision(limit=350.0), record())
    assert not render.same_decision(decision(), None)


# ------------------------------------------------------------------------------------- slow-tier status

TIER = FastTier(
    efficient=PowerSetting(limit_w=400.0),
    burst=PowerSetting(locked_clock_mhz=1980),
    rule=SwitchRule(burst_at_waiting=1.0, hold_s=3.0),
)


def test_fast_tier_status_is_the_api_model_on_the_wire() -> None:
    decision = Decision("bf16", 2, PowerSetting(limit_w=400.0), None, "r", fast_tier=TIER)
    status = render.fast_tier_status(decision)
    assert status == {
        "efficient": {"powerLimitW": 400.0, "lockedClockMhz": None},
        "burst": {"powerLimitW": None, "lockedClockMhz": 1980},
        "rule": {"burstAtWaiting": 1.0, "holdSeconds": 3.0},
    }
    assert api.FastTierStatus.model_validate(status).burst.locked_clock_mhz == 1980
    assert (
        render.fast_tier_status(Decision("bf16", 2, PowerSetting(), None, "r")) is None
    )  # null: no switching


def test_a_carried_decision_keeps_the_recorded_fast_tier_only_while_it_fits() -> None:
    carried = Decision("bf16", 2, PowerSetting(limit_w=400.0), None, "r")
    recorded = render.fast_tier_status(
        Decision("bf16", 2, PowerSetting(limit_w=400.0), None, "r", fast_tier=TIER)
    )
    assert render.carried_fast_tier(spec(), carried, recorded) == recorded
    assert render.carried_fast_tier(spec(), carried, None) is None
    assert render.carried_fast_tier(spec(power={"mode": "Off"}), carried, recorded) is None
    other = Decision("bf16", 2, PowerSetting(limit_w=350.0), None, "r")  # not the recorded efficient setting
    assert render.carried_fast_tier(spec(), other, recorded) is None
    assert render.carried_fast_tier(spec(), carried, {"efficient": "garbage"}) is None


def test_observed_status_carries_attainment_and_the_peak_queue() -> None:
    obs = Observation(
        time=0.0, power_w=800.0, output_tokens_per_s=400.0, attainment=0.9876543, peak_waiting_requests=12.0
    )
    observed = render.observed_status(obs, "2026-01-01T00:00:00Z")
    assert observed["attainment"] == 0.987654 and observed["peakWaitingRequests"] == 12.0
    assert observed["joulesPerToken"] == 2.0 and observed["time"] == "2026-01-01T00:00:00Z"
    unknown = render.observed_status(Observation(time=0.0), "t")
    assert unknown["attainment"] is None and unknown["peakWaitingRequests"] is None  # null, never 0
    assert set(observed) == set(api.Observed.model_fields[f].alias or f for f in api.Observed.model_fields)


def test_condition_messages_are_cut_to_200_characters_with_an_ellipsis() -> None:
    error = (
        "HTTPConnectionPool(host='127.0.0.1', port=9090): Max retries exceeded with url: /api/v1/query?query="
        + "sum%28rate%28DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION%7Bnamespace%3D%22team%22%7D%5B1m%5D%29%29" * 5
    )
    [cond] = render.set_condition([], api.ConditionType.METRICS_AVAILABLE, False, "Down", error, "t", 1)
    assert len(cond["message"]) == render.MESSAGE_MAX
    assert cond["message"].endswith("\u2026")
    assert cond["message"].startswith("HTTPConnectionPool(host='127.0.0.1', port=9090)")
    assert render.short("fits\nas it is") == "fits as it is"


def test_budget_met_is_unknown_until_power_or_energy_was_measured() -> None:
    s = spec(budget={"energyKwh": 40})
    d = Decision("bf16", 2, PowerSetting(), None, "planned")
    assert render.budget_condition(s, d, 0.0, 0.0, None, measured=False) == (
        None,
        "NoMetrics",
        "no power or energy measured yet for this GreenModel's GPUs",
    )
    met, reason, message = render.budget_condition(s, d, 1.25, 0.0, 800.0, measured=True)
    assert (met, reason) == (True, "WithinBudget")
    assert message == "1.25 of 40 kWh used this 24h period"
    met, reason, message = render.budget_condition(spec(), d, 1.25, 0.0, 800.0, measured=True)
    assert (met, reason) == (True, "NoBudget") and message
    over = Decision("bf16", 2, PowerSetting(), None, "budget breached: 900 W > 500 W allowed", False)
    assert render.budget_condition(s, over, 1.25, 0.0, 900.0, measured=True) == (
        False,
        "BudgetExceeded",
        "budget breached: 900 W > 500 W allowed",
    )


def test_texts_for_the_printer_columns() -> None:
    assert render.replicas_status(3, 4) == {"readyReplicas": 3, "replicasText": "3/4"}
    assert render.replicas_status(None, 2)["replicasText"] == "0/2"
    assert render.energy_text(1.2, 40.0) == "1.2/40 kWh"
    assert render.energy_text(0.000123, None) == "0.00012 kWh"
    assert render.energy_text(0.0, 0.5) == "0/0.5 kWh"
    assert render.decision_status(Decision("bf16", 1, PowerSetting(limit_w=300.0), None, ""))[
        "settingText"
    ] == ("300 W/GPU")
