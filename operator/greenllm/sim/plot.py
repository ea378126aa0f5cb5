"""PNG of one simulated comparison (matplotlib, Agg backend, no display needed).

Top to bottom, on one time axis: prompt demand, output demand (its own axis: it is two orders of magnitude
below the prompt's), ready replicas, greenllm's variant, its per-GPU power limit, fleet power; then the
totals of the scored window: energy (kWh) and SLO attainment per policy.

greenllm is drawn last and thickest; `instant` (resized every second with no start-up, shown for scale) is
left out of the replica panel, where its per-second steps would cover the others, and drawn thin and faint
in the power panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from greenllm.sim.engine import PolicyRun
from greenllm.sim.report import Summary
from greenllm.sim.trace import FloatArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLORS = {
    "greenllm": "tab:green",
    "static": "tab:gray",
    "best-static": "tab:brown",
    "hpa": "tab:blue",
    "clairvoyant": "tab:orange",
    "instant": "tab:pink",
}
SUBJECT = "greenllm"
FAINT = ("instant",)  # drawn thin and faint; left out of the replica panel
PANELS = (
    "prompt demand",
    "output demand",
    "ready replicas",
    "variant",
    "power limit",
    "fleet power",
    "energy",
    "SLO attainment",
)


def _smooth(values: FloatArray, width: int) -> FloatArray:
    if width <= 1 or len(values) < width:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="same")


def _order(runs: Mapping[str, PolicyRun]) -> list[str]:
    """Baselines first, the subject last (on top)."""
    return [n for n in runs if n != SUBJECT] + ([SUBJECT] if SUBJECT in runs else [])


def _style(name: str) -> dict[str, object]:
    if name == SUBJECT:
        return {"color": COLORS[name], "lw": 1.8, "alpha": 1.0, "zorder": 3}
    if name in FAINT:
        return {"color": COLORS.get(name, "tab:pink"), "lw": 0.7, "alpha": 0.6, "zorder": 1}
    return {"color": COLORS.get(name), "lw": 1.0, "alpha": 0.85, "zorder": 2}


def _legend(ax: Axes, **kwargs: object) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7.5, frameon=False, **kwargs)


def _bars(ax: Axes, names: list[str], values: list[float], labels: list[str], ylabel: str) -> None:
    colors = [COLORS.get(n, "tab:olive") for n in names]
    bars = ax.bar(names, values, color=colors, alpha=0.85)
    for bar, label in zip(bars, labels, strict=True):
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    ax.margins(y=0.3)


def build_figure(
    runs: Mapping[str, PolicyRun],
    demand_prompt: FloatArray,
    demand_output: FloatArray,
    variants_by_quality: Sequence[str],
    step_s: float,
    title: str,
    summaries: Mapping[str, Summary],
    slo_target: float | None = None,
) -> Figure:
    """The figure (not saved): each axis carries its panel name in `PANELS` as its label (`get_label`)."""
    from matplotlib.figure import Figure

    steps = len(demand_prompt)
    minutes = np.arange(steps) * step_s / 60.0
    smooth = max(1, round(60.0 / step_s))  # one-minute moving average for the busy series
    order = _order(runs)

    fig = Figure(figsize=(13, 17))
    grid = fig.add_gridspec(8, 2, height_ratios=[1.1, 1.0, 1.2, 0.7, 0.8, 1.3, 0.15, 1.3], hspace=0.35)
    time_axes: list[Axes] = []
    for row in range(6):
        ax = fig.add_subplot(grid[row, :], sharex=time_axes[0] if time_axes else None)
        ax.set_label(PANELS[row])
        ax.grid(alpha=0.25)
        time_axes.append(ax)
    for ax in time_axes[:-1]:
        ax.tick_params(labelbottom=False)

    ax = time_axes[0]
    prompt = demand_prompt / step_s
    ax.plot(minutes, prompt, color="tab:purple", alpha=0.25, lw=0.5, label="per step")
    ax.plot(minutes, _smooth(prompt, smooth), color="tab:purple", lw=1.4, label="1 min mean")
    ax.set_ylabel("prompt demand,\ntokens/s")
    _legend(ax)

    ax = time_axes[1]
    output = demand_output / step_s
    ax.plot(minutes, output, color="tab:red", alpha=0.25, lw=0.5, label="per step")
    ax.plot(minutes, _smooth(output, smooth), color="tab:red", lw=1.4, label="1 min mean")
    ax.set_ylabel("output demand,\ntokens/s")
    _legend(ax)

    ax = time_axes[2]
    for name in order:
        if name in FAINT:
            continue
        ax.step(minutes, runs[name].ready_replicas, where="post", label=name, **_style(name))  # type: ignore[arg-type]
    ax.set_ylabel("ready replicas")
    left_out = [n for n in order if n in FAINT]
    _legend(ax, title=f"not shown: {', '.join(left_out)}" if left_out else None, title_fontsize=7)

    ax = time_axes[3]
    index = {v: i for i, v in enumerate(variants_by_quality)}
    for name in ("clairvoyant", SUBJECT):
        if name in runs and runs[name].target_variant:
            y = [index.get(v, np.nan) for v in runs[name].target_variant]
            ax.step(minutes[: len(y)], y, where="post", label=name, **_style(name))  # type: ignore[arg-type]
    ax.set_yticks(range(len(variants_by_quality)), list(variants_by_quality))
    ax.set_ylim(-0.5, len(variants_by_quality) - 0.5)
    ax.set_ylabel("variant\n(quality ↑)")
    _legend(ax)

    ax = time_axes[4]
    for name in ("clairvoyant", SUBJECT):
        if name in runs and len(runs[name].target_limit_w):
            limit = np.asarray(runs[name].target_limit_w, dtype=float)
            limit = np.where(limit > 0, limit, np.nan)
            ax.step(minutes[: len(limit)], limit, where="post", label=name, **_style(name))  # type: ignore[arg-type]
    ax.set_ylabel("power limit,\nW/GPU")
    ax.text(0.995, 0.04, "gaps: GPU default", transform=ax.transAxes, ha="right", fontsize=7, alpha=0.7)
    _legend(ax)

    ax = time_axes[5]
    for name in order:
        ax.plot(minutes, _smooth(runs[name].power_w, smooth) / 1000.0, label=name, **_style(name))  # type: ignore[arg-type]
    ax.set_ylabel("fleet power, kW\n(1 min mean)")
    ax.set_xlabel("minutes from the start of the scored window")
    _legend(ax)

    names = [n for n in ([SUBJECT] + [n for n in runs if n != SUBJECT]) if n in summaries]
    energy_ax = fig.add_subplot(grid[7, 0])
    energy_ax.set_label("energy")
    kwh = [summaries[n].energy_kwh for n in names]
    per_token = [summaries[n].joules_per_output_token for n in names]
    labels = [
        f"{e:.2f}" + ("" if j is None else f"\n{j:.2f} J/out tok")
        for e, j in zip(kwh, per_token, strict=True)
    ]
    _bars(energy_ax, names, kwh, labels, "energy, kWh")
    energy_ax.set_title("energy over the scored window (label: kWh, J per output token)", fontsize=9)
    slo_ax = fig.add_subplot(grid[7, 1])
    slo_ax.set_label("SLO attainment")
    shares = [100.0 * summaries[n].slo_attainment for n in names]
    _bars(slo_ax, names, shares, [f"{a:.1f}%" for a in shares], "SLO attainment, %")
    slo_ax.set_title("requests meeting both TTFT and TPOT SLOs", fontsize=9)
    low = min([*shares, 100.0 * (slo_target or 1.0)])
    slo_ax.set_ylim(max(0.0, low - 5.0), 104.0)
    if slo_target is not None:
        slo_ax.axhline(100.0 * slo_target, color="black", ls="--", lw=0.8)
        slo_ax.set_title(
            f"requests meeting both TTFT and TPOT SLOs (dashed: target {slo_target:.0%})", fontsize=9
        )

    fig.suptitle(title, y=0.995)
    fig.subplots_adjust(left=0.08, right=0.88, top=0.97, bottom=0.05)
    return fig


def write_plot(
    path: Path,
    runs: Mapping[str, PolicyRun],
    demand_prompt: FloatArray,
    demand_output: FloatArray,
    variants_by_quality: Sequence[str],
    step_s: float,
    title: str,
    summaries: Mapping[str, Summary],
    slo_target: float | None = None,
) -> None:
    fig = build_figure(
        runs, demand_prompt, demand_output, variants_by_quality, step_s, title, summaries, slo_target
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
