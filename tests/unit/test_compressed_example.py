"""examples/llama-3.1-8b-compressed.yaml: its qualities are the shipped evidence's numbers, recomputed here,
and the energy model prices every variant of it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from tests.unit.test_calibration import SHARED, needs_shared

from greenllm import calibration as cal
from greenllm.api.v1alpha1 import Sparsity
from greenllm.calibration import default_energy_model
from greenllm.core.performance import PowerSetting
from greenllm.modelfile import load_green_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-3.1-8b-compressed.yaml"
SPARSE = "neuralmagic/Sparse-Llama-3.1-8B-2of4"
WIDTH = "nvidia/Llama-3.1-Minitron-4B-Width-Base"
DEPTH = "nvidia/Llama-3.1-Minitron-4B-Depth-Base"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def evidence() -> list[dict[str, str]]:
    return _rows(cal.read_data(cal.COMPRESSION_QUALITY))


def test_the_example_has_the_five_variants_the_issue_names() -> None:
    spec = load_green_model(EXAMPLE).spec
    shape = {v.name: (v.precision.value, v.sparsity, v.model and v.model.name) for v in spec.variants}
    assert shape == {
        "bf16": ("bf16", Sparsity.NONE, None),
        "fp8": ("fp8", Sparsity.NONE, None),
        "int8": ("int8", Sparsity.NONE, None),
        "sparse-fp8": ("fp8", Sparsity.TWO_FOUR, None),
        "minitron": ("bf16", Sparsity.NONE, WIDTH),
    }
    assert all(v.quality_source for v in spec.variants)
    assert spec.gpu.type == "H100-SXM" and spec.slo.min_quality == 0.97


def test_the_sparse_quality_is_its_open_llm_recovery_times_the_fp8_factor() -> None:
    (row,) = [r for r in evidence() if r["variant_model"] == SPARSE and r["benchmark"].startswith("Open LLM")]
    recovery = float(row["variant_score"]) / float(row["base_score"])
    assert recovery == pytest.approx(float(row["variant_over_base"]), abs=5e-5)
    variants = load_green_model(EXAMPLE).spec
    fp8 = variants.variant("fp8").quality
    assert variants.variant("sparse-fp8").quality == round(recovery * fp8, 3)


def test_the_student_quality_is_the_open_llm_v1_tasks_the_paper_reports() -> None:
    rows = [r for r in evidence() if r["variant_model"] == WIDTH]
    # Open LLM Leaderboard v1 = ARC-C, HellaSwag, MMLU, TruthfulQA, Winogrande, GSM8K; the paper has all but
    # TruthfulQA, at the leaderboard's shot counts.
    assert sorted(r["benchmark"] for r in rows) == [
        "ARC-Challenge 25-shot",
        "GSM8K 5-shot",
        "HellaSwag 10-shot",
        "MMLU 5-shot",
        "Winogrande 5-shot",
    ]
    ratio = sum(float(r["variant_score"]) for r in rows) / sum(float(r["base_score"]) for r in rows)
    minitron = load_green_model(EXAMPLE).spec.variant("minitron")
    assert minitron.quality == round(ratio, 3)
    assert minitron.model is not None and minitron.model.params_billions == float(
        rows[0]["variant_params_b_total"]
    )


def test_one_benchmark_alone_tells_another_story() -> None:
    """The README's point: GSM8K keeps 0.85 of the teacher for the width-pruned student, 0.35 for depth."""
    gsm = {
        r["variant_model"]: float(r["variant_over_base"])
        for r in evidence()
        if r["benchmark"] == "GSM8K 5-shot"
    }
    assert round(gsm[WIDTH], 2) == 0.85 and round(gsm[DEPTH], 2) == 0.35


@needs_shared
def test_the_int8_quality_is_the_open_llm_v1_row_of_the_base_model() -> None:
    rows = _rows((SHARED / "quantization_quality.csv").read_text())
    (row,) = [
        r for r in rows if r["model"] == "Meta-Llama-3.1-8B (base)" and r["benchmark"] == "OpenLLM v1 average"
    ]
    quality = float(row["quant_value"]) / float(row["baseline_value"])
    assert load_green_model(EXAMPLE).spec.variant("int8").quality == round(quality, 3)


def test_the_energy_model_prices_every_variant_of_the_example() -> None:
    spec, model = load_green_model(EXAMPLE).spec, default_energy_model()
    for variant in spec.variants:
        assert model.performance(spec, variant, PowerSetting()) is not None, variant.name
    assert "2:4 sparse fp8" in model.explain(spec, spec.variant("sparse-fp8"))
    assert "to 4.5B on 1 GPU(s)" in model.explain(spec, spec.variant("minitron"))
