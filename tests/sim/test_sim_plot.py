"""The comparison plot: a small run rendered to PNG, and the figure's panels and labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from simkit import CAPPED, DEFAULT, Scripted, bursty_trace, scenario

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.sim.engine import PolicyRun, run_policy
from greenllm.sim.fleet import FleetTarget
from greenllm.sim.plot import PANELS, build_figure, write_plot
from greenllm.sim.report import Summary, summarize
from greenllm.sim.trace import FloatArray

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs() -> dict[str, PolicyRun]:
    spec = GreenModelSpec.model_validate(
        {
            "model": {"name": "m", "paramsBillions": 8},
            "variants": [
                {"name": "hq", "precision": "bf16", "image": "i", "quality": 1.0},
                {"name": "fast", "precision": "fp8", "image": "i", "quality": 0.99},
            ],
            "slo": {"minQuality": 0.97, "ttftP90Ms": 2000},
            "replicas": {"min": 1, "max": 8},
        }
    )
    s = scenario(spec, bursty_trace(seconds=90))
    return {
        "greenllm": run_policy(
            s,
            Scripted(FleetTarget("hq", 2, DEFAULT), {30.0: FleetTarget("fast", 1, CAPPED)}, name="greenllm"),
        ),
        "static": run_policy(s, Scripted(FleetTarget("hq", 3, DEFAULT), name="static")),
        "instant": run_policy(s, Scripted(FleetTarget("hq", 1, DEFAULT), instant=True, name="instant")),
    }


def _summaries(runs: dict[str, PolicyRun]) -> dict[str, Summary]:
    return {n: summarize(r, 400.0, 2.0, 0.05) for n, r in runs.items()}


def _demand(runs: dict[str, PolicyRun]) -> tuple[FloatArray, FloatArray]:
    run = runs["greenllm"]
    trace = bursty_trace(seconds=90)
    return trace.binned(run.step_s, run.steps)


def test_png_of_a_small_run(runs: dict[str, PolicyRun], tmp_path: Path) -> None:
    prompt, output = _demand(runs)
    path = tmp_path / "sub" / "plot.png"
    write_plot(path, runs, prompt, output, ["fast", "hq"], 1.0, "small", _summaries(runs), 0.99)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert (width, height) == (1300, 1700)  # 13 x 17 in at 100 dpi
    assert 30_000 < len(data) < 3_000_000


def test_figure_panels_and_labels(runs: dict[str, PolicyRun]) -> None:
    prompt, output = _demand(runs)
    summaries = _summaries(runs)
    fig = build_figure(runs, prompt, output, ["fast", "hq"], 1.0, "small", summaries, 0.99)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert set(PANELS) <= set(axes)
    # Prompt and output demand on separate axes: output is not dwarfed by the prompt's scale.
    assert "prompt" in axes["prompt demand"].get_ylabel()
    assert "output" in axes["output demand"].get_ylabel()
    assert axes["output demand"].get_ylim()[1] < axes["prompt demand"].get_ylim()[1]
    # Variant and power limit each on their own axis (no twin axes).
    assert len(fig.axes) == len(PANELS)
    assert [t.get_text() for t in axes["variant"].get_yticklabels()] == ["fast", "hq"]
    assert "W/GPU" in axes["power limit"].get_ylabel()
    # The instant baseline is kept out of the replica panel and drawn faint in the power panel.
    replicas = [line.get_label() for line in axes["ready replicas"].get_lines()]
    assert "instant" not in replicas and {"greenllm", "static"} <= set(replicas)
    power = {line.get_label(): line for line in axes["fleet power"].get_lines()}
    assert power["instant"].get_linewidth() < power["greenllm"].get_linewidth()
    assert (power["instant"].get_alpha() or 1.0) < 1.0
    # Totals: one bar per policy with kWh and attainment from the runs' summaries.
    energy = axes["energy"]
    assert [t.get_text() for t in energy.get_xticklabels()] == ["greenllm", "static", "instant"]
    heights = [bar.get_height() for bar in energy.patches]
    assert heights == pytest.approx([summaries[n].energy_kwh for n in ("greenllm", "static", "instant")])
    slo = [bar.get_height() for bar in axes["SLO attainment"].patches]
    assert slo == pytest.approx(
        [100 * summaries[n].slo_attainment for n in ("greenllm", "static", "instant")]
    )
    texts = [t.get_text() for t in axes["SLO attainment"].texts]
    assert f"{100 * summaries['greenllm'].slo_attainment:.1f}%" in texts
    assert "target 99%" in axes["SLO attainment"].get_title()
