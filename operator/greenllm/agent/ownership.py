"""Who owns a pod, and what its GreenModel asks for: plain functions over Kubernetes objects (dicts).

A pod is a GreenModel's only through controller owner references verified by UID at every hop:
Pod -> ReplicaSet (apps/v1) -> Deployment (apps/v1) -> GreenModel (greenllm.io). Labels and annotations
are never consulted, so a pod cannot claim a GreenModel (or a power setting) by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from greenllm.api.v1alpha1 import GROUP, KIND, FastTierStatus, GreenModelStatus, PowerMode, SettingStatus
from greenllm.core.fasttier import FastTier, SwitchRule
from greenllm.core.performance import PowerSetting
from greenllm.core.power import Requested

ObjectKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class GreenModelRef:
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class GreenModelSetting:
    """The setting a GreenModel asks for. `requested` None with a `problem`: unusable, leave its GPUs be.
    `fast` (status.fastTier): the two settings the fast tier switches between, instead of `requested`;
    `port` (spec.port): where its pods serve their vLLM metrics."""

    ref: GreenModelRef
    requested: Requested | None
    problem: str | None = None
    fast: FastTier | None = None
    port: int = 8000


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = _meta(obj)
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def controller_ref(obj: Mapping[str, Any], kind: str, group: str) -> Mapping[str, Any] | None:
    """The owner reference with `controller: true` if it is of this kind and API group, else None."""
    refs = _meta(obj).get("ownerReferences")
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if not isinstance(ref, Mapping) or ref.get("controller") is not True:
            continue
        api_version = str(ref.get("apiVersion", ""))
        ref_group = api_version.rpartition("/")[0]
        if ref.get("kind") == kind and ref_group == group and ref.get("uid") and ref.get("name"):
            return ref
        return None  # there is one controller only; it is not the kind we follow
    return None


def _follow(
    obj: Mapping[str, Any], kind: str, group: str, pool: Mapping[ObjectKey, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    ref = controller_ref(obj, kind, group)
    if ref is None:
        return None
    namespace = object_key(obj)[0]
    target = pool.get((namespace, str(ref["name"])))
    if target is None or _meta(target).get("uid") != ref["uid"]:
        return None
    return target


def owning_greenmodel(
    pod: Mapping[str, Any],
    replicasets: Mapping[ObjectKey, Mapping[str, Any]],
    deployments: Mapping[ObjectKey, Mapping[str, Any]],
    greenmodels: Mapping[ObjectKey, Mapping[str, Any]],
) -> GreenModelRef | None:
    """The GreenModel owning `pod`, verified by UID at every hop; None when any hop is missing or differs."""
    rs = _follow(pod, "ReplicaSet", "apps", replicasets)
    if rs is None:
        return None
    deployment = _follow(rs, "Deployment", "apps", deployments)
    if deployment is None:
        return None
    gm = _follow(deployment, KIND, GROUP, greenmodels)
    if gm is None:
        return None
    namespace, name = object_key(gm)
    return GreenModelRef(namespace=namespace, name=name, uid=str(_meta(gm)["uid"]))


def _port(spec: Any) -> int:
    port = spec.get("port") if isinstance(spec, Mapping) else None
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else 8000


def _power_setting(setting: SettingStatus) -> PowerSetting:
    return PowerSetting(limit_w=setting.power_limit_w, locked_clock_mhz=setting.locked_clock_mhz)


def _fast_tier(status: FastTierStatus | None) -> FastTier | None:
    if status is None:
        return None
    return FastTier(
        efficient=_power_setting(status.efficient),
        burst=_power_setting(status.burst),
        rule=SwitchRule(burst_at_waiting=status.rule.burst_at_waiting, hold_s=status.rule.hold_seconds),
    )


def greenmodel_setting(gm: Mapping[str, Any]) -> GreenModelSetting:
    """Read `status.powerLimitW` / `status.lockedClockMhz` / `status.fastTier` (written by the operator
    only) and `spec.port`; power mode Off means the GPUs keep their defaults whatever the status says."""
    namespace, name = object_key(gm)
    ref = GreenModelRef(namespace=namespace, name=name, uid=str(_meta(gm).get("uid", "")))
    spec = gm.get("spec")
    port = _port(spec)
    power = spec.get("power") if isinstance(spec, Mapping) else None
    mode = power.get("mode") if isinstance(power, Mapping) else None
    if mode == PowerMode.OFF.value:
        return GreenModelSetting(ref=ref, requested=Requested(), port=port)
    raw = gm.get("status")
    if raw is None:
        return GreenModelSetting(ref=ref, requested=Requested(), port=port)
    if not isinstance(raw, Mapping):
        return GreenModelSetting(ref=ref, requested=None, problem="status is not an object", port=port)
    try:
        status = GreenModelStatus.model_validate(
            {k: raw[k] for k in ("powerLimitW", "lockedClockMhz", "fastTier") if k in raw}
        )
        fast = _fast_tier(status.fast_tier)
    except (ValidationError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            problem = f"invalid status.{where}: {first['msg']}"
        else:
            problem = f"invalid status.fastTier: {exc}"
        return GreenModelSetting(ref=ref, requested=None, problem=problem, port=port)
    return GreenModelSetting(
        ref=ref,
        requested=Requested(limit_w=status.power_limit_w, clock_mhz=status.locked_clock_mhz),
        fast=fast,
        port=port,
    )
