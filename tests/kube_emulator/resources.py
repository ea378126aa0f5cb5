"""The resources the emulator serves: what the discovery API says about each one (`ResourceSpec`), plus how
the emulator treats it, and the table of built-in resources and namespaces a fresh cluster has."""

from __future__ import annotations

from dataclasses import dataclass

import kmock


@dataclass(frozen=True)
class ResourceSpec:
    """What the discovery API says about one resource, plus how the emulator should treat it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    shortnames: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    builtin: bool = True  # custom resources refuse strategic-merge patches
    generation: bool = False  # whether metadata.generation is maintained
    name_rule: str = "subdomain"  # "subdomain" | "label" (DNS-1123) | "dns1035"
    fields: tuple[str, ...] = ()  # field selectors supported beyond metadata.name/namespace
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        subresources=("status", "finalize"),
        shortnames=("ns",),
        name_rule="label",
        fields=("status.phase",),
    ),
    ResourceSpec(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        subresources=("status",),
        shortnames=("no",),
        fields=("spec.unschedulable",),
    ),
    ResourceSpec(
        "",
        "v1",
        "pods",
        "Pod",
        subresources=("status",),
        shortnames=("po",),
        categories=("all",),
        name_rule="subdomain",
        fields=_POD_FIELDS,
    ),
    ResourceSpec(
        "",
        "v1",
        "services",
        "Service",
        subresources=("status",),
        shortnames=("svc",),
        categories=("all",),
        name_rule="dns1035",
    ),
    ResourceSpec("", "v1", "events", "Event", shortnames=("ev",), fields=_EVENT_FIELDS),
    ResourceSpec(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        subresources=("status",),
        shortnames=("deploy",),
        categories=("all",),
        generation=True,
    ),
    ResourceSpec(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        subresources=("status",),
        shortnames=("rs",),
        categories=("all",),
        generation=True,
        fields=("status.replicas",),
    ),
    ResourceSpec("events.k8s.io", "v1", "events", "Event", shortnames=("ev",)),
    ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceSpec(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        "ClusterKopfPeering",
        namespaced=False,
        builtin=False,
        generation=True,
    ),
    ResourceSpec("kopf.dev", "v1", "kopfpeerings", "KopfPeering", builtin=False, generation=True),
    ResourceSpec(
        "greenllm.io",
        "v1alpha1",
        "greenmodels",
        "GreenModel",
        subresources=("status",),
        shortnames=("gm",),
        categories=("greenllm",),
        builtin=False,
        generation=True,
    ),
)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
