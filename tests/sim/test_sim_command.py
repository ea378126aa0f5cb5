"""`greenllm simulate` end to end on slices of the shipped trace, with the real energy model and step."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from simkit import EXAMPLE

from greenllm.core.decision import ReasonKind
from greenllm.sim.command import DEFAULT_CARBON_G_PER_KWH, POLICIES, SENSITIVITY, main, report_text

SLICE = ["--model", str(EXAMPLE), "--start", "3m", "--duration", "5m", "--no-progress"]
SHORT = ["--model", str(EXAMPLE), "--start", "3m", "--duration", "2m", "--no-progress"]
POLICY_KEYS = {
    "energy_kwh",
    "slo_attainment",
    "joules_per_token",
    "carbon_g",
    "tokens_served",
    "changes",
    "peak_replicas",
    "ttft_p90_s",
    "tpot_p90_s",
    "minutes_p90_ok",
    "energy_split_kwh",
}
DECISION_KEYS = {
    "t",
    "variant",
    "replicas",
    "power_limit_w",
    "locked_clock_mhz",
    "efficient",
    "burst",
    "demand_prompt_tokens_per_s",
    "demand_output_tokens_per_s",
    "reason",
    "reason_kind",
}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main([*args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    out = tmp_path_factory.mktemp("sim")
    decisions, plot = out / "decisions.jsonl", out / "plot.png"
    buffer = io.StringIO()
    args = [*SLICE, "--scale-to-peak-replicas", "4", "--json", "--decisions-out", str(decisions)]
    with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        code = main([*args, "--plot", str(plot)])
    assert code == 0
    return json.loads(buffer.getvalue()), decisions, plot


def test_json_has_every_policy_with_its_numbers(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, _, _ = reference
    assert list(result["policies"]) == list(POLICIES)
    for name, policy in result["policies"].items():
        assert set(policy) >= POLICY_KEYS, name
        assert 0.0 <= policy["slo_attainment"] <= 1.0
        assert 0.0 <= policy["minutes_p90_ok"] <= 1.0
        assert policy["energy_kwh"] > 0
        assert policy["carbon_g"] == pytest.approx(policy["energy_kwh"] * DEFAULT_CARBON_G_PER_KWH)
        assert set(policy["energy_split_kwh"]) == {"warm_idle", "starting", "prefill", "decode"}
        assert sum(policy["energy_split_kwh"].values()) == pytest.approx(policy["energy_kwh"])
        assert policy["ttft_p90_s"] > 0 and policy["tpot_p90_s"] > 0
        assert policy["joules_per_token"] > 0
    assert set(result["ratios"]["greenllm_energy_over"]) == set(POLICIES) - {"greenllm"}
    assert set(result["baselines"]) == {"static", "best-static", "clairvoyant", "instant"}


def test_the_baselines_meet_the_target_they_were_searched_for(
    reference: tuple[dict[str, Any], Path, Path],
) -> None:
    result, _, _ = reference
    p, notes = result["policies"], result["baselines"]
    target = result["scenario"]["attainment_target"]
    assert result["scenario"]["peak_rule_replicas"] == 4
    for name in ("static", "best-static", "clairvoyant", "instant"):
        if "nothing searched meets" not in notes[name]:
            assert p[name]["slo_attainment"] >= target, name
    for name in ("static", "best-static"):
        count = int(notes[name].split(" x ")[0])
        assert p[name]["peak_replicas"] == count
        assert p[name]["changes"] == 0
    assert notes["static"].endswith(f"x {result['scenario']['top_variant']} at default power")
    # best-static searches every constant fleet static could be, and more.
    assert p["best-static"]["energy_kwh"] <= p["static"]["energy_kwh"] * (1 + 1e-9)
    ratio = result["ratios"]["greenllm_energy_over"]["static"]
    assert ratio == pytest.approx(p["greenllm"]["energy_kwh"] / p["static"]["energy_kwh"])


def test_tokens_served_never_exceed_the_tokens_that_arrived(
    reference: tuple[dict[str, Any], Path, Path],
) -> None:
    result, _, _ = reference
    arrived = result["scenario"]["tokens_arrived"]
    for name, policy in result["policies"].items():
        assert 0 < policy["tokens_served"] <= arrived * (1 + 1e-12), name
    # A constant fleet that meets the target serves every request by the end of the drain.
    assert result["policies"]["static"]["tokens_served"] == pytest.approx(arrived, rel=1e-12)


def test_decisions_out_has_every_greenllm_decision(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, decisions, _ = reference
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    duration = result["scenario"]["duration_s"]
    times = [d["t"] for d in lines]
    assert len(lines) >= duration // 15.0  # one per spec.scaling.interval (15 s)
    assert all(b - a == pytest.approx(15.0) for a, b in itertools.pairwise(times))
    assert times[0] >= 0.0 and times[-1] <= duration
    for d in lines:
        assert set(d) >= DECISION_KEYS
        assert d["variant"] in {"bf16", "fp8", "int8", "int4"}
        assert d["replicas"] >= 1
        assert d["reason_kind"] in set(ReasonKind)
        assert set(d["efficient"]) == {"power_limit_w", "locked_clock_mhz"}
        assert d["burst"] is None or set(d["burst"]) == {"power_limit_w", "locked_clock_mhz"}
        assert d["demand_prompt_tokens_per_s"] is None or d["demand_prompt_tokens_per_s"] >= 0


def test_plot_is_a_png(reference: tuple[dict[str, Any], Path, Path]) -> None:
    _, _, plot = reference
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_scale_copies_multiply_the_requests(capsys: pytest.CaptureFixture[str]) -> None:
    one = run_json(capsys, *SHORT, "--rate-scale", "1", "--policies", "static")
    two = run_json(capsys, *SHORT, "--rate-scale", "2", "--policies", "static")
    assert two["scenario"]["requests"] == 2 * one["scenario"]["requests"]
    assert two["scenario"]["tokens_arrived"] == pytest.approx(2 * one["scenario"]["tokens_arrived"])
    assert two["scenario"]["scale_mode"] == "copies"
    assert set(two["policies"]) == {"static"}


def test_shifted_scale_mode_runs_with_its_seed(capsys: pytest.CaptureFixture[str]) -> None:
    one = run_json(capsys, *SHORT, "--policies", "static")
    shifted = run_json(capsys, *SHORT, "--rate-scale", "2", "--scale-mode", "shifted", "--seed", "3")
    again = run_json(
        capsys, *SHORT, "--rate-scale", "2", "--scale-mode", "shifted", "--seed", "3", "--policies", "static"
    )
    s = shifted["scenario"]
    assert (s["scale_mode"], s["seed"], s["rate_scale"]) == ("shifted", 3, 2.0)
    assert s["requests"] == 2 * one["scenario"]["requests"]
    assert s["tokens_arrived"] == pytest.approx(2 * one["scenario"]["tokens_arrived"])
    assert shifted["policies"]["static"] == again["policies"]["static"]  # seeded: the same requests
    assert list(shifted["policies"]) == list(POLICIES)
    # Not the aligned copies under another name: the same requests at other times serve differently.
    copies = run_json(capsys, *SHORT, "--rate-scale", "2", "--policies", "static")
    assert copies["scenario"]["requests"] == s["requests"]
    assert copies["policies"]["static"] != shifted["policies"]["static"]


def test_scale_to_peak_replicas_with_shifted_copies(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(
        capsys, *SHORT, "--scale-to-peak-replicas", "3", "--scale-mode", "shifted", "--policies", "static"
    )
    assert result["scenario"]["peak_rule_replicas"] == 3
    assert result["scenario"]["rate_scale"] > 1.0


def test_sensitivity_reruns_at_each_corner(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, *SHORT, "--policies", "greenllm,static", "--sensitivity")
    corners = result["sensitivity"]
    assert list(corners) == [label for label, _ in SENSITIVITY]
    for values in corners.values():
        assert set(values) == {"over_static", "attainment_greenllm", "attainment_static"}
    centre = corners["centre"]
    assert centre["over_static"] == pytest.approx(result["ratios"]["greenllm_energy_over"]["static"])
    assert centre["attainment_static"] == result["policies"]["static"]["slo_attainment"]
    assert corners["idle 70 W"] != centre


def test_carbon_intensity_flag_wins_over_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, *SHORT, "--carbon-intensity", "100", "--policies", "static")
    static = result["policies"]["static"]
    assert result["scenario"]["carbon_g_per_kwh"] == 100.0
    assert static["carbon_g"] == pytest.approx(static["energy_kwh"] * 100.0)


def test_spec_carbon_intensity_is_used(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace(
        "  power:\n", "  metrics:\n    carbonIntensity:\n      gramsPerKwh: 50\n  power:\n"
    )
    model = tmp_path / "m.yaml"
    model.write_text(text)
    args = ["--model", str(model), "--start", "3m", "--duration", "2m", "--policies", "static"]
    assert run_json(capsys, *args)["scenario"]["carbon_g_per_kwh"] == 50.0


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SHORT, "--policies", "greenllm,static,best-static"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["policy", "kWh"] for line in lines)
    for name in ("greenllm", "static", "best-static"):
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert any(line.startswith("static: ") and " x " in line for line in lines)
    assert "SLO met:" in out and "greenllm uses" in out
    table = lines[lines.index("") + 1 :]  # after the scenario's headline
    assert max(len(line) for line in table) <= 100


def test_the_whole_report_fits_100_columns(reference: tuple[dict[str, Any], Path, Path]) -> None:
    result, _, _ = reference
    text = report_text(result)
    assert "static: " in text and "instant: " in text
    assert max(len(line) for line in text.splitlines()) <= 100


# ------------------------------------------------------------------------------------------ bad inputs


def one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("greenllm simulate: error: ")
    return lines[0]


def test_an_unknown_policy_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["--model", str(EXAMPLE), "--policies", "greenllm,magic"])
    assert "magic" in line
    assert "(none given)" in one_line_error(capsys, ["--model", str(EXAMPLE), "--policies", ","])


def test_an_unreadable_trace_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    line = one_line_error(capsys, ["--model", str(EXAMPLE), "--trace", str(missing)])
    assert "nope.csv" in line and "cannot open trace" in line


def test_a_malformed_trace_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,2\n2023-11-16 18:17:04,x,2\n"
    )
    line = one_line_error(capsys, ["--model", str(EXAMPLE), "--trace", str(bad), "--json"])
    assert "bad.csv line 3" in line and "'ContextTokens'" in line


def test_a_malformed_model_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text(EXAMPLE.read_text().replace("tpotP90Ms: 50", "tpotP90Ms: -5"))
    assert main(["--model", str(model), "--json"]) == 2
    err = capsys.readouterr().err
    assert "spec.slo.tpotP90Ms" in err and "line " in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale-mode", "stretched"], "invalid choice: 'stretched'"),
        (["--rate-scale", "2", "--scale-to-peak-replicas", "3"], "not allowed with argument"),
        (["--rate-scale", "-1"], "must be > 0"),
        (["--seed", "x"], "invalid int value"),
        (["--duration", "soon"], "--duration"),
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(EXAMPLE), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1]


def test_decisions_carry_the_planned_demand_not_only_the_observed_rates(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    code = main(
        [*SLICE, "--rate-scale", "2", "--policies", "greenllm", "--decisions-out", str(out), "--json"]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    planned = [r for r in rows if r["demand_prompt_tokens_per_s"] is not None and r["observed"]]
    assert planned
    # The plan is for the down-window's peak (and the queue): never below what was served.
    for r in planned:
        seen = r["observed"]["prompt_tokens_per_s"] or 0.0
        assert r["demand_prompt_tokens_per_s"] >= seen - 1e-6
    assert any(
        r["demand_prompt_tokens_per_s"] > (r["observed"]["prompt_tokens_per_s"] or 0.0) for r in planned
    )


# ------------------------------------------------------------------------- outputs checked before the run


def test_an_unknown_gpu_type_lists_the_supported_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = tmp_path / "m.yaml"
    model.write_text(EXAMPLE.read_text().replace("type: H100-SXM", "type: B999", 1))
    line = one_line_error(capsys, ["--model", str(model), "--no-progress"])
    assert "'B999'" in line and "supported: H100-SXM" in line and "B200" in line


@pytest.mark.parametrize(
    ("flag", "target", "message"),
    [
        ("--plot", "{tmp}/out.txt", "must end in .png"),
        ("--plot", "{tmp}", "is a directory"),
        ("--decisions-out", "{tmp}", "is a directory"),
        ("--decisions-out", "{tmp}/file/below/a/file.jsonl", "cannot be written"),
        ("--plot", "/proc/no-such-pid/plot.png", "cannot be written"),
    ],
)
def test_an_unwritable_output_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flag: str,
    target: str,
    message: str,
) -> None:
    import greenllm.sim.command as command

    (tmp_path / "file").write_text("a file, not a directory")

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the simulation started")

    monkeypatch.setattr(command, "compare_parallel", never)
    path = target.format(tmp=tmp_path)
    line = one_line_error(capsys, [*SHORT, flag, path])
    assert line.startswith(f"greenllm simulate: error: {flag} {path}: ") and message in line
    assert not Path(path).is_file() or Path(path) == tmp_path / "file"


def test_a_read_only_directory_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import os

    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        line = one_line_error(capsys, [*SHORT, "--decisions-out", str(readonly / "d.jsonl")])
        assert "cannot be written" in line
    finally:
        readonly.chmod(0o700)


def test_the_probe_leaves_no_file_and_creates_missing_parents(tmp_path: Path) -> None:
    from greenllm.sim.command import check_writable

    target = tmp_path / "new" / "dir" / "plot.png"
    check_writable(target, "--plot", ".png")
    assert target.parent.is_dir() and not target.exists()
    existing = tmp_path / "kept.jsonl"
    existing.write_text("old\n")
    check_writable(existing, "--decisions-out")
    assert existing.read_text() == "old\n"


def test_results_survive_a_failed_plot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from greenllm.sim import plot

    def broken(*args: Any) -> None:
        raise RuntimeError("the renderer ran out of memory")

    monkeypatch.setattr(plot, "write_plot", broken)
    decisions = tmp_path / "d.jsonl"
    code = main(
        [*SHORT, "--policies", "greenllm", "--json", "--plot", str(tmp_path / "p.png"), "--decisions-out",
         str(decisions)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "greenllm" in json.loads(captured.out)["policies"], "the results are printed"
    assert decisions.read_text().strip(), "the decisions are written"
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("greenllm simulate: error: --plot ") and "ran out of memory" in line


def test_simulate_runs_without_tqdm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The container image installs without the [sim] extra: no progress bar, same results.
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    assert main([*SHORT, "--policies", "static", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policies"]["static"]["energy_kwh"] > 0
