"""Per-policy results as users judge them (per request, TTFT and TPOT both), ratios and the text table."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greenllm.sim.engine import PolicyRun

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Summary:
    energy_kwh: float
    joules_per_token: float | None  # per token served, prompt and output
    joules_per_output_token: float | None
    carbon_g: float
    slo_attainment: float  # requests meeting both the TTFT and the TPOT SLO / requests that arrived
    ttft_attainment: float
    tpot_attainment: float
    token_share_on_time: float  # tokens of requests meeting both SLOs / tokens that arrived (secondary)
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    minutes_p90_ok: float  # active minutes whose p90 TTFT and p90 TPOT are both within the SLO
    tokens_served: float
    quality_weighted_tokens: float
    changes: int
    peak_replicas: int
    mean_replicas: float
    mean_power_w: float
    fast_switches: int = 0
    burst_share: float = 0.0  # share of ready replica-seconds at the burst setting
    peak_gpus: int = 0  # most GPUs held at once (a variant's gpuCount per pod)
    energy_split_kwh: dict[str, float] = field(default_factory=dict)
    # Share of the replica-seconds the policy asked for, per variant: which variants it ran, and how much.
    variant_share: dict[str, float] = field(default_factory=dict)
    # The highest fleet power (every pod holding GPUs: ready, starting, draining) averaged over a sliding
    # window of 1 s, 15 s and 1 min: what a power budget (`budget.powerW`) or a circuit must hold.
    peak_power_1s_w: float = 0.0
    peak_power_15s_w: float = 0.0
    peak_power_60s_w: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def request_outcomes(run: PolicyRun, ttft_slo_s: float, tpot_slo_s: float) -> tuple[Any, Any, Any]:
    """Per request: TTFT met, TPOT met (a one-token request has no TPOT: met once it finished), both."""
    ttft_ok = np.nan_to_num(run.ttft_s, nan=np.inf) <= ttft_slo_s + 1e-9
    no_tpot = np.isnan(run.tpot_s) & run.finished & (run.output_tokens <= 1.0)
    tpot_ok = no_tpot | (np.nan_to_num(run.tpot_s, nan=np.inf) <= tpot_slo_s + 1e-9)
    return ttft_ok, tpot_ok, ttft_ok & tpot_ok


def _pct(values: Any, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else None


def _minutes_ok(run: PolicyRun, ttft_slo_s: float, tpot_slo_s: float) -> float:
    """Share of minutes with arrivals whose requests' p90 TTFT and p90 TPOT are within the SLO (a request
    that never got its first token counts as infinitely late)."""
    if run.arrival_s.size == 0:
        return 1.0
    minute = (run.arrival_s // 60.0).astype(np.int64)
    ttft = np.nan_to_num(run.ttft_s, nan=np.inf)
    tpot = np.where(np.isnan(run.tpot_s) & ~run.finished, np.inf, run.tpot_s)
    ok = 0
    minutes = np.unique(minute)
    for m in minutes:
        sel = minute == m
        # Nearest rank: the p90 is within the SLO when at least 90 % of the minute's requests are (no
        # interpolation, which would also mix a finite value with the infinity of an unserved request).
        t90 = np.percentile(ttft[sel], 90, method="inverted_cdf")
        tp = tpot[sel]
        tp = tp[~np.isnan(tp)]
        p90 = np.percentile(tp, 90, method="inverted_cdf") if tp.size else 0.0
        ok += int(t90 <= ttft_slo_s + 1e-9 and p90 <= tpot_slo_s + 1e-9)
    return ok / len(minutes)


def summarize(run: PolicyRun, carbon_g_per_kwh: float, ttft_slo_s: float, tpot_slo_s: float) -> Summary:
    ttft_ok, tpot_ok, both = request_outcomes(run, ttft_slo_s, tpot_slo_s)
    n = max(run.arrival_s.size, 1)
    tokens = run.prompt_tokens + run.output_tokens
    served = float(tokens[run.finished].sum())
    kwh = run.energy_j / J_PER_KWH
    seconds = run.steps * run.step_s
    ready_s = float(run.ready_replicas.sum()) * run.step_s
    return Summary(
        energy_kwh=kwh,
        joules_per_token=run.energy_j / served if served > 0 else None,
        joules_per_output_token=(
            run.energy_j / float(run.output_tokens[run.finished].sum()) if served > 0 else None
        ),
        carbon_g=kwh * carbon_g_per_kwh,
        slo_attainment=float(both.sum()) / n,
        ttft_attainment=float(ttft_ok.sum()) / n,
        tpot_attainment=float(tpot_ok.sum()) / n,
        token_share_on_time=float(tokens[both].sum() / tokens.sum()) if tokens.sum() > 0 else 1.0,
        ttft_p50_s=_pct(run.ttft_s, 50),
        ttft_p90_s=_pct(run.ttft_s, 90),
        ttft_p99_s=_pct(run.ttft_s, 99),
        tpot_p50_s=_pct(run.tpot_s, 50),
        tpot_p90_s=_pct(run.tpot_s, 90),
        tpot_p99_s=_pct(run.tpot_s, 99),
        minutes_p90_ok=_minutes_ok(run, ttft_slo_s, tpot_slo_s),
        tokens_served=served,
        quality_weighted_tokens=run.quality_weighted_tokens,
        changes=run.changes,
        peak_replicas=run.peak_replicas,
        mean_replicas=float(run.ready_replicas.mean()) if run.steps else 0.0,
        mean_power_w=run.energy_j / seconds if seconds > 0 else 0.0,
        fast_switches=run.fast_switches,
        burst_share=run.burst_replica_s / ready_s if ready_s > 0 else 0.0,
        peak_gpus=run.peak_gpus,
        energy_split_kwh={
            "warm_idle": run.energy_idle_j / J_PER_KWH,
            "starting": run.energy_starting_j / J_PER_KWH,
            "prefill": run.energy_prefill_j / J_PER_KWH,
            "decode": run.energy_decode_j / J_PER_KWH,
        },
        variant_share=variant_share(run),
        peak_power_1s_w=peak_mean_power_w(run.power_w, run.step_s, 1.0),
        peak_power_15s_w=peak_mean_power_w(run.power_w, run.step_s, 15.0),
        peak_power_60s_w=peak_mean_power_w(run.power_w, run.step_s, 60.0),
    )


PEAK_WINDOWS_S = (1.0, 15.0, 60.0)


def peak_mean_power_w(power_w: Any, step_s: float, window_s: float) -> float:
    """The highest mean of the per-step fleet power over any `window_s` of consecutive steps (at least one
    step; the whole run when it is shorter)."""
    values = np.asarray(power_w, dtype=float)
    if values.size == 0:
        return 0.0
    k = min(max(1, round(window_s / step_s)), values.size)
    sums = np.concatenate(([0.0], np.cumsum(values)))
    return float(((sums[k:] - sums[:-k]) / k).max())


def variant_share(run: PolicyRun) -> dict[str, float]:
    """Per variant, its share of the replica-seconds the policy asked for (target replicas per step)."""
    totals: dict[str, float] = {}
    for variant, replicas in zip(run.target_variant, run.target_replicas, strict=False):
        totals[variant] = totals.get(variant, 0.0) + float(replicas)
    whole = sum(totals.values())
    return {v: t / whole for v, t in sorted(totals.items())} if whole > 0 else {}


def ratios(summaries: Mapping[str, Summary], subject: str = "greenllm") -> dict[str, float | None]:
    """Energy of `subject` over each other policy's energy."""
    if subject not in summaries:
        return {}
    mine = summaries[subject].energy_kwh
    return {
        name: (mine / s.energy_kwh if s.energy_kwh > 0 else None)
        for name, s in summaries.items()
        if name != subject
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def peak_power_lines(summaries: Mapping[str, Summary], power_budget_w: float | None = None) -> list[str]:
    """Each policy's highest fleet power over 1 s / 15 s / 1 min, and against `budget.powerW` when set."""
    parts = [
        f"{name} {s.peak_power_1s_w:.0f} / {s.peak_power_15s_w:.0f} / {s.peak_power_60s_w:.0f}"
        for name, s in summaries.items()
    ]
    lines = textwrap.wrap(
        "peak fleet power, W (highest mean over 1 s / 15 s / 1 min): " + "; ".join(parts),
        96,
        break_on_hyphens=False,
    )
    if power_budget_w is not None and power_budget_w > 0:
        over = [
            f"{name} {s.peak_power_1s_w / power_budget_w:.0%} / {s.peak_power_60s_w / power_budget_w:.0%}"
            for name, s in summaries.items()
        ]
        lines += textwrap.wrap(
            f"against budget.powerW {power_budget_w:.0f} W (1 s / 1 min peak; only greenllm is held to it): "
            + "; ".join(over),
            96,
            break_on_hyphens=False,
        )
    return lines


def table(
    summaries: Mapping[str, Summary], subject: str = "greenllm", power_budget_w: float | None = None
) -> str:
    """The comparison, within 100 columns, with a legend."""
    header = (
        f"{'policy':<12} {'kWh':>7} {'SLO met':>8} {'TTFT ok':>8} {'TPOT ok':>8} {'TTFT p90':>9} "
        f"{'TPOT p90':>9} {'min ok':>7} {'J/tok':>7} {'repl':>6} {'chg':>5}"
    )
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        jt = "-" if s.joules_per_token is None else f"{s.joules_per_token:.3f}"
        lines.append(
            f"{name:<12} {s.energy_kwh:>7.3f} {s.slo_attainment:>8.2%} {s.ttft_attainment:>8.2%} "
            f"{s.tpot_attainment:>8.2%} {_ms(s.ttft_p90_s):>6} ms {_ms(s.tpot_p90_s):>6} ms "
            f"{s.minutes_p90_ok:>7.1%} {jt:>7} {s.mean_replicas:>6.2f} {s.changes:>5d}"
        )
    lines += [
        "",
        "SLO met: requests whose TTFT and TPOT are both within spec.slo; TTFT ok / TPOT ok: each alone;",
        "min ok: minutes with arrivals whose p90 TTFT and p90 TPOT are within the SLO; J/tok: energy per",
        "token served (prompt + output); repl: mean ready replicas; chg: decisions that changed the target.",
    ]
    lines += peak_power_lines(summaries, power_budget_w)
    rel = ratios(summaries, subject)
    if rel:
        parts = [f"{'-' if r is None else f'{r:.2f} x'} the energy of {name}" for name, r in rel.items()]
        lines += textwrap.wrap(f"{subject} uses " + ", ".join(parts), width=96)
    return "\n".join(lines)
