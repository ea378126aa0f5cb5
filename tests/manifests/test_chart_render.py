"""The Helm chart rendered by Helm's own engine (helm-python-sdk), for several value sets."""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from chartkit import (
    NAMESPACE,
    RELEASE,
    ROOT,
    SCENARIOS,
    chart_crds,
    find,
    kinds,
    objects,
)

import greenllm
from greenllm.agent.command import build_parser as agent_parser
from greenllm.cli import build_parser
from greenllm.controller.config import SETTINGS, OperatorConfig

CHART = ROOT / "charts" / "greenllm"
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Kinds kubernetes-validate does not know; each is checked by its own test below.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "ClusterKopfPeering", "KopfPeering"}

OPERATOR = "greenllm-operator"
AGENT = "greenllm-agent"


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {scenario: objects(values) for scenario, values in SCENARIOS.items()}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_is_valid_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, kube_version: str
) -> None:
    checked = 0
    for obj in rendered[scenario]:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)
        checked += 1
    assert checked >= 5  # at least the operator: ServiceAccount, RBAC pair, Deployment, Service


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_chart_crds_are_valid_kubernetes(kube_version: str) -> None:
    crds = chart_crds()
    assert {c["metadata"]["name"] for c in crds} == {
        "greenmodels.greenllm.io",
        "energybudgets.greenllm.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds:
        kubernetes_validate.validate(crd, kube_version, strict=True)


@pytest.mark.parametrize("kube_version", ["v1.30.0", f"v{KUBE_VERSIONS[1]}"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict_is_clean(scenario: str, kube_version: str) -> None:
    report = helm_python.lint(CHART, SCENARIOS[scenario], strict=True, kube_version=kube_version)
    assert report["total_charts_linted"] == 1
    # Severity 1 is "info" (only "icon is recommended"); warnings (2) and errors (3) fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


def test_lint_reports_bad_values() -> None:
    report = helm_python.lint(CHART, {"logLevel": "verbose"}, strict=True)
    assert any(m["severity"] == 3 and "/logLevel" in m["error"] for m in report["messages"])


def test_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == greenllm.__version__


def test_default_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert kinds(rendered["defaults"]) == [
        ("ClusterRole", AGENT),
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", AGENT),
        ("ClusterRoleBinding", OPERATOR),
        ("DaemonSet", AGENT),
        ("Deployment", OPERATOR),
        ("Role", f"{OPERATOR}-leader-election"),
        ("RoleBinding", f"{OPERATOR}-leader-election"),
        ("Service", f"{AGENT}-metrics"),
        ("Service", f"{OPERATOR}-metrics"),
        ("ServiceAccount", AGENT),
        ("ServiceAccount", OPERATOR),
    ]
    for obj in rendered["defaults"]:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_image_defaults_to_app_version_and_digest_pins_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    default = _container(find(rendered["defaults"], "Deployment"))["image"]
    assert default == f"ghcr.io/greenllm/greenllm:{greenllm.__version__}"
    pinned = rendered["custom-prometheus"]
    digest = SCENARIOS["custom-prometheus"]["image"]["digest"]
    for kind in ("Deployment", "DaemonSet"):
        assert _container(find(pinned, kind))["image"] == f"ghcr.io/greenllm/greenllm@{digest}"


def test_operator_pod_is_locked_down(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deploy = find(rendered["defaults"], "Deployment", OPERATOR)
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    container = _container(deploy)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == OPERATOR


def test_operator_probes_use_kopf_liveness_and_metrics_port(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    values = {"operator": {"probePort": 18080, "metricsPort": 19400}}
    for objs, probe_port, metrics_port in (
        (rendered["defaults"], 8080, 9400),
        (objects(values), 18080, 19400),
    ):
        container = _container(find(objs, "Deployment"))
        assert _ports(container) == {"metrics": metrics_port, "probe": probe_port}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "probe"}
        args = build_parser().parse_args(container["args"])
        assert (args.probe_port, args.metrics_port) == (probe_port, metrics_port)
        service = find(objs, "Service", f"{OPERATOR}-metrics")
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": metrics_port, "targetPort": "metrics", "protocol": "TCP"}
        ]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_operator_args_parse_with_the_real_cli(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    values = SCENARIOS[scenario]
    container = _container(find(rendered[scenario], "Deployment", OPERATOR))
    args = build_parser().parse_args(container["args"])
    assert args.command == "run"
    config = OperatorConfig.from_sources({s.field: getattr(args, s.field) for s in SETTINGS}, {})
    assert config.prometheus_url == values.get("prometheus", {}).get(
        "url", "http://prometheus-operated.monitoring.svc:9090"
    )
    assert list(config.namespaces) == values.get("watchNamespaces", [])
    assert config.log_level == values.get("logLevel", "info")
    assert config.default_carbon_intensity_g_per_kwh == values.get("carbon", {}).get(
        "defaultIntensityGPerKWh"
    )
    peering = values.get("operator", {}).get("peering", {})
    if peering.get("enabled"):
        assert config.peering_name == peering.get("name", "greenllm")
        assert config.priority == peering.get("priority", 100)
    else:
        assert config.peering_name is None
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_agent_daemonset_has_exactly_the_privileges_nvml_needs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    ds = find(rendered["defaults"], "DaemonSet", AGENT)
    pod = ds["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(ds)
    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    # The API server refuses allowPrivilegeEscalation=false beside CAP_SYS_ADMIN.
    assert sc.get("allowPrivilegeEscalation", True) is True
    # No GPU is requested: the runtime exposes all of them, the workloads keep their allocations.
    assert not any("nvidia.com/gpu" in part for part in container["resources"].values())
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    host_paths = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {
        "pod-resources": {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"},
        "state": {"path": "/var/lib/greenllm", "type": "DirectoryOrCreate"},
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["pod-resources"]["readOnly"] is True
    assert not mounts["state"].get("readOnly", False)
    assert _ports(container) == {"metrics": 9401}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "metrics"}
    assert pod["serviceAccountName"] == AGENT


def test_agent_args_follow_the_cli_contract(rendered: dict[str, list[dict[str, Any]]]) -> None:
    default = _container(find(rendered["defaults"], "DaemonSet"))["args"]
    assert default == [
        "agent",
        "--node-name=$(NODE_NAME)",
        "--state-dir=/var/lib/greenllm",
        "--pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock",
        "--interval=10",
        "--metrics-port=9401",
        "--backend=nvml",
        "--log-level=info",
    ]
    custom_ds = find(rendered["custom-prometheus"], "DaemonSet")
    custom = _container(custom_ds)["args"]
    assert {"--backend=simulated", "--dry-run", "--log-level=debug"} <= set(custom)
    assert "runtimeClassName" not in custom_ds["spec"]["template"]["spec"]


@pytest.mark.parametrize("scenario", sorted(s for s in SCENARIOS if s != "agent-disabled"))
def test_agent_args_parse_with_the_real_cli(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    values = SCENARIOS[scenario]
    container = _container(find(rendered[scenario], "DaemonSet", AGENT))
    assert container["args"][0] == "agent"
    args = agent_parser().parse_args(container["args"][1:])
    agent_values = values.get("agent", {})
    assert args.node_name == "$(NODE_NAME)"  # expanded by the kubelet from the env var
    assert str(args.state_dir) == "/var/lib/greenllm"
    assert str(args.pod_resources_socket) == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert args.backend == agent_values.get("backend", "nvml")
    assert args.dry_run is agent_values.get("dryRun", False)
    assert args.metrics_port == 9401 and args.interval == 10
    assert args.log_level.lower() == values.get("logLevel", "info")


def test_extra_args_are_appended() -> None:
    objs = objects({"operator": {"extraArgs": ["--priority=3"]}, "agent": {"extraArgs": ["--min-hold=120"]}})
    operator_args = _container(find(objs, "Deployment"))["args"]
    agent_args = _container(find(objs, "DaemonSet"))["args"]
    assert operator_args[-1] == "--priority=3" and build_parser().parse_args(operator_args).priority == 3
    assert agent_args[-1] == "--min-hold=120" and agent_parser().parse_args(agent_args[1:]).min_hold == 120


def test_agent_disabled_renders_no_agent(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["agent-disabled"]
    assert not [o for o in objs if o["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"]
    assert {o["kind"] for o in objs} == {
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",  # the leader Lease's
        "RoleBinding",
        "Service",
        "ServiceAccount",
    }


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_monitor_scrapes_operator_and_agent(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["servicemonitor"]
    monitor = find(objs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        s["metadata"]["name"]
        for s in objs
        if s["kind"] == "Service" and _selects(selector, s["metadata"]["labels"])
    }
    assert selected == {f"{OPERATOR}-metrics", f"{AGENT}-metrics"}
    for name in selected:
        assert "metrics" in {p["name"] for p in find(objs, "Service", name)["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    assert not [o for o in objs if o["kind"] == "PodMonitor"]
    assert not [o for o in rendered["defaults"] if o["kind"] in ("ServiceMonitor", "PodMonitor")]


def test_pod_monitor_scrapes_operator_and_agent_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["podmonitor"]
    monitor = find(objs, "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        w["kind"]
        for w in objs
        if w["kind"] in ("Deployment", "DaemonSet")
        and _selects(selector, w["spec"]["template"]["metadata"]["labels"])
    }
    assert selected == {"Deployment", "DaemonSet"}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"


def test_services_select_their_own_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["defaults"]
    for service_name, workload_kind in (
        (f"{OPERATOR}-metrics", "Deployment"),
        (f"{AGENT}-metrics", "DaemonSet"),
    ):
        selector = find(objs, "Service", service_name)["spec"]["selector"]
        matching = [
            w["kind"]
            for w in objs
            if w["kind"] in ("Deployment", "DaemonSet")
            and _selects(selector, w["spec"]["template"]["metadata"]["labels"])
        ]
        assert matching == [workload_kind]
    assert find(objs, "Service", f"{AGENT}-metrics")["spec"]["clusterIP"] == "None"


def test_namespaced_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["namespaced"]
    namespaces = SCENARIOS["namespaced"]["watchNamespaces"]
    lease = f"{OPERATOR}-leader-election"  # the Lease's Role lives in the release's namespace
    served = [o for o in objs if o["metadata"]["name"] != lease]
    roles = sorted(o["metadata"]["namespace"] for o in served if o["kind"] == "Role")
    bindings = sorted(o["metadata"]["namespace"] for o in served if o["kind"] == "RoleBinding")
    assert roles == bindings == sorted(namespaces)
    args = _container(find(objs, "Deployment"))["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [f"--namespace={ns}" for ns in namespaces]


def _peering_crd_schema(kind: str) -> dict[str, Any]:
    crd = next(c for c in chart_crds() if c["spec"]["names"]["kind"] == kind)
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_peering_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not [o for o in rendered["defaults"] if "KopfPeering" in o["kind"]]
    cluster = find(rendered["peering"], "ClusterKopfPeering", "greenllm")
    assert cluster["apiVersion"] == "kopf.dev/v1" and "namespace" not in cluster["metadata"]
    jsonschema.validate(cluster, _peering_crd_schema("ClusterKopfPeering"))
    namespaced = find(rendered["peering-namespaced"], "KopfPeering", "greenllm")
    assert namespaced["metadata"]["namespace"] == "llm-prod"
    jsonschema.validate(namespaced, _peering_crd_schema("KopfPeering"))
    assert not [o for o in rendered["peering-namespaced"] if o["kind"] == "ClusterKopfPeering"]


def test_release_name_and_overrides_flow_into_names() -> None:
    objs = objects(
        {"fullnameOverride": "gl", "operator": {"serviceAccount": {"create": False, "name": "existing-sa"}}},
        name="prod",
        namespace="energy",
    )
    assert find(objs, "Deployment")["metadata"]["name"] == "gl-operator"
    assert find(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing-sa"
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"] == ["gl-agent"]
    binding = find(objs, "ClusterRoleBinding", "gl-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "existing-sa", "namespace": "energy"}]
    plain = objects({}, name="team-a", namespace="energy")
    assert find(plain, "Deployment")["metadata"]["name"] == "team-a-greenllm-operator"
