"""`greenllm simulate` end to end on a slice of the shipped trace, with the real energy model and step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from simkit import EXAMPLE

from greenllm.sim.command import DEFAULT_CARBON_G_PER_KWH, main

SLICE = ["--model", str(EXAMPLE), "--start", "3m", "--duration", "5m", "--no-progress"]
POLICY_KEYS = {
    "energy_kwh",
    "joules_per_token",
    "carbon_g",
    "slo_attainment",
    "tokens_served",
    "changes",
    "peak_replicas",
    "quality_weighted_tokens",
}
DECISION_KEYS = {
    "t",
    "variant",
    "replicas",
    "power_limit_w",
    "locked_clock_mhz",
    "demand_prompt_tokens_per_s",
    "demand_output_tokens_per_s",
}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main([*SLICE, *args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    out = tmp_path_factory.mktemp("sim")
    decisions, plot = out / "decisions.jsonl", out / "plot.png"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(
            [
                *SLICE,
                "--scale-to-peak-replicas",
                "4",
                "--json",
                "--decisions-out",
                str(decisions),
                "--plot",
                str(plot),
            ]
        )
    assert code == 0
    return json.loads(buffer.getvalue()), decisions, plot


def test_json_shape(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, _, _ = reference
    assert set(result["policies"]) == {"greenllm", "static", "hpa", "oracle"}
    for name, policy in result["policies"].items():
        assert set(policy) >= POLICY_KEYS, name
        assert 0.0 <= policy["slo_attainment"] <= 1.0
        assert policy["energy_kwh"] > 0
        assert policy["carbon_g"] == pytest.approx(policy["energy_kwh"] * DEFAULT_CARBON_G_PER_KWH)
    assert set(result["ratios"]["greenllm_energy_over"]) == {"static", "hpa", "oracle"}


def test_sanity_of_the_policies(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, _, _ = reference
    p = result["policies"]
    assert p["oracle"]["energy_kwh"] <= p["greenllm"]["energy_kwh"]
    assert p["static"]["energy_kwh"] >= p["oracle"]["energy_kwh"]
    assert p["static"]["peak_replicas"] == result["scenario"]["static_replicas"] == 4
    assert p["static"]["changes"] == 0
    assert p["oracle"]["slo_attainment"] >= p["static"]["slo_attainment"] - 1e-9
    ratio = result["ratios"]["greenllm_energy_over"]["static"]
    assert ratio == pytest.approx(p["greenllm"]["energy_kwh"] / p["static"]["energy_kwh"])


def test_tokens_are_conserved(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, _, _ = reference
    arrived = result["scenario"]["tokens_arrived"]
    for name, policy in result["policies"].items():
        assert policy["tokens_served"] + policy["tokens_unserved"] == pytest.approx(arrived, rel=1e-9), name
        assert policy["prompt_tokens_served"] + policy["output_tokens_served"] == pytest.approx(
            policy["tokens_served"]
        )


def test_decisions_out_has_every_greenllm_step(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, decisions, _ = reference
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    duration = result["scenario"]["duration_s"]
    assert len(lines) == int((duration - 1e-9) // 15.0)  # one per spec.scaling.interval (15 s)
    assert [d["t"] for d in lines] == [15.0 * (k + 1) for k in range(len(lines))]
    for d in lines:
        assert set(d) >= DECISION_KEYS
        assert d["variant"] in {"bf16", "fp8", "int8", "int4"}
        assert d["replicas"] >= 1


def test_plot_is_a_png(reference: tuple[dict[str, Any], Path, Path]) -> None:
    _, _, plot = reference
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_scale_multiplies_the_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    one = run_json(capsys, "--rate-scale", "1", "--policies", "static")
    two = run_json(capsys, "--rate-scale", "2", "--policies", "static")
    assert two["scenario"]["tokens_arrived"] == pytest.approx(2 * one["scenario"]["tokens_arrived"])
    assert set(two["policies"]) == {"static"}


def test_carbon_intensity_flag_wins_over_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "--carbon-intensity", "100", "--policies", "static")
    static = result["policies"]["static"]
    assert result["scenario"]["carbon_g_per_kwh"] == 100.0
    assert static["carbon_g"] == pytest.approx(static["energy_kwh"] * 100.0)


def test_spec_carbon_intensity_is_used(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace(
        "  power:\n", "  metrics:\n    carbonIntensity:\n      gramsPerKwh: 50\n  power:\n"
    )
    model = tmp_path / "m.yaml"
    model.write_text(text)
    args = ["--model", str(model), "--start", "3m", "--duration", "2m", "--policies", "static", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["scenario"]["carbon_g_per_kwh"] == 50.0


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SLICE, "--scale-to-peak-replicas", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("greenllm", "static", "hpa", "oracle", "energy kWh", "SLO met"):
        assert name in out
    assert "greenllm energy / static:" in out


def test_malformed_trace_exits_with_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,2\n2023-11-16 18:17:04,x,2\n"
    )
    assert main(["--model", str(EXAMPLE), "--trace", str(bad), "--json"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv line 3" in err and "'ContextTokens'" in err


def test_malformed_model_exits_with_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text(EXAMPLE.read_text().replace("tpotP90Ms: 50", "tpotP90Ms: -5"))
    assert main(["--model", str(model), "--json"]) == 2
    err = capsys.readouterr().err
    assert "spec.slo.tpotP90Ms" in err and "line " in err


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--model", str(EXAMPLE), "--rate-scale", "2", "--scale-to-peak-replicas", "3"])
    with pytest.raises(SystemExit):
        main(["--model", str(EXAMPLE), "--rate-scale", "-1"])
    assert main(["--model", str(EXAMPLE), "--policies", "greenllm,magic"]) == 2
    assert "magic" in capsys.readouterr().err
