"""Trace and GreenModel files: what is accepted, and errors that name the line and the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from simkit import EXAMPLE

from greenllm.modelfile import ModelFileError, load_green_model
from greenllm.sim.trace import TraceError, default_trace_path, load_trace


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- traces


def test_the_shipped_trace_loads_with_its_attribution() -> None:
    trace = load_trace()
    assert len(trace) == 8819
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert 3400 < trace.duration_s < 3500  # about 57 minutes
    assert trace.prompt_tokens[0] == 4808 and trace.output_tokens[0] == 10  # first data row
    attribution = (default_trace_path().parent / "ATTRIBUTION.md").read_text()
    assert "CC-BY 4.0" in attribution and "Splitwise" in attribution and "ISCA 2024" in attribution


def test_generic_headers_numeric_times_and_unsorted_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "output_tokens,timestamp,input_tokens,extra\n5,12.5,100,x\n7,10,200,y\n")
    trace = load_trace(path)
    assert list(trace.arrival_s) == [0.0, 2.5]
    assert list(trace.prompt_tokens) == [200.0, 100.0]
    assert list(trace.output_tokens) == [7.0, 5.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp,input_tokens,output_tokens\n1,10,2\n2,abc,3\n", ["line 3", "'input_tokens'", "'abc'"]),
        ("timestamp,input_tokens,output_tokens\n1,10,2\n2,10,-3\n", ["line 3", "'output_tokens'", "'-3'"]),
        ("timestamp,input_tokens,output_tokens\n1,10,2.5\n", ["line 2", "'output_tokens'"]),
        ("timestamp,input_tokens,output_tokens\nyesterday,10,2\n", ["line 2", "'timestamp'", "'yesterday'"]),
        ("timestamp,input_tokens,output_tokens\n1,10\n", ["line 2", "2 fields"]),
        ("when,input_tokens,output_tokens\n1,10,2\n", ["line 1", "no timestamp column"]),
        ("timestamp,input_tokens,tokens_out\n1,10,2\n", ["line 1", "no output-tokens column"]),
        ("timestamp,input_tokens,output_tokens\n", ["no requests"]),
        ("", ["empty file"]),
    ],
)
def test_malformed_traces_name_the_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    for part in expected:
        assert part in str(err.value)
    assert "bad.csv" in str(err.value)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot open"):
        load_trace(tmp_path / "nope.csv")


def test_scaling_multiplies_tokens_and_requests_not_time() -> None:
    trace = load_trace()
    scaled = trace.scaled(2.5)
    assert scaled.total_prompt_tokens == pytest.approx(2.5 * trace.total_prompt_tokens)
    assert scaled.total_requests == pytest.approx(2.5 * len(trace))
    assert np.array_equal(scaled.arrival_s, trace.arrival_s)
    with pytest.raises(ValueError):
        trace.scaled(0.0)


def test_window_slices_and_rebases() -> None:
    trace = load_trace()
    part = trace.window(600.0, 300.0)
    assert part.duration_s == pytest.approx(300.0)
    assert part.arrival_s[0] >= 0.0 and part.arrival_s[-1] < 300.0
    assert part.start_epoch == pytest.approx(trace.start_epoch + 600.0)
    inside = (trace.arrival_s >= 600.0) & (trace.arrival_s < 900.0)
    assert len(part) == int(inside.sum())


# --------------------------------------------------------------------------------------- GreenModels

GOOD = EXAMPLE.read_text()


def test_the_reference_example_loads() -> None:
    model = load_green_model(EXAMPLE)
    assert [v.precision.value for v in model.spec.variants] == ["bf16", "fp8", "int8", "int4"]
    assert model.spec.slo.min_quality == 0.97
    assert model.spec.model.params_billions == 8


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_bad_field_is_named_with_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("quality: 0.993", "quality: very-high")
    path = write(tmp_path, "m.yaml", text)
    with pytest.raises(ModelFileError) as err:
        load_green_model(path)
    message = str(err.value)
    assert f"line {line_of(text, 'quality: very-high')}" in message
    assert "spec.variants[2].quality" in message
    assert "m.yaml" in message


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    text = GOOD.replace("      image: vllm/vllm-openai:v0.11.1\n", "", 1)
    path = write(tmp_path, "m.yaml", text)
    with pytest.raises(ModelFileError) as err:
        load_green_model(path)
    assert "spec.variants[0].image (field absent)" in str(err.value)
    assert f"line {line_of(text, '- name: bf16')}" in str(err.value)


def test_a_cross_field_rule_is_reported(tmp_path: Path) -> None:
    text = GOOD.replace("    min: 1\n    max: 24", "    min: 30\n    max: 24")
    path = write(tmp_path, "m.yaml", text)
    with pytest.raises(ModelFileError, match=r"field spec: .*replicas.min \(30\) must be <= replicas.max"):
        load_green_model(path)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "apiVersion: greenllm.io/v1alpha1\nkind: GreenModel\nspec: [unclosed\n")
    with pytest.raises(ModelFileError, match=r"m.yaml line \d+: not valid YAML"):
        load_green_model(path)


def test_one_greenmodel_among_several_documents(tmp_path: Path) -> None:
    other = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n---\n"
    assert load_green_model(write(tmp_path, "m.yaml", other + GOOD)).spec.model.params_billions == 8
    with pytest.raises(ModelFileError, match="of kind GreenModel"):
        load_green_model(write(tmp_path, "n.yaml", other + other))


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", GOOD.replace("kind: GreenModel", "kind: Deployment"))
    with pytest.raises(ModelFileError, match="field kind"):
        load_green_model(path)
