"""PNG of demand, replicas, variant and power over time (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from greenllm.sim.engine import PolicyRun
from greenllm.sim.trace import FloatArray

COLORS = {"greenllm": "tab:green", "static": "tab:gray", "hpa": "tab:blue", "oracle": "tab:orange"}


def _smooth(values: FloatArray, width: int) -> FloatArray:
    if width <= 1 or len(values) < width:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="same")


def write_plot(
    path: Path,
    runs: Mapping[str, PolicyRun],
    demand_prompt: FloatArray,
    demand_output: FloatArray,
    variants_by_quality: Sequence[str],
    step_s: float,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = len(demand_prompt)
    minutes = np.arange(steps) * step_s / 60.0
    smooth = max(1, round(60.0 / step_s))  # one-minute moving average for the busy series
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True)
    ax = axes[0]
    ax.plot(
        minutes, demand_prompt / step_s, color="tab:purple", alpha=0.25, lw=0.6, label="prompt (per step)"
    )
    ax.plot(
        minutes, _smooth(demand_prompt / step_s, smooth), color="tab:purple", lw=1.4, label="prompt (1 min)"
    )
    ax.plot(minutes, _smooth(demand_output / step_s, smooth), color="tab:red", lw=1.4, label="output (1 min)")
    ax.set_ylabel("demand, tokens/s")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[1]
    for name, run in runs.items():
        ax.step(minutes, run.ready_replicas, where="post", color=COLORS.get(name), lw=1.1, label=name)
    ax.set_ylabel("ready replicas")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[2]
    index = {v: i for i, v in enumerate(variants_by_quality)}
    for name in ("oracle", "greenllm"):
        if name in runs:
            y = [index.get(v, -1) for v in runs[name].target_variant]
            ax.step(
                minutes,
                y,
                where="post",
                color=COLORS[name],
                lw=1.2 if name == "greenllm" else 0.6,
                alpha=1.0 if name == "greenllm" else 0.5,
                label=f"{name} variant",
            )
    ax.set_yticks(range(len(variants_by_quality)), list(variants_by_quality))
    ax.set_ylabel("variant")
    if "greenllm" in runs:
        twin = ax.twinx()
        limit = runs["greenllm"].target_limit_w
        twin.step(minutes, limit, where="post", color="black", ls="--", lw=0.8, label="greenllm W/GPU limit")
        twin.set_ylabel("power limit, W/GPU (gaps: default)")
        twin.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[3]
    for name, run in runs.items():
        ax.plot(minutes, _smooth(run.power_w, smooth), color=COLORS.get(name), lw=1.1, label=name)
    ax.set_ylabel("fleet power, W (1 min)")
    ax.set_xlabel("minutes from trace start")
    ax.legend(loc="upper right", fontsize=8)

    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
