"""GreenModel (greenllm.io/v1alpha1): the one source of truth for the CRD, the operator and the simulator.

Field names are snake_case in Python and camelCase on the wire. Units are in the field names
(W, kWh, grams, ms, MHz); durations are Kubernetes-style strings (see `durations`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from greenllm.api.controller_state import ControllerState
from greenllm.api.durations import Duration, Interval, Period

GROUP = "greenllm.io"
VERSION = "v1alpha1"
KIND = "GreenModel"
PLURAL = "greenmodels"
SINGULAR = "greenmodel"
SHORT_NAMES = ["gm"]
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names: DNS-1123 labels (a variant name ends up in a label value).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Precision(StrEnum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


class OnExhausted(StrEnum):
    """What to do when no configuration meets every budget."""

    DEGRADE = "Degrade"  # move to a cheaper variant (still above the quality floor) and fewer replicas
    CAP_REPLICAS = "CapReplicas"  # keep the variant, cap replicas at what the budget allows
    HOLD = "Hold"  # change nothing; report the breach


class PowerMode(StrEnum):
    AUTO = "Auto"  # greenllm chooses a per-GPU power limit
    FIXED = "Fixed"  # use `power.limitW` on every GPU
    OFF = "Off"  # never touch GPU power settings


class Sparsity(StrEnum):
    """Weight structure of a variant, next to its precision (a 2:4 sparse fp8 variant is one variant)."""

    NONE = "none"
    TWO_FOUR = "2:4"  # 2 of every 4 weights zero (NVIDIA sparse tensor cores; vLLM CUTLASS kernels)


class PowerSource(StrEnum):
    DCGM = "dcgm"
    KEPLER = "kepler"


class ModelRef(_Model):
    name: str = Field(min_length=1, description="Model name as served (vLLM --served-model-name).")
    params_billions: float | None = Field(
        default=None, gt=0, description="Parameter count in billions; picks the calibrated energy profile."
    )


class GpuSpec(_Model):
    type: str = Field(
        default="H100-SXM",
        min_length=1,
        description="GPU product, e.g. H100-SXM, A100-SXM4-80GB, B200; selects power specs and profiles.",
    )
    count: int = Field(default=1, ge=1, le=16, description="GPUs per replica (tensor parallel size).")
    resource_name: str = Field(
        default="nvidia.com/gpu", min_length=1, description="Extended resource requested per replica."
    )


class EnvVar(_Model):
    name: str = Field(min_length=1)
    value: str = ""


class Resources(_Model):
    """CPU / memory requests and limits for the serving container (the GPU request is added by greenllm)."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class VariantProfile(_Model):
    """Measured behaviour of one replica of this variant; overrides the calibrated defaults."""

    output_tokens_per_second: float = Field(
        gt=0, description="Output tokens/s one replica sustains while meeting the TPOT SLO."
    )
    prompt_tokens_per_second: float | None = Field(
        default=None, gt=0, description="Prompt (prefill) tokens/s one replica sustains."
    )
    idle_power_w: float = Field(ge=0, description="Power per GPU with the model loaded and no requests.")
    loaded_power_w: float = Field(gt=0, description="Power per GPU at the load above.")


def _no_schema_default(schema: dict[str, Any]) -> None:
    # The CRD must not default this field: the API server would fill it in before CEL runs, and the rule
    # that a pruned or distilled variant states its quality could never see it missing.
    schema.pop("default", None)


class Variant(_Model):
    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    precision: Precision
    model: ModelRef | None = Field(
        default=None,
        description="The model this variant serves when it is not spec.model (a distilled or pruned "
        "student, e.g. a Minitron-4B of Llama-3.1-8B): the energy model prices it for its own size. "
        "Needs quality and qualitySource.",
    )
    sparsity: Sparsity = Field(
        default=Sparsity.NONE,
        description="Weight structure: none, or 2:4 structured sparsity (combines with precision). 2:4 "
        "needs quality and qualitySource.",
    )
    gpu_count: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="GPUs per replica of this variant (tensor parallel size) when it is not spec.gpu.count, "
        "e.g. a distilled student on 1 GPU next to its teacher on 2: rendered as the pod's GPU request and "
        "priced by the energy model for that many GPUs.",
    )
    image: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    quality: float = Field(
        default=1.0,
        gt=0,
        le=2,
        description="Quality relative to the reference variant (1.0 when not given; required for a "
        "variant with its own model or with 2:4 sparsity).",
        json_schema_extra=_no_schema_default,
    )
    quality_source: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description='What quality was measured on, e.g. "MMLU 5-shot vs Llama-3.1-8B" (the ratio depends '
        "on the benchmark). Required for a variant with its own model or with 2:4 sparsity.",
    )
    profile: VariantProfile | None = None

    @property
    def compressed_structure(self) -> bool:
        """True when the variant differs from the GreenModel's model by more than precision."""
        return self.model is not None or self.sparsity is not Sparsity.NONE

    @model_validator(mode="after")
    def _quality_stated(self) -> Variant:
        # The same rule as the CRD's CEL (for files the API server never sees): a pruned or distilled
        # variant's quality is a measurement on some benchmark, never the 1.0 default.
        if self.compressed_structure and ("quality" not in self.model_fields_set or not self.quality_source):
            what = "its own model" if self.model is not None else f"sparsity {self.sparsity.value}"
            raise ValueError(
                f"variant {self.name!r} has {what}: give its quality and qualitySource (what the quality "
                "was measured on, e.g. 'MMLU 5-shot vs the base model')"
            )
        return self


class Slo(_Model):
    tpot_p90_ms: float = Field(default=50.0, gt=0, description="p90 time per output token, ms.")
    ttft_p90_ms: float = Field(default=2000.0, gt=0, description="p90 time to first token, ms.")
    min_quality: float = Field(default=0.0, ge=0, le=2, description="Variants below this are never run.")
    attainment: float = Field(
        default=0.99,
        gt=0,
        le=1,
        description="Share of requests that must meet both the TTFT and the TPOT SLO (the error budget is "
        "the rest).",
    )
    attainment_window: Duration = Field(
        default="1h",
        validate_default=True,
        description="Window over which attainment is measured and the largest burst is remembered (the "
        "warm replica floor covers the bursts of this window).",
    )


class Replicas(_Model):
    min: int = Field(default=1, ge=0)
    max: int = Field(default=4, ge=1)


class Budget(_Model):
    power_w: float | None = Field(
        default=None,
        gt=0,
        description="Cap on the power all the replicas' GPUs can draw at once, W: the replicas (warm floor "
        "included) times one replica's peak power at the fast tier's burst setting stay within it, so "
        "power averaged over any window does too (README, budget.powerW). For an average, use energyKwh.",
    )
    energy_kwh: float | None = Field(default=None, gt=0, description="Energy per period, kWh.")
    carbon_grams: float | None = Field(default=None, gt=0, description="Carbon per period, gCO2.")
    period: Period = Field(
        default="24h",
        validate_default=True,
        description="Accounting period; totals reset at its end (1m to 366d).",
    )
    on_exhausted: OnExhausted = OnExhausted.DEGRADE

    @property
    def period_seconds(self) -> float:
        return self.period.seconds


class Power(_Model):
    mode: PowerMode = PowerMode.AUTO
    limit_w: float | None = Field(
        default=None,
        gt=0,
        le=5000,
        description="Per-GPU power limit for mode Fixed, W (the operator clamps it to the GPU's range).",
    )


class Scaling(_Model):
    interval: Interval = Field(
        default="15s", validate_default=True, description="How often the operator re-plans (1s to 1h)."
    )
    scale_up_stabilization: Duration = Field(default="0s", validate_default=True)
    scale_down_stabilization: Duration = Field(default="5m", validate_default=True)
    headroom: float = Field(
        default=0.2, ge=0, le=4, description="Spare capacity kept above demand (0.2 = 20%)."
    )
    switch_threshold: float = Field(
        default=0.1, ge=0, le=1, description="Minimum relative power saving that justifies a variant switch."
    )
    switch_hold: Duration = Field(
        default="5m", validate_default=True, description="How long a switch must stay worth it first."
    )


class CarbonIntensity(_Model):
    grams_per_kwh: float | None = Field(default=None, ge=0, description="Static grid intensity, gCO2/kWh.")
    query: str | None = Field(default=None, min_length=1, description="PromQL giving gCO2/kWh.")


class Metrics(_Model):
    prometheus_url: str | None = Field(default=None, pattern=r"^https?://")
    power_source: PowerSource = PowerSource.DCGM
    carbon_intensity: CarbonIntensity = Field(default_factory=CarbonIntensity)
    queries: dict[str, str] = Field(
        default_factory=dict, description="Overrides of named PromQL queries (see README)."
    )


_VALIDATIONS_SPEC: list[JsonValue] = [
    {"rule": "self.replicas.min <= self.replicas.max", "message": "replicas.min must be <= replicas.max"},
    {
        "rule": "self.variants.all(v, self.variants.exists_one(w, w.name == v.name))",
        "message": "variant names must be unique",
    },
    {
        # quality has no schema default (Variant.quality): absent means 1.0, as the operator reads it.
        "rule": "self.variants.exists(v, (has(v.quality) ? v.quality : 1.0) >= self.slo.minQuality)",
        "message": "at least one variant must meet slo.minQuality",
    },
    {
        "rule": "self.variants.all(v, (!has(v.model) && (!has(v.sparsity) || v.sparsity == 'none')) || "
        "(has(v.quality) && has(v.qualitySource)))",
        "message": "a variant with its own model or with 2:4 sparsity must give quality and qualitySource",
    },
    {
        "rule": "self.power.mode != 'Fixed' || has(self.power.limitW)",
        "message": "power.limitW is required when power.mode is Fixed",
    },
]


class GreenModelSpec(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _VALIDATIONS_SPEC})

    model: ModelRef
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    variants: list[Variant] = Field(min_length=1, max_length=16)
    port: int = Field(default=8000, ge=1, le=65535, description="Port the serving container listens on.")
    slo: Slo = Field(default_factory=Slo)
    replicas: Replicas = Field(default_factory=Replicas)
    budget: Budget = Field(default_factory=Budget)
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="Rank among the GreenModels sharing an EnergyBudget: higher is served first.",
    )
    power: Power = Field(default_factory=Power)
    scaling: Scaling = Field(default_factory=Scaling)
    metrics: Metrics = Field(default_factory=Metrics)

    @model_validator(mode="after")
    def _cross_field(self) -> GreenModelSpec:
        # The same rules as the CRD's CEL, for files the API server never sees (simulate, plan).
        if self.replicas.min > self.replicas.max:
            raise ValueError(
                f"replicas.min ({self.replicas.min}) must be <= replicas.max ({self.replicas.max})"
            )
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique: {', '.join(dupes)} repeated")
        if not any(v.quality >= self.slo.min_quality for v in self.variants):
            raise ValueError(f"no variant meets slo.minQuality {self.slo.min_quality}")
        if self.power.mode is PowerMode.FIXED and self.power.limit_w is None:
            raise ValueError("power.limitW is required when power.mode is Fixed")
        return self

    def gpus_per_replica(self, variant: Variant) -> int:
        """GPUs per replica of `variant`: its own gpuCount, else spec.gpu.count."""
        return variant.gpu_count if variant.gpu_count is not None else self.gpu.count

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------- status


class ConditionType(StrEnum):
    READY = "Ready"
    SPEC_VALID = "SpecValid"
    BUDGET_MET = "BudgetMet"
    METRICS_AVAILABLE = "MetricsAvailable"


class ReasonKind(StrEnum):
    """Why the decision is what it is, from a closed set, next to its free-text reason: in
    status.lastDecision.reasonKind and as the label of the operator's `greenllm_decision_reason_info`
    (free text never becomes a label). Set where the decision is made: core.planner.choose, core.step,
    core.continuity.

    - LeastEnergy: the least power that meets the SLOs (within the budget when there is one).
    - FixedPower: the same with power.mode Fixed: variant and replicas chosen, the power limit is the spec's.
    - BudgetBinds: the budget pays for no configuration that meets the SLOs; budget.onExhausted acted
      (Degrade, CapReplicas or Hold).
    - QualityFloor: the variant in force is below slo.minQuality (the floor was raised): moved off it at once.
    - SloUnreachable: nothing meets the SLOs within replicas.max (or no variant meets the TPOT SLO at all):
      the most capacity the budget allows, best effort.
    - Hold: stability rules kept (part of) the configuration in force: a variant switch under
      switchThreshold or waiting out switchHold, a scale-up held by scaleUpStabilization, a power setting
      kept under switchThreshold; also a decision carried over a restart or a spec edit.
    - Burst: the warm floor (core.burst: the largest burst of arrivals within the TTFT SLO) raised the
      replicas above the plan.
    - NoMetrics: no demand observed (metrics missing or not yet there): the decision in force is kept, or
      the first one is made without metrics.
    """

    LEAST_ENERGY = "LeastEnergy"
    FIXED_POWER = "FixedPower"
    BUDGET_BINDS = "BudgetBinds"
    QUALITY_FLOOR = "QualityFloor"
    SLO_UNREACHABLE = "SloUnreachable"
    HOLD = "Hold"
    BURST = "Burst"
    NO_METRICS = "NoMetrics"


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class Alternative(_Model):
    variant: str
    replicas: int
    power_limit_w: float | None = None
    power_w: float | None = Field(default=None, description="Expected power of this option, W.")
    why_not: str = ""


class DecisionRecord(_Model):
    time: str
    variant: str
    replicas: int
    power_limit_w: float | None = None
    locked_clock_mhz: int | None = None
    expected_power_w: float | None = None
    token_budget: int | None = Field(
        default=None, ge=1, description="--max-num-batched-tokens rendered into the pods (null: vLLM's)."
    )
    reason: str
    reason_kind: str | None = Field(
        default=None,
        description=(
            f"Kind of the reason: {', '.join(ReasonKind)}. Null or absent: recorded by an operator before "
            "it wrote one (read as Hold)."
        ),
    )
    alternatives: list[Alternative] = Field(default_factory=list)


class Observed(_Model):
    time: str | None = None
    power_w: float | None = None
    output_tokens_per_second: float | None = None
    prompt_tokens_per_second: float | None = None
    joules_per_token: float | None = None
    carbon_intensity_g_per_kwh: float | None = None
    tpot_p90_ms: float | None = None
    ttft_p90_ms: float | None = None
    attainment: float | None = Field(
        default=None, description="Share of requests within both SLOs over the attainment window."
    )
    peak_arrivals: float | None = Field(
        default=None,
        description="Most requests that arrived within about a second (fast-tier reads) over the window.",
    )
    peak_waiting_requests: float | None = Field(
        default=None, description="Most requests waiting at once (fast-tier gauge) over the burst window."
    )


class SettingStatus(_Model):
    """One per-GPU power setting; both null = the GPU's defaults."""

    power_limit_w: float | None = None
    locked_clock_mhz: int | None = None


class SwitchRuleStatus(_Model):
    """When the node agent moves a GPU from `efficient` to `burst` and back (core.fasttier)."""

    burst_at_waiting: float = Field(
        ge=0, description="Requests waiting on the pod at or above which the burst setting applies."
    )
    hold_seconds: float = Field(ge=0, description="Burst is kept this long after a queue was last seen.")


class FastTierStatus(_Model):
    """The two settings the node agent switches between, about once a second, from each pod's own queue."""

    efficient: SettingStatus = Field(description="Least energy per token while the queue is short.")
    burst: SettingStatus = Field(description="The capacity the SLOs need once requests queue.")
    rule: SwitchRuleStatus


class PeriodAccount(_Model):
    start: str | None = None
    energy_kwh: float = Field(default=0.0, ge=0)
    carbon_grams: float = Field(default=0.0, ge=0)
    last_sample_time: str | None = None


class GreenModelStatus(_Model):
    # Status is written by the operator only; tolerate fields a newer operator may add.
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    variant: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = Field(default=None, description="Ready replicas of the Deployment.")
    replicas_text: str | None = Field(default=None, description='Ready / wanted replicas, e.g. "3/4".')
    energy_text: str | None = Field(
        default=None, description='Energy this period and its budget, e.g. "1.2/40 kWh" ("1.2 kWh": none).'
    )
    setting_text: str | None = Field(
        default=None,
        description='Per-GPU power setting, e.g. "300 W/GPU", "clock 1410 MHz", "default power".',
    )
    power_limit_w: float | None = Field(default=None, description="Per-GPU power limit; null = GPU default.")
    locked_clock_mhz: int | None = None
    fast_tier: FastTierStatus | None = Field(
        default=None,
        description="Efficient and burst settings the node agent switches between; null = apply powerLimitW "
        "and lockedClockMhz as they are.",
    )
    observed: Observed = Field(default_factory=Observed)
    period: PeriodAccount = Field(default_factory=PeriodAccount)
    conditions: list[Condition] = Field(default_factory=list)
    bound_by: list[str] = Field(
        default_factory=list,
        description="EnergyBudgets (in this namespace) whose allocation limits this GreenModel now; the "
        "tightest of them and spec.budget wins.",
    )
    last_decision: DecisionRecord | None = None
    controller_state: Annotated[
        ControllerState | None,
        # Opaque to the API server: only the operator reads it, and a newer one may add fields.
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        default=None,
        description="Opaque state of the decision loop (stability timers), kept across restarts.",
    )


class GreenModel(_Model):
    """A whole object, as read from a file (simulate, plan) or the API server."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["greenllm.io/v1alpha1"]
    kind: Literal["GreenModel"]
    metadata: Annotated[dict[str, Any], Field(default_factory=dict)]
    spec: GreenModelSpec
    status: GreenModelStatus | None = None
