"""`greenllm simulate` on the compressed example (issue 14): the --min-quality flag, and which variants
the policies run at each floor (the share of replica-time per variant in the report)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from simkit import ROOT

from greenllm.sim.command import main, report_text
from greenllm.sim.engine import PolicyRun
from greenllm.sim.report import variant_share

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
