"""`greenllm simulate --budget`: a team of GreenModels under one EnergyBudget, shared vs a fixed split, on
short slices of the shipped trace with the real energy model and step."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from simkit import EXAMPLE

from greenllm.api.energybudget import EnergyBudget
from greenllm.api.v1alpha1 import Budget, GreenModel, OnExhausted
from greenllm.sim import team
from greenllm.sim.command import build_parser, main, simulate
from greenllm.sim.policies import SimulationError
from greenllm.sim.trace import load_trace


def write_model(tmp: Path, name: str, labels: dict[str, str] | None = None, **spec: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name, "namespace": "default", "labels": labels or {"team": "search"}}
    doc["spec"].update(spec)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def write_budget(tmp: Path, selector: dict[str, Any] | None = None, **spec: Any) -> Path:
    doc = {
        "apiVersion": "greenllm.io/v1alpha1",
        "kind": "EnergyBudget",
        "metadata": {"name": "search", "namespace": "default"},
        "spec": {
            "selector": selector if selector is not None else {"matchLabels": {"team": "search"}},
            **spec,
        },
    }
    path = tmp / "budget.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def team_args(tmp: Path, budget: Path, *extra: str) -> list[str]:
    return [
        "--model", str(write_model(tmp, "chat")), "--model", str(write_model(tmp, "code")),
        "--budget", str(budget), "--start", "10m", "--duration", "4m", "--no-progress", *extra,
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ pieces


def test_rotation_keeps_the_requests_and_moves_the_load() -> None:
    trace = load_trace().window(0.0, 600.0)
    moved = team.rotated(trace, 120.0)
    assert len(moved) == len(trace) and moved.duration_s == trace.duration_s
    assert moved.total_output_tokens == pytest.approx(trace.total_output_tokens)
    assert np.all(np.diff(moved.arrival_s) >= 0)
    # What arrived at 120 s now arrives at 0 s; what arrived before 120 s comes at the end.
    first = trace.arrival_s[trace.arrival_s >= 120.0][0]
    assert moved.arrival_s[0] == pytest.approx(first - 120.0)
    assert team.rotated(trace, 0.0) is trace


def test_member_trace_options_parse_and_bad_ones_are_refused() -> None:
    opts = team.parse_member_trace("offset=20m,scale=2.5,mode=shifted,trace=x.csv")
    assert opts == team.TraceOptions(Path("x.csv"), 1200.0, 2.5, "shifted")
    assert team.parse_member_trace("") == team.TraceOptions()
    for bad, why in [
        ("scale=0", "must be > 0"),
        ("scale=two", "not a number"),
        ("offset=soon", "offset"),
        ("mode=loud", "one of"),
        ("speed=2", "key=value"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            team.parse_member_trace(bad)


def test_effective_spec_lowers_the_power_budget_to_the_allocation_tightest_wins() -> None:
    spec = GreenModel.model_validate(yaml.safe_load(EXAMPLE.read_text())).spec
    team_budget = Budget(power_w=2000, on_exhausted=OnExhausted.CAP_REPLICAS)
    lowered = team.effective_spec(spec, 700.0, team_budget)
    assert lowered.budget.power_w == 700.0
    assert lowered.budget.on_exhausted is OnExhausted.CAP_REPLICAS
    own = spec.model_copy(update={"budget": Budget(power_w=500)})
    assert team.effective_spec(own, 700.0, team_budget) is own  # its own budget is tighter
    assert team.effective_spec(spec, math.inf, team_budget) is spec


def test_the_fixed_split_is_an_equal_share_of_every_limit() -> None:
    spec = GreenModel.model_validate(yaml.safe_load(EXAMPLE.read_text())).spec
    team_budget = Budget(power_w=3000, energy_kwh=30, period="12h")
    split = team.split_spec(spec, team_budget, 3)
    assert (split.budget.power_w, split.budget.energy_kwh, split.budget.carbon_grams) == (1000, 10, None)
    assert split.budget.period == "12h"
    own = spec.model_copy(update={"budget": Budget(power_w=600)})
    assert team.split_spec(own, team_budget, 3).budget.power_w == 600


def _models(tmp: Path, *labels: dict[str, str]) -> list[tuple[Path, GreenModel]]:
    out = []
    for i, lab in enumerate(labels):
        path = write_model(tmp, f"m{i}", lab)
        out.append((path, GreenModel.model_validate(yaml.safe_load(path.read_text()))))
    return out


def test_the_budget_must_cover_every_model_given(tmp_path: Path) -> None:
    budget = EnergyBudget.model_validate(yaml.safe_load(write_budget(tmp_path, powerW=1000).read_text()))
    assert team.covered_members(budget, _models(tmp_path, {"team": "search"}, {"team": "search"})) == [
        "default/m0",
        "default/m1",
    ]
    with pytest.raises(SimulationError, match="selects none of the GreenModels"):
        team.covered_members(budget, _models(tmp_path, {"team": "ads"}))
    with pytest.raises(SimulationError, match=r"does not cover: .*m1"):
        team.covered_members(budget, _models(tmp_path, {"team": "search"}, {"team": "ads"}))
    everyone = EnergyBudget.model_validate(
        yaml.safe_load(write_budget(tmp_path, selector={}, powerW=1000).read_text())
    )
    assert len(team.covered_members(everyone, _models(tmp_path, {"a": "b"}, {"c": "d"}))) == 2


# ------------------------------------------------------------------------------------------ the runs


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("team")
    return simulate(build_parser().parse_args(team_args(tmp, write_budget(tmp, powerW=1e6))))


def test_a_budget_that_never_binds_changes_nothing(unlimited: dict[str, Any]) -> None:
    # The shared arm's wrapper (effective spec, frontier reports, lockstep) is the plain loop when the
    # allocation never binds: every number of every member equals the split's.
    for key, m in unlimited["members"].items():
        assert m["shared"] == m["split"], key
    assert unlimited["team"]["shared"] == unlimited["team"]["split"]
    assert unlimited["over_split"]["shared"]["requests_within_slo"] == 0.0


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("team")
    args = team_args(
        tmp, write_budget(tmp, powerW=900), "--member-trace", "scale=3", "--member-trace", "scale=1"
    )
    return simulate(build_parser().parse_args(args))


def test_a_tight_budget_is_divided_within_the_allowance_every_interval(tight: dict[str, Any]) -> None:
    b = tight["budget"]["shared"]
    assert b["intervals"] >= 15
    assert b["intervals_over_allowance"] == 0
    assert b["allowance_w_max"] == 900
    # The member with three times the load never gets less than the fixed split's half and at times more,
    # the other never more and at times less: the budget goes where the demand is.
    chat, code = b["allocation_w_range"]["default/chat"], b["allocation_w_range"]["default/code"]
    assert chat[0] >= 450 and chat[1] > 450
    assert code[1] <= 450 and code[0] < 450
    assert set(tight["team"]) == {"shared", "split", "shared-same-energy"}
    for arm in tight["team"].values():
        assert arm["requests"] == sum(m["requests"] for m in tight["members"].values())
    # The same-energy arm really is at the split's energy (or under it, when even no cap reaches it).
    same = tight["team"]["shared-same-energy"]["energy_kwh"]
    assert same <= tight["team"]["split"]["energy_kwh"] * (1 + team.SAME_ENERGY_TOLERANCE)


def test_the_lockstep_run_is_deterministic(tight: dict[str, Any], tmp_path: Path) -> None:
    # The members' threads may reach the coordinator in any order: the numbers must not depend on it.
    args = team_args(
        tmp_path, write_budget(tmp_path, powerW=900), "--member-trace", "scale=3", "--member-trace", "scale=1"
    )
    again = simulate(build_parser().parse_args(args))
    assert again["team"] == tight["team"]
    assert again["budget"] == tight["budget"]


def test_the_report_names_the_arms_and_the_gain(tight: dict[str, Any]) -> None:
    text = team.report_text(tight)
    assert "EnergyBudget default/search: powerW 900 W" in text
    for arm in ("shared", "split", "shared-same-energy"):
        assert f" {arm} " in text
    assert "shared-same-energy vs split: requests within SLO" in text
    assert "budget (shared):" in text
    json.dumps(tight)  # the --json result is JSON


# ------------------------------------------------------------------------------------------ bad input


def one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_several_models_need_a_budget(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = one_line_error(
        capsys, ["--model", str(write_model(tmp_path, "a")), "--model", str(write_model(tmp_path, "b"))]
    )
    assert "several GreenModels need --budget" in line
    line = one_line_error(capsys, ["--model", str(EXAMPLE), "--member-trace", "scale=2"])
    assert "--member-trace needs --budget" in line


def test_a_file_without_a_greenmodel_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    budget = write_budget(tmp_path, powerW=1000)
    two = tmp_path / "two.yaml"
    two.write_text(budget.read_text() + "---\n" + budget.read_text())
    line = one_line_error(capsys, ["--budget", str(budget), "--model", str(two), "--no-progress"])
    assert "two.yaml: 2 YAML documents and none of kind GreenModel" in line


def test_a_budget_selecting_nothing_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    budget = write_budget(tmp_path, selector={"matchLabels": {"team": "ads"}}, powerW=1000)
    line = one_line_error(capsys, team_args(tmp_path, budget))
    assert "selects none of the GreenModels given" in line


def test_a_bad_budget_file_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(team_args(tmp_path, write_budget(tmp_path, powerW=-5))) == 2
    err = capsys.readouterr().err
    assert "invalid EnergyBudget" in err and "budget.yaml line" in err and "spec.powerW" in err
    empty = write_budget(tmp_path)  # no limit at all
    assert main(team_args(tmp_path, empty)) == 2
    assert "at least one of powerW" in capsys.readouterr().err


def test_members_must_share_the_interval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    slow = write_model(tmp_path, "slow", scaling={"interval": "30s"})
    args = [
        "--model", str(write_model(tmp_path, "fast")), "--model", str(slow),
        "--budget", str(write_budget(tmp_path, powerW=1000)), "--duration", "2m", "--no-progress",
    ]  # fmt: skip
    assert "share spec.scaling.interval" in one_line_error(capsys, args)


def test_more_member_traces_than_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = team_args(tmp_path, write_budget(tmp_path, powerW=1000), *["--member-trace", "scale=1"] * 3)
    assert "3 --member-trace for 2 GreenModels" in one_line_error(capsys, args)


def test_one_file_may_hold_the_whole_team(tmp_path: Path) -> None:
    # As `kubectl apply -f` takes it: the budget and both GreenModels in one file, given to both flags.
    docs = [yaml.safe_load(write_budget(tmp_path, powerW=1e6).read_text())]
    for name in ("chat", "code"):
        docs.append(yaml.safe_load(write_model(tmp_path, name).read_text()))
    team_file = tmp_path / "team.yaml"
    team_file.write_text(yaml.safe_dump_all(docs))
    args = ["--budget", str(team_file), "--model", str(team_file), "--duration", "2m", "--no-progress"]
    result = simulate(build_parser().parse_args(args))
    assert list(result["members"]) == ["default/chat", "default/code"]
    assert "from 1 min" in result["members"]["default/code"]["trace"]  # the second of two: half-way


def test_single_model_flags_are_refused_in_team_mode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    budget = write_budget(tmp_path, powerW=1000)
    for extra, named in [
        (["--policies", "static"], "--policies"),
        (["--sensitivity"], "--sensitivity"),
        (["--scale-to-peak-replicas", "4"], "--scale-to-peak-replicas"),
        (["--plot", str(tmp_path / "p.png")], "--plot"),
    ]:
        line = one_line_error(capsys, team_args(tmp_path, budget, *extra))
        assert named in line and "not with --budget" in line
