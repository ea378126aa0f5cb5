"""variants[].gpuCount (issue 14): a variant with its own model may run on another number of GPUs than
spec.gpu.count. Every consumer uses the variant's count: the API default, the energy model (a replica's
power and capacity), the planner's power, the rendered pod's GPU request, and a switch between variants
of different counts rolls the Deployment. A Minitron-4B student on 1 GPU next to Llama-3.1-8B on 2."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.calibration import default_energy_model
from greenllm.core import render
from greenllm.core.decision import Decision, Demand
from greenllm.core.performance import PowerSetting
from greenllm.core.planner import plan

STUDENT = {"name": "nvidia/Llama-3.1-Minitron-4B-Width-Base", "paramsBillions": 4.5}
OWNER = {"metadata": {"name": "llama", "namespace": "team", "uid": "u-1"}}


def spec(student_gpus: int | None = 1, *, spec_gpus: int = 2, **student: Any) -> GreenModelSpec:
    """Llama-3.1-8B bf16 on `spec_gpus` H100s; its Minitron-4B student on `student_gpus` (None: absent)."""
    own = {} if student_gpus is None else {"gpuCount": student_gpus}
    return GreenModelSpec.model_validate(
        {
            "model": {"name": "meta-llama/Llama-3.1-8B", "paramsBillions": 8},
            "gpu": {"type": "H100-SXM", "count": spec_gpus},
            "variants": [
                {"name": "bf16", "precision": "bf16", "image": "teacher"},
                {
                    "name": "minitron",
                    "precision": "bf16",
                    "model": STUDENT,
                    "image": "student",
                    "quality": 0.927,
                    "qualitySource": "Open LLM v1 tasks but TruthfulQA vs Llama-3.1-8B",
                    **own,
                    **student,
                },
            ],
            "slo": {"minQuality": 0.9},
            "replicas": {"min": 1, "max": 16},
        }
    )


def test_a_variant_defaults_to_the_greenmodels_gpu_count_and_may_set_its_own() -> None:
    s = spec(None)
    assert [s.gpus_per_replica(v) for v in s.variants] == [2, 2]
    s = spec(1)
    assert [s.gpus_per_replica(v) for v in s.variants] == [2, 1]
    assert spec(4, spec_gpus=1).gpus_per_replica(spec(4, spec_gpus=1).variants[1]) == 4


@pytest.mark.parametrize("bad", [0, 17, 1.5])
def test_gpu_count_has_the_bounds_of_gpu_count(bad: float) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"gpuCount|gpu_count"):
        spec(None, gpuCount=bad)


def test_the_energy_model_prices_a_replica_for_the_variants_gpus() -> None:
    model = default_energy_model()
    mixed, alone = spec(1), spec(None, spec_gpus=1)
    on_one = model.performance(mixed, mixed.variants[1], PowerSetting())
    same = model.performance(alone, alone.variants[1], PowerSetting())
    assert on_one == same  # exactly what a GreenModel of 1 GPU per replica gets for its student
    on_two = model.performance(spec(None), spec(None).variants[1], PowerSetting())
    assert on_one is not None and on_two is not None
    idle_w = model.gpu("H100-SXM").idle_w
    assert on_one.idle_power_w == pytest.approx(idle_w)
    assert on_two.idle_power_w == pytest.approx(2 * idle_w)
    # Memory-bound scaling: two GPUs read half the weights each (capacity x2) and draw twice the power.
    assert on_two.output_tokens_per_s == pytest.approx(2 * on_one.output_tokens_per_s)
    assert on_two.prefill_power_w == pytest.approx(2 * on_one.prefill_power_w)
    # The teacher stays on the GreenModel's two GPUs.
    teacher = model.performance(mixed, mixed.variants[0], PowerSetting())
    assert teacher is not None and teacher.idle_power_w == pytest.approx(2 * idle_w)
    assert "4.5B on 1 GPU(s)" in model.explain(mixed, mixed.variants[1])


def test_the_planner_prices_each_variant_for_its_own_gpus() -> None:
    """A light load: one 1-GPU student replica is half the power of the smallest 2-GPU fleet; the
    planner sees it only when it prices the student for its own GPU count."""
    model = default_energy_model()
    demand = Demand(2000.0, 300.0)
    s = spec(1)
    d = plan(s, demand, None, model)
    assert (d.variant, d.replicas) == ("minitron", 1)
    perf = model.performance(s, s.variants[1], d.setting)
    assert perf is not None and d.expected_power_w is not None
    assert d.expected_power_w == pytest.approx(perf.power_w(2000.0, 300.0))
    teacher = [a for a in d.alternatives if a.variant == "bf16"]
    assert teacher and teacher[0].power_w is not None and teacher[0].power_w >= 1.9 * d.expected_power_w
    # The same student on the GreenModel's 2 GPUs: a replica costs twice as much, so the teacher (better
    # quality, the same power per replica) is chosen.
    two = plan(spec(None), demand, None, model)
    assert two.expected_power_w is not None
    assert two.expected_power_w == pytest.approx(2 * d.expected_power_w)
    assert two.variant == "bf16"


def _gpus(deployment: dict[str, Any]) -> tuple[str, str]:
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    return resources["requests"]["nvidia.com/gpu"], resources["limits"]["nvidia.com/gpu"]


def test_rendering_requests_the_variants_gpus_and_a_switch_between_counts_rolls_the_pods() -> None:
    s = spec(1, resources={"requests": {"cpu": "4"}, "limits": {"nvidia.com/gpu": "8"}})
    teacher = render.deployment(OWNER, s, Decision("bf16", 3, PowerSetting(), None, "t"))
    student = render.deployment(OWNER, s, Decision("minitron", 3, PowerSetting(), None, "t"))
    assert _gpus(teacher) == ("2", "2")
    assert _gpus(student) == ("1", "1")  # greenllm's count wins over a GPU limit in the variant's resources
    container = student["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "4"
    patch = render.deployment_patch(teacher, student)
    assert patch is not None
    assert _gpus(patch) == ("1", "1")  # the template changes: the Deployment rolls to 1-GPU pods
    assert patch["metadata"]["annotations"] != teacher["metadata"]["annotations"]
    # The count alone changes the template: a spec edit of gpuCount rolls the pods too.
    wider = render.deployment(OWNER, spec(2), Decision("minitron", 3, PowerSetting(), None, "t"))
    changed = render.deployment_patch(student, wider)
    assert changed is not None and _gpus(changed) == ("2", "2")
