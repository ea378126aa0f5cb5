"""budget.powerW in the simulator: the fleet's measured power (every pod holding GPUs, per 1 s step) stays
within the cap greenllm guarantees, on the shipped trace, and the report says how close it came."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from simkit import EXAMPLE

from greenllm.sim.command import build_parser, report_text, simulate
from greenllm.sim.report import peak_mean_power_w

# Two minutes of the shipped code trace scaled so that a peak-rule fleet needs 8 replicas: greenllm without
# a budget draws up to about 4.8 kW for a second and 3.0 kW over a minute here (2.6 kW on average).
SHORT = ["--start", "3m", "--duration", "2m", "--scale-to-peak-replicas", "8", "--no-progress"]
CAP_W = 2000.0


def with_power_budget(tmp_path: Path, power_w: float) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["budget"] = {"powerW": power_w}
    path = tmp_path / "capped.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(model: Path, *extra: str) -> dict[str, Any]:
    return simulate(build_parser().parse_args(["--model", str(model), *SHORT, *extra]))


def test_the_fleet_never_draws_more_than_the_power_budget(tmp_path: Path) -> None:
    free = run(EXAMPLE, "--policies", "greenllm")["policies"]["greenllm"]
    assert free["peak_power_1s_w"] > CAP_W  # the budget binds in this scenario
    result = run(with_power_budget(tmp_path, CAP_W), "--policies", "greenllm")
    capped = result["policies"]["greenllm"]
    # Every window, the 1-s steps included: the guarantee is on the worst case, not on an average.
    assert 0.0 < capped["peak_power_1s_w"] <= CAP_W * (1.0 + 1e-9)
    assert capped["peak_power_15s_w"] <= capped["peak_power_1s_w"] * (1.0 + 1e-12)
    assert capped["peak_power_60s_w"] <= capped["peak_power_15s_w"] * (1.0 + 1e-12)
    assert result["scenario"]["power_budget_w"] == CAP_W
    text = report_text(result)
    assert f"against budget.powerW {CAP_W:.0f} W" in text
    assert "peak fleet power, W" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_peak_mean_power_is_the_highest_sliding_window_mean() -> None:
    power = [100.0, 100.0, 1000.0, 100.0, 400.0, 400.0]
    assert peak_mean_power_w(power, 1.0, 1.0) == 1000.0
    assert peak_mean_power_w(power, 1.0, 2.0) == 550.0
    assert peak_mean_power_w(power, 1.0, 3.0) == 500.0  # 1000 + 100 + 400
    assert peak_mean_power_w(power, 2.0, 4.0) == 550.0  # 2-s steps: a 4-s window is 2 steps
    assert peak_mean_power_w(power, 1.0, 60.0) == 350.0  # shorter than the window: the whole run
    assert peak_mean_power_w([], 1.0, 1.0) == 0.0
