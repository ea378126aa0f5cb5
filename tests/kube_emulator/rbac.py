"""API requests as RBAC sees them (`ApiCall`, recorded by the emulator for every resource request) and the
RBAC authorizer's rule matching, for checks against rendered Roles and ClusterRoles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class ApiCall(NamedTuple):
    """One API request as RBAC sees it (the attributes of an authorization check)."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str  # "" for the core group
    resource: str  # plural
    subresource: str | None
    namespace: str | None
    name: str | None
    user_agent: str

    @property
    def rbac_resource(self) -> str:
        """The resource as RBAC rules name it: `pods`, or `greenmodels/status` for a subresource."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def rule_allows(rule: Mapping[str, Any], call: ApiCall) -> bool:
    """Whether one PolicyRule of a Role or ClusterRole allows `call` (the RBAC authorizer's matching:
    `*` wildcards, `resource/subresource` names, `*/subresource`, and resourceNames only for named calls)."""
    if not (set(rule.get("verbs") or ()) & {"*", call.verb}):
        return False
    if not (set(rule.get("apiGroups") or ()) & {"*", call.group}):
        return False
    wanted = call.rbac_resource
    resources = set(rule.get("resources") or ())
    if not (resources & {"*", wanted} or (call.subresource and f"*/{call.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or ()
    return not names or (call.name is not None and call.name in names)
