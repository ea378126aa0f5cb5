"""The Grafana dashboard ConfigMap: off by default; when enabled, labelled for the kube-prometheus-stack
Grafana sidecar and holding dashboards/greenllm.json byte for byte (valid JSON)."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import kubernetes_validate
import pytest
from chartkit import ROOT, SCENARIOS, objects

DASHBOARD = ROOT / "charts" / "greenllm" / "dashboards" / "greenllm.json"


def _configmaps(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in objects(values) if o["kind"] == "ConfigMap"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_off_by_default(scenario: str) -> None:
    assert _configmaps(SCENARIOS[scenario]) == []
    assert _configmaps({"dashboards": {"enabled": False}}) == []


def test_enabled_renders_the_labelled_configmap() -> None:
    [cm] = _configmaps({"dashboards": {"enabled": True}})
    assert cm["apiVersion"] == "v1"
    assert cm["metadata"]["name"] == "greenllm-dashboard"
    assert cm["metadata"]["namespace"] == "greenllm-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == "greenllm"
    assert list(cm["data"]) == ["greenllm.json"]
    text = cm["data"]["greenllm.json"]
    dashboard = json.loads(text)  # valid JSON
    assert text == DASHBOARD.read_text().rstrip("\n")
    assert dashboard["uid"] == "greenllm-greenmodel"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "greenmodel"} <= variables
    assert all(p["targets"] for p in dashboard["panels"] if p["type"] != "row")
    kubernetes_validate.validate(cm, "1.30.0", strict=True)


def test_label_namespace_and_extras_are_configurable() -> None:
    values = {
        "dashboards": {
            "enabled": True,
            "namespace": "monitoring",
            "label": "grafana_dashboard_greenllm",
            "labelValue": "yes",
            "labels": {"team": "ml"},
            "annotations": {"grafana_folder": "GreenLLM"},
        }
    }
    [cm] = _configmaps(values)
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard_greenllm"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["labels"]["team"] == "ml"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "GreenLLM"}


@pytest.mark.parametrize(
    "values",
    [
        {"dashboards": {"enabled": "yes"}},
        {"dashboards": {"enabled": True, "folder": "x"}},
        {"dashboards": {"enabled": True, "namespace": "Not_A_Namespace"}},
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        objects(values)
