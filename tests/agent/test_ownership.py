"""Owner chain Pod -> ReplicaSet -> Deployment -> GreenModel by UID, and reading a GreenModel's setting."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from greenllm.agent.ownership import GreenModelRef, greenmodel_setting, object_key, owning_greenmodel
from greenllm.core.fasttier import FastTier, SwitchRule
from greenllm.core.performance import PowerSetting
from greenllm.core.power import Requested

NS = "serving"


def obj(kind: str, name: str, uid: str, owner: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": uid}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"kind": kind, "metadata": meta, **extra}


def ref(api_version: str, kind: str, target: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": target["metadata"]["name"],
        "uid": target["metadata"]["uid"],
        "controller": controller,
    }


@pytest.fixture
def chain() -> dict[str, dict[str, Any]]:
    gm = obj("GreenModel", "llama", "gm-uid", status={"powerLimitW": 300})
    dep = obj("Deployment", "llama-bf16", "dep-uid", ref("greenllm.io/v1alpha1", "GreenModel", gm))
    rs = obj("ReplicaSet", "llama-bf16-abc", "rs-uid", ref("apps/v1", "Deployment", dep))
    pod = obj("Pod", "llama-bf16-abc-x1", "pod-uid", ref("apps/v1", "ReplicaSet", rs))
    return {"gm": gm, "dep": dep, "rs": rs, "pod": pod}


def resolve(c: dict[str, dict[str, Any]]) -> GreenModelRef | None:
    return owning_greenmodel(
        c["pod"],
        {object_key(c["rs"]): c["rs"]},
        {object_key(c["dep"]): c["dep"]},
        {object_key(c["gm"]): c["gm"]},
    )


def test_verified_chain(chain: dict[str, dict[str, Any]]) -> None:
    assert resolve(chain) == GreenModelRef(namespace=NS, name="llama", uid="gm-uid")


@pytest.mark.parametrize("hop", ["rs", "dep", "gm"])
def test_uid_mismatch_at_any_hop_breaks_the_chain(chain: dict[str, dict[str, Any]], hop: str) -> None:
    # Same names, different object: e.g. deleted and recreated, or a forged reference.
    broken = copy.deepcopy(chain)
    broken[hop]["metadata"]["uid"] = "someone-else"
    assert resolve(broken) is None


@pytest.mark.parametrize("hop", ["rs", "dep", "gm"])
def test_missing_hop_breaks_the_chain(chain: dict[str, dict[str, Any]], hop: str) -> None:
    pools: dict[str, dict[Any, Any]] = {
        "rs": {object_key(chain["rs"]): chain["rs"]},
        "dep": {object_key(chain["dep"]): chain["dep"]},
        "gm": {object_key(chain["gm"]): chain["gm"]},
    }
    pools[hop] = {}
    assert owning_greenmodel(chain["pod"], pools["rs"], pools["dep"], pools["gm"]) is None


def test_owner_reference_must_be_the_controller(chain: dict[str, dict[str, Any]]) -> None:
    chain["pod"]["metadata"]["ownerReferences"][0]["controller"] = False
    assert resolve(chain) is None


def test_owner_reference_must_be_of_the_right_group(chain: dict[str, dict[str, Any]]) -> None:
    chain["dep"]["metadata"]["ownerReferences"][0]["apiVersion"] = "evil.example.com/v1"
    assert resolve(chain) is None


def test_other_namespace_does_not_count(chain: dict[str, dict[str, Any]]) -> None:
    chain["pod"]["metadata"]["namespace"] = "elsewhere"
    assert resolve(chain) is None


def test_labels_and_annotations_are_never_ownership(chain: dict[str, dict[str, Any]]) -> None:
    pod = obj("Pod", "impostor", "pod-2")
    pod["metadata"]["labels"] = {"greenllm.io/greenmodel": "llama"}
    pod["metadata"]["annotations"] = {"greenllm.io/power-limit-w": "100", "greenllm.io/owner-uid": "gm-uid"}
    chain["pod"] = pod
    assert resolve(chain) is None


def test_setting_from_status() -> None:
    gm = obj("GreenModel", "llama", "gm-uid", status={"powerLimitW": 300.5, "lockedClockMhz": 1770})
    setting = greenmodel_setting(gm)
    assert setting.requested == Requested(limit_w=300.5, clock_mhz=1770)
    assert setting.problem is None
    assert setting.ref.key == f"{NS}/llama"


def test_no_status_or_null_means_default() -> None:
    assert greenmodel_setting(obj("GreenModel", "a", "u")).requested == Requested()
    nulls = obj("GreenModel", "a", "u", status={"powerLimitW": None, "replicas": 2})
    assert greenmodel_setting(nulls).requested == Requested()


def test_power_mode_off_means_default_whatever_the_status() -> None:
    gm = obj("GreenModel", "a", "u", spec={"power": {"mode": "Off"}}, status={"powerLimitW": 250})
    assert greenmodel_setting(gm).requested == Requested()


@pytest.mark.parametrize("status", [{"powerLimitW": "lots"}, {"lockedClockMhz": 17.5}, "garbage"])
def test_invalid_status_is_a_problem_not_a_setting(status: Any) -> None:
    setting = greenmodel_setting(obj("GreenModel", "a", "u", status=status))
    assert setting.requested is None
    assert setting.problem


def test_fast_tier_and_port_from_the_greenmodel() -> None:
    fast = {
        "efficient": {"powerLimitW": 300},
        "burst": {"lockedClockMhz": 1980},
        "rule": {"burstAtWaiting": 2, "holdSeconds": 5},
    }
    status = {"powerLimitW": 450, "fastTier": fast}
    gm = obj("GreenModel", "llama", "gm-uid", spec={"port": 8080}, status=status)
    setting = greenmodel_setting(gm)
    assert setting.problem is None and setting.port == 8080
    assert setting.fast == FastTier(
        efficient=PowerSetting(limit_w=300.0),
        burst=PowerSetting(locked_clock_mhz=1980),
        rule=SwitchRule(burst_at_waiting=2.0, hold_s=5.0),
    )
    assert greenmodel_setting(obj("GreenModel", "llama", "gm-uid", status={"powerLimitW": 450})).fast is None
    assert greenmodel_setting(obj("GreenModel", "llama", "gm-uid", spec={"port": "80"})).port == 8000
    off = obj("GreenModel", "llama", "gm-uid", spec={"power": {"mode": "Off"}}, status={"fastTier": fast})
    assert greenmodel_setting(off).fast is None and greenmodel_setting(off).requested == Requested()


@pytest.mark.parametrize(
    "rule",
    [{"burstAtWaiting": -1, "holdSeconds": 3}, {"burstAtWaiting": 1, "holdSeconds": "inf"}, {}],
    ids=["negative", "infinite", "missing"],
)
def test_invalid_fast_tier_is_a_problem(rule: dict[str, Any]) -> None:
    fast = {"efficient": {}, "burst": {}, "rule": rule}
    setting = greenmodel_setting(obj("GreenModel", "llama", "gm-uid", status={"fastTier": fast}))
    assert setting.requested is None and setting.fast is None
    assert setting.problem is not None and "fastTier" in setting.problem
