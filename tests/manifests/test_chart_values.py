"""values.schema.json: Helm refuses bad values before rendering anything."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from chartkit import ROOT, SCENARIOS, objects, render

CHART = ROOT / "charts" / "greenllm"

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"replicaCount": 2}, "additional properties 'replicaCount'"),
    ("unknown nested key", {"agent": {"hostPID": True}}, "additional properties 'hostPID'"),
    ("log level", {"logLevel": "verbose"}, "/logLevel"),
    (
        "lease shorter than 3 s",
        {"operator": {"leaderElection": {"leaseDuration": 2}}},
        "/operator/leaderElection",
    ),
    ("operator replicas 0", {"operator": {"replicas": 0}}, "/operator/replicas"),
    ("prometheus url without scheme", {"prometheus": {"url": "prometheus:9090"}}, "/prometheus/url"),
    ("prometheus url empty", {"prometheus": {"url": ""}}, "/prometheus/url"),
    (
        "negative carbon intensity",
        {"carbon": {"defaultIntensityGPerKWh": -5}},
        "/carbon/defaultIntensityGPerKWh",
    ),
    (
        "carbon intensity as text",
        {"carbon": {"defaultIntensityGPerKWh": "high"}},
        "/carbon/defaultIntensityGPerKWh",
    ),
    ("namespace not a DNS label", {"watchNamespaces": ["LLM_Prod"]}, "/watchNamespaces/0"),
    ("duplicate namespaces", {"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
    ("watchNamespaces not a list", {"watchNamespaces": "llm-prod"}, "/watchNamespaces"),
    ("metrics port out of range", {"operator": {"metricsPort": 70000}}, "/operator/metricsPort"),
    ("probe port zero", {"operator": {"probePort": 0}}, "/operator/probePort"),
    (
        "peering priority not an integer",
        {"operator": {"peering": {"priority": "high"}}},
        "/operator/peering/priority",
    ),
    (
        "peering name not a DNS name",
        {"operator": {"peering": {"name": "Green LLM"}}},
        "/operator/peering/name",
    ),
    ("agent backend", {"agent": {"backend": "dcgm"}}, "/agent/backend"),
    ("agent interval zero", {"agent": {"interval": 0}}, "/agent/interval"),
    ("relative state dir", {"agent": {"stateDir": "var/lib/greenllm"}}, "/agent/stateDir"),
    ("image pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("image digest", {"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ("resource quantity", {"operator": {"resources": {"limits": {"memory": "lots"}}}}, "/operator/resources"),
    (
        "monitor interval",
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "30 seconds"}}},
        "interval",
    ),
    (
        "both monitors",
        {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
        "/metrics",
    ),
]


@pytest.mark.parametrize(("case", "values", "where"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused(case: str, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render(values)
    assert where in str(refused.value), case


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_values_are_accepted(scenario: str) -> None:
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(chart.merge_values(SCENARIOS[scenario]))


def test_schema_is_valid_draft7_and_accepts_the_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_service_account_name_required_when_not_created() -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"operator\.serviceAccount\.name is required"):
        render({"operator": {"serviceAccount": {"create": False, "name": ""}}})


@pytest.mark.parametrize(
    "values",
    [
        {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}},
        {"operator": {"replicas": 2, "peering": {"enabled": True}}},
    ],
    ids=["no-leader-election", "peering"],
)
def test_several_operator_replicas_need_leader_election(values: dict[str, Any]) -> None:
    """Without the Lease every replica would act and count the energy again."""
    with pytest.raises(helm_python.HelmRenderError, match=r"operator\.replicas > 1 needs"):
        render(values)


def test_several_operator_replicas_with_leader_election_render() -> None:
    (deployment,) = [
        o
        for o in objects({"operator": {"replicas": 2}})
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    assert deployment["spec"]["replicas"] == 2
