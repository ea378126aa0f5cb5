"""`greenllm simulate` on the compressed example (issue 14): the --min-quality flag, and which variants
the policies run at each floor (the share of replica-time per variant in the report)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import yaml
from simkit import DEFAULT, ROOT, Scripted, make_trace, scenario, spec_dict

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.sim.command import main, report_text
from greenllm.sim.engine import PolicyRun, run_policy
from greenllm.sim.fleet import FleetTarget
from greenllm.sim.report import summarize, variant_share

COMPRESSED = ROOT / "examples" / "llama-3.1-8b-compressed.yaml"
# A short slice keeps this fast; the README table runs the whole trace.
SLICE = [
    "--model",
    str(COMPRESSED),
    "--start",
    "3m",
    "--duration",
    "4m",
    "--no-progress",
    "--scale-to-peak-replicas",
    "4",
    "--policies",
    "greenllm,best-static",
]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main([*SLICE, *args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_variant_share_weights_each_step_by_the_replicas_asked_for() -> None:
    run = PolicyRun("p", 4, 1.0, np.zeros(0), np.zeros(0), np.zeros(0))
    run.target_variant = ["a", "a", "b", "b"]
    run.target_replicas = np.asarray([1.0, 1.0, 3.0, 3.0])
    assert variant_share(run) == {"a": pytest.approx(0.25), "b": pytest.approx(0.75)}
    assert variant_share(PolicyRun("p", 0, 1.0, np.zeros(0), np.zeros(0), np.zeros(0))) == {}


def test_the_floor_flag_decides_which_variants_may_run(capsys: pytest.CaptureFixture[str]) -> None:
    quality = {"bf16": 1.0, "fp8": 0.991, "int8": 0.995, "sparse-fp8": 0.975, "minitron": 0.927}
    for floor in ("0.98", "0.97", "0.92"):
        result = run_json(capsys, "--min-quality", floor)
        for name, policy in result["policies"].items():
            shares = policy["variant_share"]
            assert shares and sum(shares.values()) == pytest.approx(1.0), name
            assert all(quality[v] >= float(floor) for v in shares), (floor, name, shares)
        if floor == "0.98":  # the 2:4 variant is below this floor: best-static cannot pick it
            assert "sparse-fp8" not in result["baselines"]["best-static"]
        if floor == "0.97":
            assert "sparse-fp8" in result["baselines"]["best-static"]
    text = report_text(result)
    assert "greenllm's fleet by variant (share of replica-time asked for):" in text


def test_a_floor_no_variant_meets_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SLICE, "--min-quality", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["greenllm simulate: error: --min-quality 1.5: no variant meets slo.minQuality 1.5"]


def test_the_compressed_example_keeps_its_file_floor_without_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_json(capsys)
    assert "minitron" not in result["policies"]["greenllm"]["variant_share"]  # 0.927 < the file's 0.97


# ---------------------------------------------------------------- variants[].gpuCount in the simulator


def test_the_replay_counts_each_variants_gpus(tmp_path: Any) -> None:
    """A 2-GPU `hq` rolled to a 1-GPU `fast` (variants[].gpuCount) on 8 GPUs: the cap on replicas is per
    variant, and the GPUs held are each pod's own count (peak_gpus), not replicas x spec.gpu.count."""
    body = spec_dict(gpu={"count": 2})
    body["variants"][1]["gpuCount"] = 1
    spec = GreenModelSpec.model_validate(body)
    trace = make_trace(np.arange(0.5, 150.0, 1.0), 500.0, 10.0)
    sc = scenario(spec, trace, gpus=8)
    assert (sc.max_replicas("hq"), sc.max_replicas("fast")) == (4, 8)
    assert sc.gpus_per_replica() == {"hq": 2, "fast": 1}
    run = run_policy(sc, Scripted(FleetTarget("hq", 2, DEFAULT), {40.0: FleetTarget("fast", 6, DEFAULT)}))
    s = summarize(run, 400.0, sc.ttft_slo_s, sc.tpot_slo_s)
    # During the roll the 8 GPUs are full: 2 hq (4 GPUs) + 4 fast, then 1 hq (2 GPUs) + 6 fast: 7 pods.
    assert (s.peak_replicas, s.peak_gpus) == (7, 8)
    # A constant fleet of a wide variant is capped by its own count.
    capped = run_policy(sc, Scripted(FleetTarget("hq", 8, DEFAULT)))
    assert (capped.peak_replicas, capped.peak_gpus) == (4, 8)


def test_simulate_refuses_a_cluster_too_small_for_a_variant(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(COMPRESSED.read_text())
    for v in doc["spec"]["variants"]:
        if v["name"] == "minitron":
            v["gpuCount"] = 2
    path = tmp_path / "wide-student.yaml"
    path.write_text(yaml.safe_dump(doc))
    args = [*SLICE[2:], "--model", str(path), "--gpus", "1"]
    assert main([*args, "--min-quality", "0.92"]) == 2
    err = capsys.readouterr().err
    assert "--gpus 1 cannot hold one replica of variant 'minitron' (2 GPUs)" in err
    # Above the student's quality the floor leaves it out: one GPU holds every variant that may run.
    assert main([*args, "--json"]) == 0
