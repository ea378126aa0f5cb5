"""Helpers of the simulator tests: a small, round-numbered performance source and spec, tiny traces and
scenarios, and a scripted policy (a uniquely named module, so importing it never picks up another
directory's conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.sim.engine import Scenario
from greenllm.sim.fleet import FleetTarget, RolloutStrategy
from greenllm.sim.policies import DecisionLog, PerfTable, Policy, Truth
from greenllm.sim.telemetry import PrometheusView
from greenllm.sim.trace import Trace

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-h100.yaml"
DEFAULT = PowerSetting()
CAPPED = PowerSetting(limit_w=300.0)


def perf(
    prompt: float = 1000.0, output: float = 100.0, idle: float = 100.0, busy: float = 500.0
) -> ReplicaPerformance:
    """A replica whose decode step is 10 / output s at batch 1 and 50 / output s at batch 50 (so `output`
    tokens/s at batch 50), drawing `idle` + 20% of the way to `busy` at batch 1 and `busy` at batch 50."""
    return ReplicaPerformance(
        output_tokens_per_s=output,
        prompt_tokens_per_s=prompt,
        prefill_power_w=busy,
        decode_curve=((0.0, idle), (output, busy)),
        batch_curve=((1.0, 10.0 / output, idle + 0.2 * (busy - idle)), (50.0, 50.0 / output, busy)),
    )


class FakeSource:
    """Variant `hq` at 1x speed, `fast` at 2x; a 300 W cap costs 20% speed and saves power.

    hq at default power: 10,000 prompt tokens/s at 500 W, a decode step of 10 ms at batch 1 (180 W).
    """

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        return (DEFAULT, CAPPED)

    def performance(
        self, spec: GreenModelSpec, variant: Variant, setting: PowerSetting
    ) -> ReplicaPerformance:
        speed = 2.0 if variant.name == "fast" else 1.0
        capped = setting.limit_w is not None
        factor = 0.8 if capped else 1.0
        return perf(10_000.0 * speed * factor, 1000.0 * speed * factor, 100.0, 300.0 if capped else 500.0)


def spec_dict(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "m", "paramsBillions": 8},
        "variants": [
            {"name": "hq", "precision": "bf16", "image": "i", "quality": 1.0},
            {"name": "fast", "precision": "fp8", "image": "i", "quality": 0.99},
        ],
        "slo": {"minQuality": 0.97, "ttftP90Ms": 2000},
        "replicas": {"min": 1, "max": 8},
    }
    spec.update(overrides)
    return spec


def make_trace(
    arrival: ArrayLike, prompt: ArrayLike, output: ArrayLike, duration: float | None = None
) -> Trace:
    """A trace of the given requests (scalars are repeated for every request)."""
    t = np.asarray(arrival, dtype=np.float64)
    p = np.broadcast_to(np.asarray(prompt, dtype=np.float64), t.shape).copy()
    o = np.broadcast_to(np.asarray(output, dtype=np.float64), t.shape).copy()
    last = float(t.max()) if t.size else 0.0
    return Trace("synthetic", 1_700_000_000.0, t, p, o, last if duration is None else duration)


def bursty_trace(seconds: int = 60, period: int = 15, burst: int = 24, seed: int = 7) -> Trace:
    """A light background (one small request a second) and, every `period` s, `burst` large prompts
    within 0.3 s."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    prompts: list[float] = []
    outputs: list[float] = []
    for s in range(seconds):
        times.append(s + 0.5)
        prompts.append(500.0)
        outputs.append(20.0)
        if s % period == 2:
            times += (s + rng.uniform(0.0, 0.3, burst)).tolist()
            prompts += rng.integers(2000, 6000, burst).astype(float).tolist()
            outputs += rng.integers(2, 40, burst).astype(float).tolist()
    order = np.argsort(times, kind="stable")
    return make_trace(
        np.asarray(times)[order], np.asarray(prompts)[order], np.asarray(outputs)[order], float(seconds)
    )


def scenario(spec: GreenModelSpec, trace: Trace, **kwargs: Any) -> Scenario:
    """A scenario on FakeSource with 8 GPUs; hq and fast keep each decode step with a full prompt chunk
    within the 50 ms TPOT SLO (a 256-token chunk: 26 ms at hq's 10,000 tokens/s)."""
    kwargs.setdefault("gpus", 8)
    kwargs.setdefault("startup_s", 30.0)
    kwargs.setdefault("strategy", RolloutStrategy(probe_period_s=10.0))
    kwargs.setdefault("token_budgets", {"hq": 256, "fast": 512})
    return Scenario(spec=spec, trace=trace, perf=PerfTable(spec, FakeSource()), **kwargs)


class Scripted(Policy):
    """Targets given in advance: `initial`, then `changes[t]` from decision time t on."""

    def __init__(
        self,
        initial: FleetTarget,
        changes: dict[float, FleetTarget] | None = None,
        *,
        interval_s: float = 1.0,
        instant: bool = False,
        name: str = "scripted",
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.instant = instant
        self._initial = initial
        self._changes = sorted((changes or {}).items())

    def initial(self) -> FleetTarget:
        return self._initial

    def decide(self, now: float, view: PrometheusView, truth: Truth | None) -> DecisionLog:
        target = self._initial
        for t, change in self._changes:
            if now + 1e-9 >= t:
                target = change
        return DecisionLog(now, target, None, None, "scripted")
