"""Load the shipped calibration CSVs (package data in `greenllm/data`) into a `Calibration`.

The only I/O of the energy model. Sources and licences of every file: `greenllm/data/ATTRIBUTION.md`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from functools import cache
from importlib import resources

from greenllm.core.energy import (
    Calibration,
    CapSweepPoint,
    ClockEvidence,
    EnergyModel,
    Fp8Ratio,
    GpuPowerLimits,
    GpuRecord,
    ProfileRow,
    QuantSpeedup,
)

GPUS = "gpus.csv"
PROFILES = "gpu_energy_profiles.csv"
FP8_RATIOS = "fp8_vs_bf16_mlenergy_v3_blog_summary.csv"
QUANT_SPEEDUPS = "quantization_speedups.csv"
CAP_SWEEPS = (
    "zeus_nsdi23_TRAINING_power_limit_sweep_a40.csv",
    "zeus_nsdi23_TRAINING_power_limit_sweep_v100.csv",
)
CONSTANTS = "model_constants.csv"


class CalibrationError(ValueError):
    """A shipped calibration file is malformed (names the file and line)."""


def _rows(name: str) -> Iterator[tuple[int, dict[str, str]]]:
    text = resources.files("greenllm").joinpath("data", name).read_text(encoding="utf-8")
    yield from enumerate(csv.DictReader(io.StringIO(text)), start=2)


def _float(value: str) -> float | None:
    value = value.strip()
    return float(value) if value else None


def _need(value: float | None, name: str, line: int, column: str) -> float:
    if value is None:
        raise CalibrationError(f"{name}:{line}: column {column!r} is empty")
    return value


def _percent_bucket(text: str) -> float:
    """'+30%' -> 1.30 (a ratio)."""
    return 1.0 + float(text.strip().rstrip("%")) / 100.0


def _precision(text: str) -> str | None:
    t = text.strip().lower()
    if t == "fp8":
        return "fp8"
    if t.startswith("bf16") or t == "fp16":
        return "bf16"
    return None


def _source_tag(source: str) -> str:
    if source.startswith("ML.ENERGY Leaderboard v3"):
        return "ML.ENERGY v3"
    if source.startswith("ML.ENERGY Leaderboard v2"):
        return "ML.ENERGY v2"
    return source.split(",")[0].strip()


def load_gpus() -> tuple[GpuRecord, ...]:
    out = []
    for line, r in _rows(GPUS):
        ref, low = _float(r["clock_ref_mhz"]), _float(r["clock_low_mhz"])
        time_change, energy_change = _float(r["clock_time_change_pct"]), _float(r["clock_energy_change_pct"])
        clock = None
        if ref is not None and low is not None and time_change is not None and energy_change is not None:
            clock = ClockEvidence(
                ref_mhz=ref, low_mhz=low, time_change=time_change / 100.0, energy_change=energy_change / 100.0
            )
        limits = GpuPowerLimits(
            min_w=_need(_float(r["min_w"]), GPUS, line, "min_w"),
            max_w=_need(_float(r["max_w"]), GPUS, line, "max_w"),
            default_w=_need(_float(r["default_w"]), GPUS, line, "default_w"),
        )
        if not limits.min_w <= limits.default_w <= limits.max_w:
            raise CalibrationError(f"{GPUS}:{line}: limits must satisfy min <= default <= max")
        out.append(
            GpuRecord(
                name=r["name"].strip(),
                aliases=tuple(a.strip() for a in r["aliases"].split("|") if a.strip()),
                profile_gpu=r["profile_gpu"].strip(),
                limits=limits,
                idle_w=_need(_float(r["idle_w"]), GPUS, line, "idle_w"),
                peak_bf16_tflops=_need(_float(r["peak_bf16_tflops"]), GPUS, line, "peak_bf16_tflops"),
                peak_fp8_tflops=_float(r["peak_fp8_tflops"]),
                peak_int8_tops=_float(r["peak_int8_tops"]),
                clock=clock,
            )
        )
    return tuple(out)


def load_profiles() -> tuple[ProfileRow, ...]:
    out = []
    for line, r in _rows(PROFILES):
        precision = _precision(r["precision"])
        if precision is None:
            raise CalibrationError(f"{PROFILES}:{line}: unsupported precision {r['precision']!r}")
        batch_text = r["batch_or_load"].split("=")[-1].strip()
        if not batch_text.isdigit():
            raise CalibrationError(f"{PROFILES}:{line}: cannot read a batch size from {r['batch_or_load']!r}")
        out.append(
            ProfileRow(
                gpu=r["gpu"].strip(),
                model=r["model"].strip(),
                params_b=_need(_float(r["params_b"]), PROFILES, line, "params_b"),
                precision=precision,
                num_gpus=int(_need(_float(r["num_gpus"]), PROFILES, line, "num_gpus")),
                task=r["task"].strip(),
                batch=int(batch_text),
                output_tokens_per_s=_need(_float(r["throughput_tokens_per_s"]), PROFILES, line, "throughput"),
                power_w=_need(_float(r["avg_power_w"]), PROFILES, line, "avg_power_w"),
                itl_ms=_need(_float(r["p50_or_p90_latency_ms"]), PROFILES, line, "p50_or_p90_latency_ms"),
                itl_p90_ms=_float(r["p90_itl_ms"]),
                source=_source_tag(r["source"]),
            )
        )
    return tuple(out)


def load_fp8_ratios() -> tuple[Fp8Ratio, ...]:
    energy: dict[tuple[int, int], float] = {}
    latency: dict[tuple[int, int], float] = {}
    for line, r in _rows(FP8_RATIOS):
        lo_text, _, hi_text = r["batch_size_bucket"].partition("-")
        if not (lo_text.isdigit() and hi_text.isdigit()):
            raise CalibrationError(f"{FP8_RATIOS}:{line}: bad bucket {r['batch_size_bucket']!r}")
        bucket = (int(lo_text), int(hi_text))
        table = {"energy": energy, "latency": latency}.get(r["metric"].strip())
        if table is None:
            raise CalibrationError(f"{FP8_RATIOS}:{line}: unknown metric {r['metric']!r}")
        table[bucket] = _percent_bucket(r["fp8_vs_bf16_median"])
    if energy.keys() != latency.keys():
        raise CalibrationError(f"{FP8_RATIOS}: energy and latency buckets differ")
    return tuple(
        Fp8Ratio(batch_lo=lo, batch_hi=hi, energy_ratio=energy[(lo, hi)], latency_ratio=latency[(lo, hi)])
        for lo, hi in sorted(energy)
    )


def load_quant_speedups() -> tuple[QuantSpeedup, ...]:
    return tuple(
        QuantSpeedup(
            gpu=r["gpu"].strip(),
            precision=r["precision"].strip(),
            params_b=_need(_float(r["params_b"]), QUANT_SPEEDUPS, line, "params_b"),
            speedup=_need(_float(r["speedup"]), QUANT_SPEEDUPS, line, "speedup"),
        )
        for line, r in _rows(QUANT_SPEEDUPS)
    )


def load_cap_sweeps() -> tuple[CapSweepPoint, ...]:
    out = []
    for name in CAP_SWEEPS:
        for line, r in _rows(name):
            series = f"{name}:{r['dataset']}/{r['network']}/{r['batch_size']}/{r['optimizer']}"
            out.append(
                CapSweepPoint(
                    series=series,
                    limit_w=_need(_float(r["power_limit"]), name, line, "power_limit"),
                    time_s=_need(_float(r["time_per_epoch"]), name, line, "time_per_epoch"),
                    power_w=_need(_float(r["average_power"]), name, line, "average_power"),
                )
            )
    return tuple(out)


def load_constants() -> dict[str, float]:
    return {
        r["name"].strip(): _need(_float(r["value"]), CONSTANTS, line, "value") for line, r in _rows(CONSTANTS)
    }


def load_calibration() -> Calibration:
    """Parse every shipped calibration file (raises CalibrationError naming file and line)."""
    constants = load_constants()
    try:
        utilization = constants["prefill_utilization"]
        power_share = constants["prefill_power_share_of_default_limit"]
    except KeyError as e:
        raise CalibrationError(f"{CONSTANTS}: missing constant {e.args[0]!r}") from None
    return Calibration(
        gpus=load_gpus(),
        profiles=load_profiles(),
        fp8_ratios=load_fp8_ratios(),
        quant_speedups=load_quant_speedups(),
        cap_sweeps=load_cap_sweeps(),
        prefill_utilization=utilization,
        prefill_power_share=power_share,
    )


@cache
def default_energy_model() -> EnergyModel:
    """The energy model on the shipped calibration, built once per process."""
    return EnergyModel(load_calibration())
