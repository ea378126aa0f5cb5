"""Load the shipped calibration CSVs (package data in `greenllm/data`) into a `Calibration`.

The only I/O of the energy model. Sources and licences of every file: `greenllm/data/ATTRIBUTION.md`.
Each `parse_*` function takes a file's text (so malformed input can be tested) and raises
`CalibrationError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from importlib import resources

from greenllm.core.calibration_records import (
    Calibration,
    CapSweepPoint,
    ClockEvidence,
    Fp8Ratio,
    GpuPowerLimits,
    GpuRecord,
    ProfileRow,
    QuantSpeedup,
    SparsityClaim,
)
from greenllm.core.energy import EnergyModel

GPUS = "gpus.csv"
PROFILES = "gpu_energy_profiles.csv"
FP8_RATIOS = "fp8_vs_bf16_mlenergy_v3_blog_summary.csv"
QUANT_SPEEDUPS = "quantization_speedups.csv"
CAP_SWEEPS = (
    "zeus_nsdi23_TRAINING_power_limit_sweep_a40.csv",
    "zeus_nsdi23_TRAINING_power_limit_sweep_v100.csv",
)
CONSTANTS = "model_constants.csv"
SPARSITY_CLAIMS = "sparsity_speed_claims.csv"
# Quality evidence for pruned and distilled variants: read by no code, shipped for the examples and
# docs that cite it (ATTRIBUTION.md), checked against its source by the tests.
COMPRESSION_QUALITY = "compression_quality.csv"


class CalibrationError(ValueError):
    """A calibration file is malformed (the message names the file and line)."""


def read_data(name: str) -> str:
    """The text of one shipped calibration file."""
    return resources.files("greenllm").joinpath("data", name).read_text(encoding="utf-8")


class _Rows:
    """CSV rows of one file with line numbers, and typed access that reports where a value is bad."""

    def __init__(self, text: str, name: str, required: tuple[str, ...]) -> None:
        self.name = name
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise CalibrationError(f"{name}: missing column(s) {', '.join(missing)}")
        self._rows = list(reader)

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        return iter(enumerate(self._rows, start=2))

    def opt(self, line: int, row: dict[str, str], column: str) -> float | None:
        text = (row.get(column) or "").strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            message = f"{self.name}:{line}: column {column!r} is not a number: {text!r}"
            raise CalibrationError(message) from None

    def num(self, line: int, row: dict[str, str], column: str) -> float:
        value = self.opt(line, row, column)
        if value is None:
            raise CalibrationError(f"{self.name}:{line}: column {column!r} is empty")
        return value

    def text(self, line: int, row: dict[str, str], column: str) -> str:
        value = (row.get(column) or "").strip()
        if not value:
            raise CalibrationError(f"{self.name}:{line}: column {column!r} is empty")
        return value


def parse_gpus(text: str, name: str = GPUS) -> tuple[GpuRecord, ...]:
    rows = _Rows(text, name, ("name", "aliases", "profile_gpu", "default_w", "min_w", "max_w", "idle_w"))
    out = []
    for line, r in rows:
        ref = rows.opt(line, r, "clock_ref_mhz")
        low = rows.opt(line, r, "clock_low_mhz")
        time_change = rows.opt(line, r, "clock_time_change_pct")
        energy_change = rows.opt(line, r, "clock_energy_change_pct")
        clock = None
        if ref is not None and low is not None and time_change is not None and energy_change is not None:
            if not 0 < low < ref:
                raise CalibrationError(f"{name}:{line}: clock_low_mhz must be below clock_ref_mhz")
            clock = ClockEvidence(ref, low, time_change / 100.0, energy_change / 100.0)
        elif any(v is not None for v in (ref, low, time_change, energy_change)):
            raise CalibrationError(f"{name}:{line}: clock columns must be all set or all empty")
        limits = GpuPowerLimits(
            min_w=rows.num(line, r, "min_w"),
            max_w=rows.num(line, r, "max_w"),
            default_w=rows.num(line, r, "default_w"),
        )
        if not 0 < limits.min_w <= limits.default_w <= limits.max_w:
            raise CalibrationError(f"{name}:{line}: limits must satisfy 0 < min_w <= default_w <= max_w")
        out.append(
            GpuRecord(
                name=rows.text(line, r, "name"),
                aliases=tuple(a.strip() for a in r["aliases"].split("|") if a.strip()),
                profile_gpu=rows.text(line, r, "profile_gpu"),
                limits=limits,
                idle_w=rows.num(line, r, "idle_w"),
                peak_bf16_tflops=rows.num(line, r, "peak_bf16_tflops"),
                peak_fp8_tflops=rows.opt(line, r, "peak_fp8_tflops"),
                peak_int8_tops=rows.opt(line, r, "peak_int8_tops"),
                clock=clock,
            )
        )
    return tuple(out)


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


def parse_profiles(text: str, name: str = PROFILES) -> tuple[ProfileRow, ...]:
    rows = _Rows(
        text,
        name,
        (
            "gpu",
            "model",
            "params_b",
            "precision",
            "num_gpus",
            "task",
            "batch_or_load",
            "throughput_tokens_per_s",
            "avg_power_w",
            "p50_or_p90_latency_ms",
            "p90_itl_ms",
            "source",
        ),
    )
    out = []
    for line, r in rows:
        precision = _precision(r["precision"])
        if precision is None:
            raise CalibrationError(f"{name}:{line}: unsupported precision {r['precision']!r}")
        batch_text = r["batch_or_load"].split("=")[-1].strip()
        if not batch_text.isdigit() or int(batch_text) < 1:
            raise CalibrationError(f"{name}:{line}: cannot read a batch size from {r['batch_or_load']!r}")
        num_gpus = rows.num(line, r, "num_gpus")
        if num_gpus < 1 or num_gpus != int(num_gpus):
            raise CalibrationError(f"{name}:{line}: num_gpus must be a positive integer")
        values = {
            c: rows.num(line, r, c)
            for c in ("params_b", "throughput_tokens_per_s", "avg_power_w", "p50_or_p90_latency_ms")
        }
        if min(values.values()) <= 0:
            raise CalibrationError(f"{name}:{line}: sizes, throughput, power and latency must be positive")
        out.append(
            ProfileRow(
                gpu=rows.text(line, r, "gpu"),
                model=rows.text(line, r, "model"),
                params_b=values["params_b"],
                precision=precision,
                num_gpus=int(num_gpus),
                task=rows.text(line, r, "task"),
                batch=int(batch_text),
                output_tokens_per_s=values["throughput_tokens_per_s"],
                power_w=values["avg_power_w"],
                itl_ms=values["p50_or_p90_latency_ms"],
                itl_p90_ms=rows.opt(line, r, "p90_itl_ms"),
                source=_source_tag(r["source"]),
            )
        )
    return tuple(out)


def _percent_ratio(text: str) -> float:
    """'+30%' -> 1.30."""
    return 1.0 + float(text.strip().rstrip("%")) / 100.0


def parse_fp8_ratios(text: str, name: str = FP8_RATIOS) -> tuple[Fp8Ratio, ...]:
    rows = _Rows(text, name, ("metric", "batch_size_bucket", "fp8_vs_bf16_median"))
    tables: dict[str, dict[tuple[int, int], float]] = {"energy": {}, "latency": {}}
    for line, r in rows:
        lo_text, _, hi_text = r["batch_size_bucket"].partition("-")
        if not (lo_text.strip().isdigit() and hi_text.strip().isdigit()):
            raise CalibrationError(f"{name}:{line}: bad batch bucket {r['batch_size_bucket']!r}")
        table = tables.get(r["metric"].strip())
        if table is None:
            raise CalibrationError(f"{name}:{line}: unknown metric {r['metric']!r}")
        try:
            table[(int(lo_text), int(hi_text))] = _percent_ratio(r["fp8_vs_bf16_median"])
        except ValueError:
            raise CalibrationError(
                f"{name}:{line}: fp8_vs_bf16_median is not a percentage: {r['fp8_vs_bf16_median']!r}"
            ) from None
    energy, latency = tables["energy"], tables["latency"]
    if energy.keys() != latency.keys():
        raise CalibrationError(f"{name}: energy and latency rows cover different batch buckets")
    return tuple(Fp8Ratio(lo, hi, energy[(lo, hi)], latency[(lo, hi)]) for lo, hi in sorted(energy))


def parse_quant_speedups(text: str, name: str = QUANT_SPEEDUPS) -> tuple[QuantSpeedup, ...]:
    rows = _Rows(text, name, ("gpu", "precision", "params_b", "speedup"))
    return tuple(
        QuantSpeedup(
            gpu=rows.text(line, r, "gpu"),
            precision=rows.text(line, r, "precision"),
            params_b=rows.num(line, r, "params_b"),
            speedup=rows.num(line, r, "speedup"),
        )
        for line, r in rows
    )


def parse_cap_sweeps(text: str, name: str) -> tuple[CapSweepPoint, ...]:
    rows = _Rows(
        text,
        name,
        ("dataset", "network", "batch_size", "optimizer", "power_limit", "time_per_epoch", "average_power"),
    )
    return tuple(
        CapSweepPoint(
            series=f"{name}:{r['dataset']}/{r['network']}/{r['batch_size']}/{r['optimizer']}",
            limit_w=rows.num(line, r, "power_limit"),
            time_s=rows.num(line, r, "time_per_epoch"),
            power_w=rows.num(line, r, "average_power"),
        )
        for line, r in rows
    )


def _claim(line: int, name: str, claim: str, value: float) -> tuple[str, float]:
    """(metric, x-faster speed-up) of one claim as the source words it."""
    text = claim.lower()
    if "latency reduction" in text and 0.0 < value < 1.0:
        return "latency", 1.0 / (1.0 - value)  # 30 % less time per request = 1/0.7 x faster
    if "latency speed-up" in text and value > 0.0:
        return "latency", value
    if "throughput gain" in text and value > 0.0:
        return "throughput", value
    raise CalibrationError(f"{name}:{line}: cannot read claim {claim!r} with value {value:g}")


def parse_sparsity_claims(text: str, name: str = SPARSITY_CLAIMS) -> tuple[SparsityClaim, ...]:
    """Vendor speed claims of 2:4 sparse models. The subject names the sparse model's precision ("+ FP8",
    else its bf16 weights); the baseline is "dense same precision" or "dense bf16"."""
    rows = _Rows(text, name, ("subject", "gpu", "claim", "value", "baseline", "source"))
    out = []
    for line, r in rows:
        subject = rows.text(line, r, "subject")
        if "2:4" not in subject:
            raise CalibrationError(f"{name}:{line}: not a 2:4 sparsity claim: {subject!r}")
        precision = "fp8" if "fp8" in subject.lower() else "bf16"
        baseline_text = rows.text(line, r, "baseline").lower()
        if "same precision" in baseline_text:
            baseline = precision
        elif "bf16" in baseline_text:
            baseline = "bf16"
        else:
            raise CalibrationError(f"{name}:{line}: cannot read baseline {r['baseline']!r}")
        metric, speedup = _claim(line, name, rows.text(line, r, "claim"), rows.num(line, r, "value"))
        out.append(
            SparsityClaim(
                gpu=rows.text(line, r, "gpu").split()[0],  # "H100 (Hopper)" -> "H100"
                precision=precision,
                baseline=baseline,
                metric=metric,
                speedup=speedup,
                source=rows.text(line, r, "source"),
            )
        )
    return tuple(out)


def parse_constants(text: str, name: str = CONSTANTS) -> dict[str, float]:
    rows = _Rows(text, name, ("name", "value"))
    return {rows.text(line, r, "name"): rows.num(line, r, "value") for line, r in rows}


def load_calibration() -> Calibration:
    """Parse every shipped calibration file."""
    constants = parse_constants(read_data(CONSTANTS))
    try:
        utilization = constants["prefill_utilization"]
        power_share = constants["prefill_power_share_of_default_limit"]
    except KeyError as e:
        raise CalibrationError(f"{CONSTANTS}: missing constant {e.args[0]!r}") from None
    return Calibration(
        gpus=parse_gpus(read_data(GPUS)),
        profiles=parse_profiles(read_data(PROFILES)),
        fp8_ratios=parse_fp8_ratios(read_data(FP8_RATIOS)),
        quant_speedups=parse_quant_speedups(read_data(QUANT_SPEEDUPS)),
        cap_sweeps=tuple(p for name in CAP_SWEEPS for p in parse_cap_sweeps(read_data(name), name)),
        prefill_utilization=utilization,
        prefill_power_share=power_share,
        sparsity_claims=parse_sparsity_claims(read_data(SPARSITY_CLAIMS)),
    )


@cache
def default_energy_model() -> EnergyModel:
    """The energy model on the shipped calibration, built once per process."""
    return EnergyModel(load_calibration())


@cache
def energy_model_at(
    idle_w: float | None = None, prefill_utilization: float | None = None, cap_saving_scale: float = 1.0
) -> EnergyModel:
    """The energy model at one of its uncertainty corners (`greenllm simulate --sensitivity`): H100 idle
    power per GPU (MEASURED 145 W; 70 W is the corner), the prefill share of peak (ASSUMPTION 0.5; 0.35),
    and the share of the power-cap savings the compute-bound response claims that are real (1; 0.5)."""
    cal = load_calibration()
    if idle_w is not None:
        cal = replace(
            cal, gpus=tuple(replace(g, idle_w=idle_w) if g.profile_gpu == "H100" else g for g in cal.gpus)
        )
    if prefill_utilization is not None:
        cal = replace(cal, prefill_utilization=prefill_utilization)
    return EnergyModel(cal, cap_saving_scale=cap_saving_scale)
