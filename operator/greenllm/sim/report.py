"""Per-policy totals, ratios and the text table of `greenllm simulate`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from greenllm.sim.engine import PolicyRun

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Summary:
    energy_kwh: float
    joules_per_token: float | None  # per token served, prompt and output
    joules_per_output_token: float | None
    carbon_g: float
    slo_attainment: float  # tokens served within the latency SLO / tokens that arrived
    tokens_served: float
    prompt_tokens_served: float
    output_tokens_served: float
    tokens_unserved: float
    quality_weighted_tokens: float
    changes: int
    peak_replicas: int
    mean_replicas: float
    mean_power_w: float

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def summarize(run: PolicyRun, carbon_g_per_kwh: float, tokens_arrived: float) -> Summary:
    served = run.prompt_served + run.output_served
    on_time = run.prompt_on_time + run.output_on_time
    kwh = run.energy_j / J_PER_KWH
    seconds = run.steps * run.step_s
    return Summary(
        energy_kwh=kwh,
        joules_per_token=run.energy_j / served if served > 0 else None,
        joules_per_output_token=run.energy_j / run.output_served if run.output_served > 0 else None,
        carbon_g=kwh * carbon_g_per_kwh,
        slo_attainment=min(on_time / tokens_arrived, 1.0) if tokens_arrived > 0 else 1.0,  # float noise
        tokens_served=served,
        prompt_tokens_served=run.prompt_served,
        output_tokens_served=run.output_served,
        tokens_unserved=run.prompt_unserved + run.output_unserved,
        quality_weighted_tokens=run.quality_weighted_tokens,
        changes=run.changes,
        peak_replicas=run.peak_replicas,
        mean_replicas=float(run.ready_replicas.mean()) if run.steps else 0.0,
        mean_power_w=run.energy_j / seconds if seconds > 0 else 0.0,
    )


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


_COLUMNS = (
    ("policy", "{:<9}", None),
    ("energy kWh", "{:>11.4f}", "energy_kwh"),
    ("J/token", "{:>9.4f}", "joules_per_token"),
    ("carbon g", "{:>10.1f}", "carbon_g"),
    ("SLO met", "{:>8.2%}", "slo_attainment"),
    ("tokens served", "{:>14.4g}", "tokens_served"),
    ("quality-wtd tokens", "{:>19.4g}", "quality_weighted_tokens"),
    ("changes", "{:>8d}", "changes"),
    ("peak repl", "{:>10d}", "peak_replicas"),
    ("mean repl", "{:>10.2f}", "mean_replicas"),
    ("mean W", "{:>9.0f}", "mean_power_w"),
)


def table(summaries: Mapping[str, Summary], subject: str = "greenllm") -> str:
    header = " ".join(
        f"{title:<9}" if attr is None else title.rjust(len(fmt.format(0 if "d" in fmt else 0.0)))
        for title, fmt, attr in _COLUMNS
    )
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        cells = []
        for _, fmt, attr in _COLUMNS:
            if attr is None:
                cells.append(fmt.format(name))
                continue
            value = getattr(s, attr)
            width = len(fmt.format(0 if "d" in fmt else 0.0))
            cells.append("-".rjust(width) if value is None else fmt.format(value))
        lines.append(" ".join(cells))
    rel = ratios(summaries, subject)
    if rel:
        lines.append("")
        lines.append(
            f"{subject} energy / "
            + ", ".join(f"{name}: {'-' if r is None else f'{r:.3f}x'}" for name, r in rel.items())
        )
    return "\n".join(lines)
