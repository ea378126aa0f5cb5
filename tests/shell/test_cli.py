"""`greenllm plan` and `greenllm crd`, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-h100.yaml"


def greenllm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )


def test_plan_without_demand_is_the_initial_decision() -> None:
    out = greenllm("plan", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["variant"] == "bf16" and decision["replicas"] == 1  # highest quality at replicas.min
    assert "no metrics yet" in decision["reason"] and decision["reasonKind"] == "NoMetrics"


def test_plan_at_a_demand_scales_with_it() -> None:
    low = json.loads(
        greenllm("plan", str(EXAMPLE), "--prompt-tokens-per-s", "2000", "--output-tokens-per-s", "50").stdout
    )
    high = json.loads(
        greenllm(
            "plan", str(EXAMPLE), "--prompt-tokens-per-s", "200000", "--output-tokens-per-s", "3000"
        ).stdout
    )
    assert high["replicas"] > low["replicas"]
    assert high["expectedPowerW"] > low["expectedPowerW"]
    assert low["alternatives"], "runner-ups are reported"


def test_plan_names_the_line_and_field_of_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("precision: int4", "precision: int3"))
    out = greenllm("plan", str(bad))
    assert out.returncode != 0
    assert "spec.variants[3].precision" in out.stderr and "line" in out.stderr


@pytest.mark.parametrize("args", [("crd",), ("crd", "-o", "{tmp}/crd.yaml")])
def test_crd_prints_the_committed_crd(args: tuple[str, ...], tmp_path: Path) -> None:
    out = greenllm(*(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 0, out.stderr
    text = out.stdout if len(args) == 1 else (tmp_path / "crd.yaml").read_text()
    assert text == (ROOT / "crds" / "greenmodels.greenllm.io.yaml").read_text()


def test_crd_prints_the_energy_budget_crd_on_request() -> None:
    out = greenllm("crd", "--kind", "EnergyBudget")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "crds" / "energybudgets.greenllm.io.yaml").read_text()
