"""The energy model's inputs: plain records of the calibration CSVs shipped in `greenllm/data`.

Parsed by `greenllm.calibration` (the only I/O); every other core module takes them as data. Each record
is one row (or one published figure) with its source; `docs/energy-model.md` says where each comes from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuPowerLimits:
    """Per-GPU power limits the device accepts, W."""

    min_w: float
    max_w: float
    default_w: float

    def clamp(self, watts: float) -> float:
        return min(max(watts, self.min_w), self.max_w)


@dataclass(frozen=True, slots=True)
class ClockEvidence:
    """A published effect of locking the SM clock below the clock the GPU runs at by default.

    `time_change` and `energy_change` are fractions (+0.013 = 1.3 % longer). Two coefficients follow:
    `phi`, the share of a decode step that scales with 1/clock (t(x) = 1 + phi (1/x - 1) for a clock ratio
    x), and `gamma`, the share of the power above idle saved per unit of clock reduction
    (P(x) = idle + (P - idle)(1 - gamma (1 - x))). Attributing the whole measured saving to the power
    above idle understates the saving, which is the conservative side.
    """

    ref_mhz: float
    low_mhz: float
    time_change: float
    energy_change: float

    @property
    def low_ratio(self) -> float:
        return self.low_mhz / self.ref_mhz

    @property
    def phi(self) -> float:
        return self.time_change / (1.0 / self.low_ratio - 1.0)

    @property
    def gamma(self) -> float:
        power_ratio = (1.0 + self.energy_change) / (1.0 + self.time_change)
        return (1.0 - power_ratio) / (1.0 - self.low_ratio)


@dataclass(frozen=True, slots=True)
class GpuRecord:
    """One GPU product (one row of gpus.csv)."""

    name: str  # canonical name as used in GreenModel specs, e.g. "H100-SXM"
    aliases: tuple[str, ...]
    profile_gpu: str  # the GPU name of its rows in gpu_energy_profiles.csv ("H100", "A100", "B200")
    limits: GpuPowerLimits
    idle_w: float  # per GPU, model loaded, no requests
    peak_bf16_tflops: float  # dense
    peak_fp8_tflops: float | None  # dense; None = no FP8 tensor cores
    peak_int8_tops: float | None  # dense
    clock: ClockEvidence | None  # None = no clock-locking evidence: no locked clocks offered


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One measured point of a decode sweep (one row of gpu_energy_profiles.csv)."""

    gpu: str
    model: str
    params_b: float
    precision: str  # "bf16" (16-bit) or "fp8"
    num_gpus: int
    task: str
    batch: int  # the swept maximum batch (max_num_seqs / max_batch)
    output_tokens_per_s: float  # whole replica
    power_w: float  # whole replica (sum over num_gpus)
    itl_ms: float  # median inter-token latency (v3) or mean time per output token (v2)
    itl_p90_ms: float | None  # p90 inter-token latency where the source has it (v3)
    source: str  # short source tag, e.g. "ML.ENERGY v3"

    @property
    def power_per_gpu_w(self) -> float:
        return self.power_w / self.num_gpus


@dataclass(frozen=True, slots=True)
class Fp8Ratio:
    """fp8 / bf16 medians for one batch bucket (ML.ENERGY v3 blog, 'Precision')."""

    batch_lo: int
    batch_hi: int
    energy_ratio: float  # fp8 J/token / bf16 J/token
    latency_ratio: float  # fp8 ITL / bf16 ITL


@dataclass(frozen=True, slots=True)
class QuantSpeedup:
    """A published single-stream decode speed-up of a quantized format over 16-bit."""

    gpu: str  # profile GPU name
    precision: str  # "int4"
    params_b: float
    speedup: float


@dataclass(frozen=True, slots=True)
class SparsityClaim:
    """A published speed-up of a 2:4 sparse model over a dense one (one row of sparsity_speed_claims.csv).

    `speedup` is always "x faster" (> 1 is faster): a latency reduction of 30 % is 1 / 0.7; a throughput
    gain of 1.2x is 1.2. No energy was measured with these rows.
    """

    gpu: str  # profile GPU name ("H100")
    precision: str  # the sparse model's precision family: "bf16" or "fp8"
    baseline: str  # the dense model it is compared with: "bf16" (both rows of the source are)
    metric: str  # "latency" (one request at a time) or "throughput" (a saturated server)
    speedup: float
    source: str


@dataclass(frozen=True, slots=True)
class CapSweepPoint:
    """One point of a power-limit sweep of compute-bound work (Zeus, NSDI'23 traces)."""

    series: str
    limit_w: float
    time_s: float
    power_w: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything the model knows, parsed from the shipped CSVs."""

    gpus: tuple[GpuRecord, ...]
    profiles: tuple[ProfileRow, ...]
    fp8_ratios: tuple[Fp8Ratio, ...]
    quant_speedups: tuple[QuantSpeedup, ...]
    cap_sweeps: tuple[CapSweepPoint, ...]
    prefill_utilization: float
    prefill_power_share: float  # of the default power limit
    sparsity_claims: tuple[SparsityClaim, ...] = ()
