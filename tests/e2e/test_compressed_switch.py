"""A spec change moves the fleet to a distilled variant (issue 14): the real operator against the API
emulator and a real Prometheus (the fixtures of test_autoscale). The student has its own model, image and
quality and GPU count (the 8B teacher on 2 GPUs, the 4.5B student on 1: variants[].gpuCount); lowering the
quality floor to admit it rolls the same Deployment to its image, arguments and GPU request."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import KubeClient
from tests.e2e.test_autoscale import (  # noqa: F401 (fleet and setup are fixtures used by name)
    DEPLOY,
    GM,
    HIGH,
    fleet,
    green_model,
    metrics_ok,
    setup,
    wait_status,
)

pytestmark = pytest.mark.e2e

TEACHER_IMAGE = "vllm/vllm-openai:v0.11.1"
STUDENT_IMAGE = "registry.example/minitron-4b-width-vllm:v0.11.1"  # weights baked in: another image
STUDENT = {
    "name": "minitron",
    "precision": "bf16",
    "model": {"name": "nvidia/Llama-3.1-Minitron-4B-Width-Base", "paramsBillions": 4.5},
    "image": STUDENT_IMAGE,
    "args": ["--model", "/models/minitron", "--served-model-name", "meta-llama/Llama-3.1-8B-Instruct"],
    "gpuCount": 1,  # the teacher takes the GreenModel's gpu.count, 2
    "quality": 0.927,
    "qualitySource": "Open LLM v1 tasks but TruthfulQA (arXiv 2408.11796 table 1) vs Llama-3.1-8B",
}


def teacher_and_student(namespace: str) -> dict[str, Any]:
    body = green_model("llama", namespace, scaling={"switchThreshold": 0.0}, gpu={"count": 2})
    body["spec"]["variants"] = [
        {"name": "bf16", "precision": "bf16", "image": TEACHER_IMAGE, "args": ["--model", "llama"]},
        STUDENT,
    ]
    return body


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    (only,) = deploy["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def gpus(deploy: dict[str, Any]) -> tuple[str, str]:
    resources = container(deploy)["resources"]
    return resources["requests"]["nvidia.com/gpu"], resources["limits"]["nvidia.com/gpu"]


async def test_lowering_the_floor_rolls_the_deployment_to_the_distilled_variant(
    setup: dict[str, Any],  # noqa: F811 (the fixture imported above)
    client: KubeClient,
) -> None:
    ns, fake = setup["namespace"], setup["fleet"]
    fake.update(setup["pod"], **HIGH)  # a load where the 4.5B student needs fewer GPUs than the 8B teacher
    await client.create(GM, teacher_and_student(ns))

    def planned(s: dict[str, Any]) -> bool:  # a decision made on observed demand, not before metrics came
        return metrics_ok(s) and (s.get("lastDecision") or {}).get("reasonKind") not in (None, "NoMetrics")

    before = await wait_status(client, ns, planned, "a decision on observed demand")
    assert before["variant"] == "bf16"
    assert "minitron" not in {a["variant"] for a in before["lastDecision"]["alternatives"]}  # below the floor
    deploy = await client.get(DEPLOY, "llama", ns)
    assert deploy is not None and container(deploy)["image"] == TEACHER_IMAGE
    assert gpus(deploy) == ("2", "2")

    await client.patch(GM, "llama", {"spec": {"slo": {"minQuality": 0.92}}}, ns)
    after = await wait_status(client, ns, lambda s: s.get("variant") == "minitron", "moved to the student")
    assert after["lastDecision"]["variant"] == "minitron"
    assert "switched variant bf16 -> minitron" in after["lastDecision"]["reason"]
    teacher = [a for a in after["lastDecision"]["alternatives"] if a["variant"] == "bf16"]
    assert teacher and all(a["powerW"] > after["lastDecision"]["expectedPowerW"] for a in teacher)
    rolled = await client.get(DEPLOY, "llama", ns)
    assert rolled is not None
    assert rolled["metadata"]["uid"] == deploy["metadata"]["uid"]  # the same Deployment, patched
    assert rolled["metadata"]["generation"] > deploy["metadata"]["generation"]
    assert rolled["metadata"]["labels"]["greenllm.io/variant"] == "minitron"
    assert rolled["spec"]["template"]["metadata"]["labels"]["greenllm.io/variant"] == "minitron"
    c = container(rolled)
    assert c["image"] == STUDENT_IMAGE
    assert c["args"][: len(STUDENT["args"])] == STUDENT["args"]
    assert gpus(rolled) == ("1", "1")  # the student's own GPU count
    assert rolled["spec"]["replicas"] == after["replicas"]

    # Raising the floor again moves the fleet off the student at once (QualityFloor), back to the teacher.
    await client.patch(GM, "llama", {"spec": {"slo": {"minQuality": 0.97}}}, ns)
    await wait_status(client, ns, lambda s: s.get("variant") == "bf16", "back to the teacher")
    restored = await client.get(DEPLOY, "llama", ns)
    assert restored is not None and container(restored)["image"] == TEACHER_IMAGE
    assert gpus(restored) == ("2", "2")
