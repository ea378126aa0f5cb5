"""Helpers of the simulator tests: a small, round-numbered performance source and spec (a uniquely named
module, so importing it never picks up another directory's conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greenllm.api.v1alpha1 import GpuSpec, GreenModelSpec, Power, Variant
from greenllm.core.performance import PowerSetting, ReplicaPerformance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-h100.yaml"


def perf(
    prompt: float = 1000.0, output: float = 100.0, idle: float = 100.0, busy: float = 500.0
) -> ReplicaPerformance:
    return ReplicaPerformance(
        output_tokens_per_s=output,
        prompt_tokens_per_s=prompt,
        prefill_power_w=busy,
        decode_curve=((0.0, idle), (output, busy)),
    )


class FakeSource:
    """Variant `hq` at 1x speed, `fast` at 2x; a 300 W cap costs 20% speed and saves power."""

    def power_settings(self, gpu: GpuSpec, power: Power) -> tuple[PowerSetting, ...]:
        return (PowerSetting(), PowerSetting(limit_w=300.0))

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
