"""Generated install files match their sources: chart CRDs, deploy/ and the rendering snapshots.

Regenerate them with `python hack/render_manifests.py` (and crds/ itself with `python hack/gen_crds.py`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartkit import ROOT, chart_crds, parse_stream, render_manifests

from greenllm.api.crd import custom_resource_definition

REGENERATE = "python hack/render_manifests.py"


def _diff(path: Path, expected: str) -> str:
    actual = path.read_text() if path.exists() else ""
    lines = difflib.unified_diff(
        actual.splitlines(),
        expected.splitlines(),
        f"{path.relative_to(ROOT)} (committed)",
        "(rendered)",
        lineterm="",
    )
    return "\n".join(list(lines)[:60])


def test_chart_crds_are_copies_of_crds() -> None:
    expected = render_manifests.chart_crd_files()
    assert expected, "crds/ holds no CRD"
    for path, text in expected.items():
        assert path.exists() and path.read_text() == text, (
            f"{path.relative_to(ROOT)} drifted; run {REGENERATE}"
        )


def test_chart_crds_hold_nothing_else() -> None:
    names = {p.name for p in (ROOT / "charts" / "greenllm" / "crds").iterdir()}
    expected = {p.name for p in render_manifests.chart_crd_files()} | set(render_manifests.CHART_ONLY_CRDS)
    assert names == expected


def test_chart_greenmodel_crd_is_the_generated_one() -> None:
    path = ROOT / "charts" / "greenllm" / "crds" / "greenmodels.greenllm.io.yaml"
    assert yaml.safe_load(path.read_text()) == custom_resource_definition()


@pytest.mark.parametrize("name", ["00-namespace.yaml", "01-crds.yaml", "02-greenllm.yaml"])
def test_deploy_matches_the_chart(name: str) -> None:
    expected = render_manifests.deploy_files()
    path = render_manifests.DEPLOY / name
    assert path.read_text() == expected[path], (
        f"deploy/{name} drifted; run {REGENERATE}\n{_diff(path, expected[path])}"
    )


def test_deploy_holds_only_generated_files() -> None:
    generated = {p.name for p in render_manifests.deploy_files()}
    assert {p.name for p in render_manifests.DEPLOY.glob("*.yaml")} == generated


def test_deploy_applies_in_order_and_stays_in_its_namespace() -> None:
    """kubectl applies a directory in file-name order: namespace, then CRDs, then the rest."""
    files = sorted(render_manifests.DEPLOY.glob("*.yaml"))
    docs = [parse_stream(f.read_text()) for f in files]
    assert [d["kind"] for d in docs[0]] == ["Namespace"]
    assert {d["kind"] for d in docs[1]} == {"CustomResourceDefinition"}
    namespace = docs[0][0]["metadata"]["name"]
    for doc in docs[2]:
        if doc["kind"] in ("ServiceAccount", "Service", "Deployment", "DaemonSet"):
            assert doc["metadata"]["namespace"] == namespace
    assert sorted(docs[1], key=lambda c: c["metadata"]["name"]) == sorted(
        chart_crds(), key=lambda c: c["metadata"]["name"]
    )


@pytest.mark.parametrize("scenario", sorted(render_manifests.SCENARIOS))
def test_rendering_matches_snapshot(scenario: str) -> None:
    expected = render_manifests.snapshot_files()
    path = render_manifests.SNAPSHOTS / f"{scenario}.yaml"
    assert path.exists(), f"no snapshot for {scenario}; run {REGENERATE}"
    assert path.read_text() == expected[path], (
        f"the rendering changed; review the diff, then run {REGENERATE}\n{_diff(path, expected[path])}"
    )


def test_check_mode_passes_on_the_committed_tree() -> None:
    assert render_manifests.main(["--check"]) == 0


@pytest.mark.parametrize("kube_version", ["1.30.0", kubernetes_validate.latest_version()])
def test_deploy_objects_are_valid_kubernetes(kube_version: str) -> None:
    docs = [d for f in sorted(render_manifests.DEPLOY.glob("*.yaml")) for d in parse_stream(f.read_text())]
    assert len(docs) >= 13
    for doc in docs:
        kubernetes_validate.validate(doc, kube_version, strict=True)
