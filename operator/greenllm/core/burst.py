"""The slow tier's burst rules: the two fast-tier settings, and a warm replica floor under an error budget.

Replicas take a minute to start, so a fleet sized for the last minute's rate meets every burst after a
quiet spell with too few replicas (the 1-s load of the Azure code trace is up to 9x its 1-minute mean).
The slow tier therefore keeps a *warm floor*: enough replicas to prefill the largest burst the node agent
saw arrive within `slo.attainmentWindow` inside the TTFT SLO, at the burst setting,

    floor = ceil(margin x peak arrivals x prompt tokens per request / (burst prefill rate x TTFT)).

The burst is counted in arrivals (requests reaching the pods between two of the agent's 1-s reads), not
in the queue it left: a queue shrinks when a larger fleet absorbs the same burst, so a floor sized from it
lets go of the burst exactly when it has covered it, and misses it the next time. An error budget steers
the margin (within [1/4, 4]): when the attainment measured over the same window (vLLM's TTFT and TPOT
histograms) is under `slo.attainment` and still falling, and no larger floor is still coming up, the
margin rises at once by the overspent share of the budget times `scaling.headroom` (once per
`scaling.scaleDownStabilization`); while at most half the budget is spent it falls back one headroom step
per `scaling.scaleDownStabilization`. No constant of this rule comes from a trace: the window, the target,
the TTFT SLO, the headroom and the hold are the spec's, the prefill rate is the energy model's.

`budget.powerW` caps the worst case of these rules (`power_cap_fit`): every replica, the floor's included,
at the burst setting's peak power (`peak_power_w`) must fit it (docs/energy-model.md, section 11).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from greenllm.api.v1alpha1 import GreenModelSpec, PowerMode, Variant
from greenllm.core.fasttier import FastTier, SwitchRule
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_rules import PerformanceSource

# vLLM V1's default token budget per engine iteration for the OpenAI server on an 80 GB-class GPU
# (vllm/engine/arg_utils.py, v0.11.1); a variant's `--max-num-batched-tokens` arg overrides it.
VLLM_MAX_BATCHED_TOKENS = 8192
# The margin moves within [1/4, 4] of the burst the window saw: below 1 the floor spends the error budget on
# the rarest bursts, above 1 it buys back what routing imbalance and decode costs.
MAX_MARGIN = 4.0
MIN_MARGIN = 1.0 / MAX_MARGIN


VLLM_MAX_NUM_SEQS = 1024  # vLLM v0.11.1's default max_num_seqs for `vllm serve` on an 80 GB-class GPU


def _int_flag(args: list[str], flag: str) -> int | None:
    """The positive integer a vLLM flag is given in `args` (`--flag N` or `--flag=N`), else None."""
    for i, arg in enumerate(args):
        value: str | None = None
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        if value is not None:
            try:
                n = int(value)
            except ValueError:
                continue
            if n >= 1:
                return n
    return None


def explicit_token_budget(variant: Variant) -> int | None:
    """`--max-num-batched-tokens` as the variant's own args set it, else None."""
    return _int_flag(variant.args, "--max-num-batched-tokens")


def max_running(variant: Variant, budget: int | None) -> int:
    """vLLM's max_num_seqs for the variant's pods as greenllm renders them (`budget_flags`)."""
    seqs = _int_flag(variant.args, "--max-num-seqs")
    if seqs is not None:
        return seqs
    if budget is not None and explicit_token_budget(variant) is None and budget < VLLM_MAX_NUM_SEQS:
        return budget
    return VLLM_MAX_NUM_SEQS


def budget_flags(variant: Variant, budget: int | None) -> list[str]:
    """The vLLM flags that render `budget` for a variant that sets none itself. vLLM refuses a token budget
    below max_num_seqs, so a variant's own `--max-num-seqs` raises the budget to it, and without one the
    sequences are capped at the budget when it is below vLLM's default (a batch that large is far past
    the TPOT SLO anyway)."""
    if budget is None or explicit_token_budget(variant) is not None:
        return []
    seqs = _int_flag(variant.args, "--max-num-seqs")
    flags = ["--max-num-batched-tokens", str(max(budget, seqs or 0))]
    if seqs is None and budget < VLLM_MAX_NUM_SEQS:
        flags += ["--max-num-seqs", str(budget)]
    return flags


# vLLM refuses a token budget below max_num_seqs; below this the budget would starve long prompts.
MIN_TOKEN_BUDGET = 512
TOKEN_BUDGET_STEP = 256


def token_budget(variant: Variant, burst: ReplicaPerformance | None, tpot_slo_s: float) -> int:
    """The prompt-chunk budget of one vLLM iteration that keeps a decode step within the TPOT SLO.

    With chunked prefill every iteration of a replica with queued prompts carries a full chunk next to
    its decodes, so each running request's inter-token time is d + chunk / P: vLLM's default budget
    (8,192 tokens; 132 ms of prefill on an H100 at fp8) puts every request that decodes during a burst far
    over a 50 ms TPOT. The budget greenllm renders (Sarathi-Serve's rule) is the largest chunk whose
    iteration with a one-request decode stays within the SLO at the burst setting:
    (TPOT SLO - d(1)) x P, rounded down to 256 tokens, at least 512. A variant's own
    `--max-num-batched-tokens` wins; without a profile the vLLM default stays."""
    explicit = explicit_token_budget(variant)
    if explicit is not None:
        return explicit
    if burst is None:
        return VLLM_MAX_BATCHED_TOKENS
    room = tpot_slo_s - burst.decode_step_s(1.0, tpot_slo_s)
    raw = room * burst.prompt_tokens_per_s
    budget = int(raw // TOKEN_BUDGET_STEP) * TOKEN_BUDGET_STEP
    return min(max(budget, MIN_TOKEN_BUDGET), VLLM_MAX_BATCHED_TOKENS)


def setting_performance(
    spec: GreenModelSpec, variant: Variant, source: PerformanceSource
) -> dict[PowerSetting, ReplicaPerformance]:
    """The variant's performance at each power setting the spec allows (settings it cannot run left out):
    what the fast tier and the prompt-chunk budget choose from."""
    settings = source.power_settings(spec.gpu, spec.power)
    return {s: p for s in settings if (p := source.performance(spec, variant, s)) is not None}


def efficient_candidates(
    spec: GreenModelSpec, perf: Mapping[PowerSetting, ReplicaPerformance]
) -> dict[PowerSetting, ReplicaPerformance]:
    """The settings the fast tier may run while no request waits: the default, and those that keep at
    least 1 / (1 + scaling.headroom) of its prefill rate (a quiet replica may give up the spare capacity
    the spec keeps anyway, no more: the first prompt of a burst is prefilled at this setting)."""
    default = perf.get(PowerSetting())
    if default is None:
        return {}
    least = default.prompt_tokens_per_s / (1.0 + spec.scaling.headroom)
    return {s: p for s, p in perf.items() if p.prompt_tokens_per_s >= least * (1.0 - 1e-9)}


def serving_budget(
    spec: GreenModelSpec, variant: Variant, perf: Mapping[PowerSetting, ReplicaPerformance]
) -> int:
    """The prompt-chunk budget rendered for `variant`: `token_budget` at the slowest setting the fast tier
    may run, so a decode step stays within the TPOT SLO at either of its settings. Depends on the spec and
    the energy model only, so the pods are not rolled when the efficient setting changes."""
    candidates = efficient_candidates(spec, perf)
    slowest = min(candidates.values(), key=lambda p: p.prompt_tokens_per_s, default=None)
    return token_budget(variant, slowest, spec.slo.tpot_p90_ms / 1000.0)


def chunked_prefill_rate(perf: ReplicaPerformance, budget_tokens: int, slo_s: float) -> float:
    """Prompt tokens/s of a replica with a queue: each iteration carries one decode step (batch 1) and a
    full prompt chunk, so the chunk's share of the iteration is what prefill gets."""
    chunk = float(budget_tokens)
    iteration = perf.decode_step_s(1.0, slo_s) + chunk / perf.prompt_tokens_per_s
    return chunk / iteration


def energy_per_request_j(perf: ReplicaPerformance, prompt: float, output: float) -> float:
    """Energy of one request of this size on a saturated replica (prefill and decode at full rate)."""
    decode_w = perf.decode_curve[-1][1]
    return (
        prompt / perf.prompt_tokens_per_s * perf.prefill_power_w
        + output / perf.output_tokens_per_s * decode_w
    )


def fast_tier_for(
    spec: GreenModelSpec,
    variant: Variant,
    settings: tuple[PowerSetting, ...],
    perf: dict[PowerSetting, ReplicaPerformance],
    request: tuple[float, float],
    budget_tokens: int | None = None,
    previous_burst_at_waiting: float | None = None,
) -> FastTier | None:
    """`efficient`: among `efficient_candidates`, the setting with the least energy per request of the
    observed size; `burst`: the GPU's default (the most capacity). None when power is not greenllm's to
    set (mode Off or Fixed) or the two are the same. `budget_tokens`: the variant's `serving_budget`, when
    the caller has it already. `previous_burst_at_waiting`: the threshold in force, kept against jitter
    (held_threshold)."""
    if spec.power.mode is not PowerMode.AUTO:
        return None
    burst = PowerSetting()
    if burst not in perf:
        return None
    best = burst
    best_j = energy_per_request_j(perf[burst], *request)
    allowed = efficient_candidates(spec, perf)
    for s in settings:
        p = allowed.get(s)
        if p is None:
            continue
        j = energy_per_request_j(p, *request)
        if j < best_j * (1.0 - 1e-9):
            best, best_j = s, j
    if best == burst:
        return None
    if budget_tokens is None:
        budget_tokens = serving_budget(spec, variant, perf)
    exact = burst_threshold_exact(spec, budget_tokens, allowed[best], request[0])
    rule = SwitchRule(burst_at_waiting=held_threshold(exact, previous_burst_at_waiting))
    return FastTier(efficient=best, burst=burst, rule=rule)


# How far (in requests) the exact threshold must pass the edges of the one in force before it moves: the
# threshold is a whole number of requests computed from 1-minute rates, and one sitting near a whole number
# flipped with their jitter (a status write and an agent update each time: 0.23 writes per tick at N = 5,000
# in hack/bench_operator.py, where the rates are constant). A quarter of a request is far above that
# jitter and far below a real change of prompt sizes.
THRESHOLD_BAND = 0.25


def held_threshold(exact: float, previous: float | None, band: float = THRESHOLD_BAND) -> float:
    """The burst threshold to publish for `exact` (burst_threshold_exact): its whole number of requests
    (at least one), except that the one in force (`previous`) is kept while `exact` stays within `band` of
    its own span [previous, previous + 1)."""
    new = float(max(1, math.floor(exact)))
    if previous is None or new == previous:
        return new
    if previous - band <= exact < previous + 1.0 + band:
        return previous
    return new


def burst_threshold_exact(
    spec: GreenModelSpec, budget_tokens: int, efficient: ReplicaPerformance, prompt_tokens_per_request: float
) -> float:
    """Requests waiting on one pod from which it runs at the burst setting (before rounding).

    The efficient setting keeps at least 1 / (1 + h) of the burst setting's prefill rate
    (`efficient_candidates`, h = scaling.headroom), so prefilling a queue at it costs at most h / (1 + h)
    of that queue's prefill time at efficient. A queue is let drain at efficient while that cost stays
    within the same share of the TTFT SLO:

        waiting >= chunked prefill rate at efficient x TTFT SLO x h / (1 + h) / prompt tokens each,

    at least one. A few requests overlapping on a busy pod (vLLM admits about one prompt chunk per
    iteration, so `waiting` is often 1-2 at steady load) then keep the efficient setting, and a burst
    still switches within a read."""
    slo_s = spec.slo.tpot_p90_ms / 1000.0
    rate = chunked_prefill_rate(efficient, budget_tokens, slo_s)
    ttft_s = spec.slo.ttft_p90_ms / 1000.0
    h = spec.scaling.headroom
    size = max(prompt_tokens_per_request, 1.0)
    return rate * ttft_s * h / (1.0 + h) / size


@dataclass(frozen=True, slots=True)
class FloorState:
    margin: float = 1.0
    raised_at: float | None = None  # last raise of the margin
    lowered_at: float | None = None
    last_attainment: float | None = None  # attainment at the previous tick (is the budget still burning?)
    prompt_per_request: float | None = None  # smoothed over `hold_s` (1-minute rates are noisy)
    seen_at: float | None = None
    floor: int = 0  # the floor of the previous tick
    floor_grew_at: float | None = None  # when the floor last grew (its pods may still be starting)
    burst_at_waiting: float | None = None  # the fast tier's threshold in force (None: no fast tier)


@dataclass(frozen=True, slots=True)
class Floor:
    replicas: int
    state: FloorState
    note: str
    # The burst's prompt tokens times the margin, and the TTFT SLO (s) they must be prefilled within: the
    # floor at another burst setting is ceil(prompt_tokens / (its chunked prefill rate x ttft_s)).
    prompt_tokens: float = 0.0
    ttft_s: float = 0.0

    def at_rate(self, burst_prefill_tokens_per_s: float, max_replicas: int) -> int:
        """The floor if the burst setting prefilled at this rate (`power_cap_fit` lowers the setting)."""
        if self.prompt_tokens <= 0.0 or burst_prefill_tokens_per_s <= 0.0 or self.ttft_s <= 0.0:
            return 0
        need = math.ceil(self.prompt_tokens / (burst_prefill_tokens_per_s * self.ttft_s) - 1e-9)
        return min(need, max_replicas)


def burst_floor(
    spec: GreenModelSpec,
    state: FloorState,
    now: float,
    *,
    attainment: float | None,
    peak_arrivals: float | None,
    prompt_tokens_per_request: float,
    burst_prefill_tokens_per_s: float,
    hold_s: float,
    may_raise: bool = True,
) -> Floor:
    """The warm floor for this tick and the new error-budget state (module doc). `may_raise` False keeps
    the margin from rising (the decision step's: misses while `budget.powerW` cuts the floor are the
    budget's)."""
    target = spec.slo.attainment
    margin = state.margin
    raised, lowered = state.raised_at, state.lowered_at
    why: list[str] = []
    budget = max(1.0 - target, 1e-6)
    # The window's attainment remembers old misses for the whole window: only misses that keep coming
    # (attainment still falling) say the floor is still short; a raise on every tick under target would
    # compound for as long as the window remembers.
    burning = attainment is not None and (state.last_attainment is None or attainment < state.last_attainment)
    size = prompt_tokens_per_request
    if state.prompt_per_request is not None and state.seen_at is not None and hold_s > 0:
        weight = min(1.0, max(now - state.seen_at, 0.0) / hold_s)
        size = state.prompt_per_request + weight * (prompt_tokens_per_request - state.prompt_per_request)
    # Misses while a larger floor is still coming up (its pods start within a hold) say nothing about the
    # margin: the floor itself is the answer to them.
    settled = state.floor_grew_at is None or now - state.floor_grew_at >= hold_s
    if attainment is not None and attainment < target and burning and settled and may_raise:
        overspent = (target - attainment) / budget
        if raised is None or now - raised >= hold_s:
            margin = min(margin * (1.0 + min(overspent, 1.0) * spec.scaling.headroom), MAX_MARGIN)
            raised = now
            why.append(f"attainment {attainment:.2%} < {target:.2%}: floor margin raised to {margin:.2f}")
    elif attainment is not None and attainment >= target + budget / 2.0 and not burning:
        since = max(-math.inf if raised is None else raised, -math.inf if lowered is None else lowered)
        if now - since >= hold_s and margin > MIN_MARGIN:
            margin = max(MIN_MARGIN, margin / (1.0 + spec.scaling.headroom))
            lowered = now
            why.append(f"attainment {attainment:.2%} spends under half the error budget: margin {margin:.2f}")
    replicas = 0
    ttft_s = spec.slo.ttft_p90_ms / 1000.0
    tokens = 0.0
    if peak_arrivals is not None and peak_arrivals > 0 and burst_prefill_tokens_per_s > 0:
        work = peak_arrivals * size
        tokens = margin * work
        replicas = math.ceil(tokens / (burst_prefill_tokens_per_s * ttft_s) - 1e-9)
        why.append(
            f"warm floor {replicas}: {peak_arrivals:.0f} requests arrived within a second at most in "
            f"{spec.slo.attainment_window} (x{margin:.2f} margin, {size:.0f} prompt "
            f"tokens each, prefilled within the TTFT SLO at the burst setting)"
        )
    replicas = min(replicas, spec.replicas.max)
    last = attainment if attainment is not None else state.last_attainment
    grew = now if replicas > state.floor else state.floor_grew_at
    new_state = FloorState(margin, raised, lowered, last, size, now, replicas, grew, state.burst_at_waiting)
    return Floor(replicas, new_state, "; ".join(why), tokens, ttft_s)


def peak_power_w(perf: ReplicaPerformance) -> float:
    """The most one replica (all its GPUs) draws at this setting, by the energy model: the largest of its
    prefill power and every point of its decode and batch curves. A replica's power is a mix of these
    (prefill share, decode at its batch, idle), and a pod that is starting draws its idle power, so no
    replica at this setting draws more."""
    return max(
        perf.prefill_power_w,
        *(w for _, w in perf.decode_curve),
        *(w for _, _, w in perf.batch_curve),
    )


@dataclass(frozen=True, slots=True)
class CapFit:
    """The burst rules within `budget.powerW` (`power_cap_fit`)."""

    replicas: int  # the planned replicas and the warm floor, within the cap
    setting: PowerSetting  # every GPU's setting while its pod has no queue (the efficient one)
    burst: PowerSetting  # the setting a pod with a queue switches to (== setting: no fast tier)
    peak_w: float  # replicas x the burst setting's peak power: the most the fleet can draw
    lost: bool  # the cap cut capacity the SLOs asked for (warm floor, or the planned configuration)
    note: str  # what the cap changed; empty when it changed nothing


def power_cap_fit(
    cap_w: float,
    planned: int,
    wanted: int,
    efficient: PowerSetting,
    burst: PowerSetting,
    perf: Mapping[PowerSetting, ReplicaPerformance],
    floor_at: Callable[[ReplicaPerformance], int],
    burst_rate: Callable[[ReplicaPerformance], float],
    min_replicas: int = 1,
) -> CapFit:
    """The replicas and the two fast-tier settings whose worst case fits the power cap `cap_w`:
    replicas x the burst setting's `peak_power_w` <= cap_w (every GPU queued at once; a pod still starting
    draws less). `planned` replicas are the planner's, `wanted` >= planned with the warm floor sized at
    `burst`; `floor_at(perf)` is the floor at another burst setting, `burst_rate(perf)` its chunked prefill
    rate (what the floor is sized in).

    The floor and the burst setting serve the same thing, the prefill of a burst within the TTFT SLO, in
    the same unit (replicas x burst prefill rate), so the cap is spent on them by that unit, not by a
    fixed order: the burst settings are tried from the most capacity down (those with at least the
    efficient setting's prefill rate; the efficient one itself means no fast tier), each with the floor
    re-sized for it and cut to what the cap pays for. The first that keeps the whole floor wins (the burst
    setting is lowered only as far as the cap forces, and a floor that fits is never cut); when none does,
    the one with the most burst prefill capacity (ties: the higher setting), and `lost` says the floor
    was cut. Only when the planned replicas alone break the cap at the efficient setting are they touched:
    the most prefill capacity (replicas x prompt rate) the cap pays for with at most `planned` replicas,
    every GPU at one setting (never below `min_replicas`: then over the cap, and the note says so), and
    `lost` is set."""
    fits: list[tuple[float, PowerSetting, int, bool]] = []  # (capacity, burst, replicas, whole floor)
    base = perf.get(efficient)
    if base is not None:
        options = [s for s in perf if perf[s].prompt_tokens_per_s >= base.prompt_tokens_per_s * (1.0 - 1e-9)]
        options.sort(key=lambda s: (s != burst, -burst_rate(perf[s]), s != efficient))
        for b in options:
            p = perf[b]
            room = math.floor(cap_w / peak_power_w(p) + 1e-9)
            if room < planned:
                continue
            want = wanted if b == burst else max(planned, floor_at(p))
            n = min(want, room)
            fits.append((n * burst_rate(p), b, n, n == want))
    whole = [f for f in fits if f[3]]
    if whole or fits:
        # The first that keeps its whole floor, else the most capacity (max keeps the first of equals).
        _, b, n, kept = whole[0] if whole else max(fits, key=lambda f: f[0])
        peak = n * peak_power_w(perf[b])
        changed = []
        if b != burst:
            changed.append(f"burst setting lowered from {burst.label()} to {b.label()}")
        if not kept:
            changed.append(f"warm floor cut to {n} replicas")
        note = ""
        if changed:
            note = (
                f"power budget {cap_w:.0f} W caps what the GPUs can draw at once: {' and '.join(changed)} "
                f"({n} x {peak_power_w(perf[b]):.0f} W peak = {peak:.0f} W)"
            )
        return CapFit(n, efficient, b, peak, not kept, note)
    # The planned replicas break the cap at their own setting: the most prefill capacity the cap pays for,
    # every GPU at one setting (no fast tier) and at most the planned replicas (ties: more replicas).
    if not perf:
        return CapFit(planned, efficient, efficient, math.nan, True, "")
    best: tuple[float, int, PowerSetting] | None = None
    for s in perf:
        n = min(planned, math.floor(cap_w / peak_power_w(perf[s]) + 1e-9))
        if n >= max(min_replicas, 1):
            capacity = n * perf[s].prompt_tokens_per_s
            if best is None or (capacity, n) > (best[0], best[1]):
                best = (capacity, n, s)
    over = ""
    if best is None:  # not even replicas.min fits: the least-power setting at replicas.min, over the cap
        least = min(perf, key=lambda s: peak_power_w(perf[s]))
        n = max(min_replicas, 1)
        best = (n * perf[least].prompt_tokens_per_s, n, least)
        over = f", over it: replicas.min is {n}"
    _, n, s = best
    peak = n * peak_power_w(perf[s])
    note = (
        f"power budget {cap_w:.0f} W caps what the GPUs can draw at once: {planned} x {efficient.label()} "
        f"could draw more, {n} x {s.label()} and no fast tier ({n} x {peak_power_w(perf[s]):.0f} W peak = "
        f"{peak:.0f} W{over})"
    )
    return CapFit(n, s, s, peak, True, note)
