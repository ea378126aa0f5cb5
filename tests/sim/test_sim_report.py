"""Per-request outcomes, the per-minute p90 share, the summary, ratios and the text table (sim.report)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from greenllm.sim.engine import PolicyRun
from greenllm.sim.report import J_PER_KWH, Summary, ratios, request_outcomes, summarize, table

TTFT, TPOT = 2.0, 0.05
NAN = float("nan")


def make_run(
    arrival: list[float],
    ttft: list[float],
    tpot: list[float],
    output: list[float] | None = None,
    finished: list[bool] | None = None,
    **fields: float,
) -> PolicyRun:
    n = len(arrival)
    out = np.asarray(output if output is not None else [10.0] * n)
    run = PolicyRun("p", 60, 1.0, np.asarray(arrival, dtype=float), np.full(n, 100.0), out.astype(float))
    run.ttft_s = np.asarray(ttft, dtype=float)
    run.tpot_s = np.asarray(tpot, dtype=float)
    run.finished = (
        np.asarray(finished) if finished is not None else ~np.isnan(run.ttft_s) & ~np.isnan(run.tpot_s)
    )
    run.ready_replicas = np.full(run.steps, 2.0)
    for name, value in fields.items():
        setattr(run, name, value)
    return run


def test_request_outcomes_judge_each_request_on_both_slos() -> None:
    run = make_run(
        arrival=[0.0] * 6,
        ttft=[1.0, 1.0, NAN, 1.0, 1.0, 3.0],
        tpot=[0.04, NAN, NAN, NAN, 0.06, 0.04],
        output=[10.0, 1.0, 1.0, 10.0, 10.0, 10.0],
        finished=[True, True, False, False, True, True],
    )
    ttft_ok, tpot_ok, both = request_outcomes(run, TTFT, TPOT)
    # ok; one token, finished: no TPOT to miss; one token never served; first token but never finished;
    # slow decode; late first token.
    assert ttft_ok.tolist() == [True, True, False, True, True, False]
    assert tpot_ok.tolist() == [True, True, False, False, False, True]
    assert both.tolist() == [True, True, False, False, False, False]


def test_the_slo_edge_is_met() -> None:
    run = make_run([0.0], [TTFT], [TPOT])
    assert request_outcomes(run, TTFT, TPOT)[2].tolist() == [True]


def test_minutes_p90_ok_takes_each_minutes_p90() -> None:
    # p90 by nearest rank (a minute is within the SLO when 90 % of its requests are). Minute 0: all on
    # time. Minute 1: two of ten late, so its p90 is late. Minute 2: one of ten late: on time. Minute 3: TTFT
    # on time, two decodes in ten over the TPOT SLO: late. No arrival in minute 4: not counted.
    ttft = [0.1] * 10 + [0.1] * 8 + [5.0] * 2 + [0.1] * 9 + [5.0] + [0.1] * 10
    tpot = [0.01] * 30 + [0.01] * 8 + [0.09, 0.5]
    arrival = [m * 60.0 + k for m in range(4) for k in range(10)]
    run = make_run(arrival, ttft, tpot)
    assert summarize(run, 400.0, TTFT, TPOT).minutes_p90_ok == pytest.approx(2 / 4)


def test_minutes_p90_ok_of_a_minute_of_one_token_requests() -> None:
    run = make_run(
        [0.0, 1.0, 61.0], [0.1, 0.1, 3.0], [NAN, NAN, NAN], output=[1.0, 1.0, 1.0], finished=[True] * 3
    )
    assert summarize(run, 400.0, TTFT, TPOT).minutes_p90_ok == pytest.approx(1 / 2)


def test_a_minute_of_unserved_requests_is_a_miss_without_warnings() -> None:
    run = make_run([0.0, 1.0, 2.0], [0.1, NAN, NAN], [0.01, NAN, NAN])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert summarize(run, 400.0, TTFT, TPOT).minutes_p90_ok == 0.0


def test_summary_counts_energy_tokens_and_carbon() -> None:
    run = make_run(
        [0.0, 1.0, 2.0],
        [1.0, 1.0, NAN],
        [0.01, 0.01, NAN],
        energy_idle_j=1000.0,
        energy_starting_j=2000.0,
        energy_prefill_j=3000.0,
        energy_decode_j=4000.0,
        burst_replica_s=30.0,
    )
    s = summarize(run, 400.0, TTFT, TPOT)
    assert s.energy_kwh == pytest.approx(10_000.0 / J_PER_KWH)
    assert s.energy_split_kwh == pytest.approx(
        {
            k: v / J_PER_KWH
            for k, v in {"warm_idle": 1e3, "starting": 2e3, "prefill": 3e3, "decode": 4e3}.items()
        }
    )
    assert sum(s.energy_split_kwh.values()) == pytest.approx(s.energy_kwh)
    assert s.carbon_g == pytest.approx(s.energy_kwh * 400.0)
    assert s.tokens_served == 2 * (100.0 + 10.0)  # the unserved request's tokens are not served
    assert s.joules_per_token == pytest.approx(10_000.0 / 220.0)
    assert s.joules_per_output_token == pytest.approx(10_000.0 / 20.0)
    assert s.slo_attainment == pytest.approx(2 / 3)
    assert s.token_share_on_time == pytest.approx(2 / 3)
    assert s.mean_replicas == 2.0
    assert s.mean_power_w == pytest.approx(10_000.0 / 60.0)
    assert s.burst_share == pytest.approx(30.0 / 120.0)
    assert s.ttft_p90_s == pytest.approx(1.0) and s.tpot_p50_s == pytest.approx(0.01)


def test_summary_of_nothing_served() -> None:
    s = summarize(make_run([0.0], [NAN], [NAN]), 400.0, TTFT, TPOT)
    assert s.joules_per_token is None and s.ttft_p90_s is None and s.tpot_p90_s is None
    assert s.slo_attainment == 0.0 and s.tokens_served == 0.0 and s.minutes_p90_ok == 0.0


def summary(energy_kwh: float, attainment: float = 0.99) -> Summary:
    return Summary(
        energy_kwh=energy_kwh,
        joules_per_token=0.5,
        joules_per_output_token=1.0,
        carbon_g=1.0,
        slo_attainment=attainment,
        ttft_attainment=attainment,
        tpot_attainment=1.0,
        token_share_on_time=1.0,
        ttft_p50_s=0.1,
        ttft_p90_s=0.2,
        ttft_p99_s=0.3,
        tpot_p50_s=0.01,
        tpot_p90_s=0.02,
        tpot_p99_s=0.03,
        minutes_p90_ok=1.0,
        tokens_served=10.0,
        quality_weighted_tokens=10.0,
        changes=3,
        peak_replicas=4,
        mean_replicas=2.5,
        mean_power_w=100.0,
    )


def test_ratios_are_greenllms_energy_over_each_other() -> None:
    summaries = {"greenllm": summary(1.0), "static": summary(2.0), "hpa": summary(0.0)}
    assert ratios(summaries) == {"static": 0.5, "hpa": None}
    assert ratios({"static": summary(2.0)}) == {}
    assert ratios(summaries, subject="static") == {"greenllm": 2.0, "hpa": None}


def test_table_has_a_row_per_policy_the_legend_and_the_ratios() -> None:
    text = table({"greenllm": summary(1.0), "static": summary(2.0, attainment=0.5)})
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["policy", "kWh", "SLO", "met"]
    assert lines[2].split()[:3] == ["greenllm", "1.000", "99.00%"]
    assert lines[3].split()[:3] == ["static", "2.000", "50.00%"]
    assert any(line.startswith("SLO met: ") for line in lines)
    assert "greenllm uses 0.50 x the energy of static" in text
    assert max(len(line) for line in lines) <= 100


def test_the_table_of_every_policy_fits_100_columns() -> None:
    names = ["greenllm", "static", "best-static", "hpa", "clairvoyant", "instant"]
    text = table({name: summary(1.0 + i) for i, name in enumerate(names)})
    assert max(len(line) for line in text.splitlines()) <= 100
    for i, name in enumerate(names[1:], 2):
        assert f"{1 / i:.2f} x the energy of {name}" in " ".join(text.split())
