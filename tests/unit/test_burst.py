"""core.burst: the prompt-chunk budget, the fast-tier settings and the warm floor under an error budget."""

from __future__ import annotations

import math
from typing import Any

import pytest

from greenllm.api.v1alpha1 import GreenModelSpec, Variant
from greenllm.core.burst import (
    MAX_MARGIN,
    MIN_MARGIN,
    VLLM_MAX_BATCHED_TOKENS,
    FloorState,
    budget_flags,
    burst_floor,
    chunked_prefill_rate,
    efficient_candidates,
    energy_per_request_j,
    explicit_token_budget,
    fast_tier_for,
    held_threshold,
    max_running,
    serving_budget,
    token_budget,
)
from greenllm.core.performance import PowerSetting, ReplicaPerformance

DEFAULT = PowerSetting()
CAP_300 = PowerSetting(limit_w=300.0)
CAP_250 = PowerSetting(limit_w=250.0)
TPOT_S = 0.05
HOLD_S = 300.0


def perf(
    prompt: float, *, d1: float = 0.012, output: float = 2000.0, busy: float = 700.0
) -> ReplicaPerformance:
    """A replica prefilling `prompt` tokens/s at `busy` W whose decode step at batch 1 is `d1` s."""
    return ReplicaPerformance(
        output_tokens_per_s=output,
        prompt_tokens_per_s=prompt,
        prefill_power_w=busy,
        decode_curve=((0.0, 100.0), (output, busy)),
        batch_curve=((1.0, d1, 200.0), (64.0, 0.03, busy)),
    )


def variant(*args: str) -> Variant:
    return Variant(name="v", precision="fp8", image="i", args=list(args))


def spec(**overrides: Any) -> GreenModelSpec:
    data: dict[str, Any] = {
        "model": {"name": "m", "paramsBillions": 8},
        "variants": [{"name": "v", "precision": "fp8", "image": "i"}],
        "slo": {"ttftP90Ms": 2000, "attainment": 0.99},
        "replicas": {"min": 1, "max": 24},
    }
    data.update(overrides)
    return GreenModelSpec.model_validate(data)


# ----------------------------------------------------------------------------------------- token budget


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-num-batched-tokens", "1024"], 1024),
        (["--max-num-batched-tokens=2048"], 2048),
        (["--enforce-eager", "--max-num-batched-tokens", "300", "--max-num-seqs", "8"], 300),
        (["--max-num-batched-tokens", "lots", "--max-num-batched-tokens=4096"], 4096),
    ],
)
def test_the_variants_own_budget_wins(args: list[str], expected: int) -> None:
    v = variant(*args)
    assert explicit_token_budget(v) == expected
    assert token_budget(v, perf(30_000.0), TPOT_S) == expected
    assert token_budget(v, None, TPOT_S) == expected


@pytest.mark.parametrize(
    "args",
    [[], ["--max-num-batched-tokens"], ["--max-num-batched-tokens", "0"], ["--max-num-batched-tokens=x"]],
)
def test_no_usable_budget_in_the_args(args: list[str]) -> None:
    assert explicit_token_budget(variant(*args)) is None


@pytest.mark.parametrize(
    ("prompt_per_s", "d1", "expected"),
    [
        (30_000.0, 0.012, 1024),  # (0.050 - 0.012) x 30,000 = 1,140 -> 1,024
        (40_000.0, 0.010, 1536),  # 0.040 x 40,000 = 1,600 -> 1,536
        (27_000.0, 0.010, 1024),  # 1,080 -> 1,024 (down, not to the nearest)
        (10_000.0, 0.012, 512),  # 380 -> 256, at least 512
        (1_000_000.0, 0.010, VLLM_MAX_BATCHED_TOKENS),  # 40,000 -> at most vLLM's 8,192
        (30_000.0, 0.060, 512),  # the decode step alone is over the SLO: no room, the minimum
    ],
)
def test_the_budget_is_the_chunk_that_keeps_a_batch_1_decode_within_the_tpot(
    prompt_per_s: float, d1: float, expected: int
) -> None:
    assert token_budget(variant(), perf(prompt_per_s, d1=d1), TPOT_S) == expected


def test_without_a_profile_the_budget_is_vllms_default() -> None:
    assert token_budget(variant(), None, TPOT_S) == VLLM_MAX_BATCHED_TOKENS == 8192


def test_the_served_budget_fits_the_slowest_setting_the_fast_tier_may_run() -> None:
    # Default 40,000 tokens/s (budget 1,536); 35,000 keeps 1/1.2 of it (budget 1,280); 30,000 does not and
    # is never run, so it does not bind.
    perfs = {
        DEFAULT: perf(40_000.0, d1=0.01),
        CAP_300: perf(35_000.0, d1=0.01),
        CAP_250: perf(30_000.0, d1=0.01),
    }
    s = spec()
    assert set(efficient_candidates(s, perfs)) == {DEFAULT, CAP_300}
    assert serving_budget(s, s.variants[0], perfs) == 1280
    assert serving_budget(s, variant("--max-num-batched-tokens=4096"), perfs) == 4096
    assert serving_budget(s, s.variants[0], {CAP_300: perfs[CAP_300]}) == VLLM_MAX_BATCHED_TOKENS


def test_chunked_prefill_rate_shares_each_iteration_with_one_decode() -> None:
    # 1,000-token chunks at 10,000 tokens/s next to a 10 ms decode step: 1,000 tokens per 110 ms.
    assert chunked_prefill_rate(perf(10_000.0, d1=0.01), 1000, TPOT_S) == pytest.approx(1000.0 / 0.11)


# -------------------------------------------------------------------------------------------- fast tier


def energy_perfs() -> dict[PowerSetting, ReplicaPerformance]:
    # Per request of 2,000 prompt and 200 output tokens: default 0.1 x 700 + 0.1 x 700 = 140 J; 300 W:
    # 2 x 2000 / 18000 x 300 = 66.7 J; 250 W: 2 x 2000 / 17000 x 290 = 68.2 J. Both caps keep over
    # 1 / (1 + headroom) of the default's prefill rate.
    return {
        DEFAULT: perf(20_000.0, output=2000.0, busy=700.0),
        CAP_300: perf(18_000.0, output=1800.0, busy=300.0),
        CAP_250: perf(17_000.0, output=1700.0, busy=290.0),
    }


REQUEST = (2000.0, 200.0)
SETTINGS = (DEFAULT, CAP_300, CAP_250)


def test_energy_per_request() -> None:
    perfs = energy_perfs()
    assert [energy_per_request_j(perfs[s], *REQUEST) for s in SETTINGS] == pytest.approx(
        [140.0, 4000.0 / 18000.0 * 300.0, 4000.0 / 17000.0 * 290.0]
    )


def test_efficient_is_the_least_energy_per_request_and_burst_the_default() -> None:
    s = spec()
    tier = fast_tier_for(s, s.variants[0], SETTINGS, energy_perfs(), REQUEST)
    assert tier is not None
    assert (tier.efficient, tier.burst) == (CAP_300, DEFAULT)


def test_the_burst_threshold_is_the_queue_the_efficient_setting_drains_within_the_headroom_share() -> None:
    # Budget: the slowest candidate (250 W, 17,000 tok/s): (0.05 - 0.012) x 17,000 = 646 -> 512 tokens.
    # Efficient 300 W prefills 512 / (0.012 + 512 / 18,000) = 12,659 tok/s with a chunk per iteration;
    # x 2 s x 0.2 / 1.2 / 2,000 tokens = 2.11 -> 2 requests waiting.
    s = spec()
    tier = fast_tier_for(s, s.variants[0], SETTINGS, energy_perfs(), REQUEST)
    assert tier is not None
    assert tier.rule.burst_at_waiting == 2.0
    # Larger prompts: fewer waiting requests already need the burst setting (never fewer than one).
    big = fast_tier_for(s, s.variants[0], SETTINGS, energy_perfs(), (20_000.0, 200.0))
    assert big is not None and big.rule.burst_at_waiting == 1.0
    # More headroom lets a longer queue drain at efficient.
    roomy = spec(scaling={"headroom": 1.0})
    wide = fast_tier_for(roomy, roomy.variants[0], SETTINGS, energy_perfs(), REQUEST)
    assert wide is not None and wide.rule.burst_at_waiting > tier.rule.burst_at_waiting


@pytest.mark.parametrize(
    ("exact", "previous", "published"),
    [
        (5.01, None, 5.0),  # nothing in force: the whole number of requests
        (4.99, 5.0, 5.0),  # jitter across the edge below: kept
        (6.10, 5.0, 5.0),  # and above, within a quarter of a request
        (4.70, 5.0, 4.0),  # past the band: moves
        (6.30, 5.0, 6.0),
        (0.30, 2.0, 1.0),  # never below one
        (1.10, 1.0, 1.0),
    ],
)
def test_the_threshold_in_force_is_kept_against_jitter(
    exact: float, previous: float | None, published: float
) -> None:
    """The threshold is a whole number of requests from 1-minute rates; one sitting near a whole number
    flipped with their jitter (a status write each time). It moves once the exact value is a quarter of a
    request past the span of the one in force."""
    assert held_threshold(exact, previous) == published


def test_the_fast_tier_keeps_the_threshold_in_force_within_the_band() -> None:
    s = spec()
    # REQUEST: exactly 2.11 requests (test above) -> 2; with 1 in force, 2.11 is within [0.75, 2.25): kept.
    kept = fast_tier_for(s, s.variants[0], SETTINGS, energy_perfs(), REQUEST, previous_burst_at_waiting=1.0)
    moved = fast_tier_for(s, s.variants[0], SETTINGS, energy_perfs(), REQUEST, previous_burst_at_waiting=3.0)
    assert kept is not None and kept.rule.burst_at_waiting == 1.0
    assert moved is not None and moved.rule.burst_at_waiting == 2.0


def test_settings_without_a_profile_are_skipped() -> None:
    s = spec()
    perfs = energy_perfs()
    del perfs[CAP_300]
    tier = fast_tier_for(s, s.variants[0], SETTINGS, perfs, REQUEST)
    assert tier is not None
    assert (tier.efficient, tier.burst) == (CAP_250, DEFAULT)


def test_no_fast_tier_when_default_power_is_the_most_efficient() -> None:
    s = spec()
    perfs = {DEFAULT: perf(20_000.0, busy=200.0), CAP_300: perf(10_000.0, busy=180.0)}
    assert fast_tier_for(s, s.variants[0], (DEFAULT, CAP_300), perfs, REQUEST) is None


def test_no_fast_tier_without_a_default_profile() -> None:
    s = spec()
    perfs = energy_perfs()
    del perfs[DEFAULT]
    assert fast_tier_for(s, s.variants[0], SETTINGS, perfs, REQUEST) is None


def test_efficient_keeps_the_prefill_rate_the_headroom_allows() -> None:
    # 300 W is the cheapest per request (75 J) but prefills 16,000 of the default's 20,000 tokens/s, under
    # 1 / (1 + 0.2): a burst's first prompt would be too slow. 250 W keeps 18,000 (88.9 J).
    perfs = {
        DEFAULT: perf(20_000.0, output=2000.0, busy=700.0),
        CAP_300: perf(16_000.0, output=1600.0, busy=300.0),
        CAP_250: perf(18_000.0, output=1800.0, busy=400.0),
    }
    s = spec()
    tier = fast_tier_for(s, s.variants[0], SETTINGS, perfs, REQUEST)
    assert tier is not None and (tier.efficient, tier.burst) == (CAP_250, DEFAULT)
    roomy = spec(scaling={"headroom": 0.3})  # 1 / 1.3 of 20,000 is 15,385
    tier = fast_tier_for(roomy, roomy.variants[0], SETTINGS, perfs, REQUEST)
    assert tier is not None and (tier.efficient, tier.burst) == (CAP_300, DEFAULT)


@pytest.mark.parametrize("power", [{"mode": "Off"}, {"mode": "Fixed", "limitW": 300}])
def test_no_fast_tier_when_power_is_not_greenllms(power: dict[str, Any]) -> None:
    s = spec(power=power)
    assert fast_tier_for(s, s.variants[0], SETTINGS, energy_perfs(), REQUEST) is None


# ------------------------------------------------------------------------------------------- warm floor


def floor(
    state: FloorState,
    now: float,
    attainment: float | None,
    *,
    peak: float | None = 10.0,
    tokens: float = 2000.0,
    rate: float = 5000.0,
    s: GreenModelSpec | None = None,
) -> tuple[int, FloorState]:
    f = burst_floor(
        s or spec(),
        state,
        now,
        attainment=attainment,
        peak_arrivals=peak,
        prompt_tokens_per_request=tokens,
        burst_prefill_tokens_per_s=rate,
        hold_s=HOLD_S,
    )
    return f.replicas, f.state


T0 = 1_700_000_000.0  # epoch seconds, as the operator passes them


def test_the_floor_prefills_the_peak_burst_within_the_ttft() -> None:
    # 10 requests of 2,000 tokens at 5,000 tokens/s within 2 s: exactly 2 replicas; 11 need a third.
    assert floor(FloorState(), T0, None)[0] == 2
    assert floor(FloorState(), T0, None, peak=11.0)[0] == 3
    assert floor(FloorState(margin=1.5), T0, None)[0] == 3
    assert floor(FloorState(margin=1.6), T0, None)[0] == math.ceil(1.6 * 20_000 / 10_000)


def test_the_floor_is_capped_at_replicas_max() -> None:
    assert floor(FloorState(), T0, None, peak=1e6)[0] == 24
    assert floor(FloorState(), T0, None, peak=1e6, s=spec(replicas={"min": 1, "max": 5}))[0] == 5


@pytest.mark.parametrize(("peak", "rate"), [(None, 5000.0), (0.0, 5000.0), (10.0, 0.0)])
def test_no_floor_without_a_burst_or_a_rate(peak: float | None, rate: float) -> None:
    assert floor(FloorState(margin=2.0), T0, 0.5, peak=peak, rate=rate)[0] == 0


def test_no_attainment_leaves_the_margin_alone() -> None:
    state = FloorState(margin=2.0, raised_at=T0 - 10 * HOLD_S)
    _, after = floor(state, T0, None)
    assert (after.margin, after.raised_at, after.lowered_at) == (2.0, state.raised_at, None)


def test_the_margin_rises_at_once_by_the_overspent_share_of_a_headroom_step() -> None:
    # Target 99%: a 1% budget. 98.5% overspends half of it: x(1 + 0.5 x 0.2) = x1.1.
    replicas, state = floor(FloorState(), T0, 0.985)
    assert state.margin == pytest.approx(1.1) and state.raised_at == T0
    assert replicas == 3  # ceil(1.1 x 2)
    # At most one headroom step however far under.
    assert floor(FloorState(), T0, 0.5)[1].margin == pytest.approx(1.2)


def test_the_margin_rises_no_more_than_once_per_hold() -> None:
    _, state = floor(FloorState(), T0, 0.985)
    _, same = floor(state, T0 + HOLD_S - 1.0, 0.98)  # still falling, but within the hold
    assert same.margin == pytest.approx(1.1) and same.raised_at == T0
    _, again = floor(same, T0 + HOLD_S, 0.975)
    assert again.margin == pytest.approx(1.1 * 1.2) and again.raised_at == T0 + HOLD_S
    _, capped = floor(FloorState(margin=3.9), T0, 0.5)
    assert capped.margin == MAX_MARGIN


def test_the_margin_rises_only_while_attainment_keeps_falling() -> None:
    _, state = floor(FloorState(), T0, 0.98)
    _, recovering = floor(state, T0 + HOLD_S, 0.985)  # under target, but the misses stopped coming
    assert recovering.margin == state.margin


def test_the_margin_falls_slowly_while_under_half_the_budget_is_spent() -> None:
    # At or above 99.5 % (half the 1 % budget left) and no longer falling: one headroom step (x1/1.2) per
    # hold.
    state = FloorState(margin=3.0, raised_at=T0, last_attainment=0.995)
    _, held = floor(state, T0 + HOLD_S - 1.0, 0.999)
    assert held.margin == 3.0 and held.lowered_at is None
    _, lower = floor(held, T0 + HOLD_S, 0.999)
    assert lower.margin == pytest.approx(3.0 / 1.2) and lower.lowered_at == T0 + HOLD_S
    _, held_again = floor(lower, T0 + 2 * HOLD_S - 1.0, 1.0)  # one step per hold
    assert held_again.margin == pytest.approx(2.5)
    _, lower_again = floor(held_again, T0 + 2 * HOLD_S, 1.0)
    assert lower_again.margin == pytest.approx(2.5 / 1.2)


def test_the_margin_holds_while_attainment_is_under_target() -> None:
    state = FloorState(margin=3.0, raised_at=T0, last_attainment=0.97)
    _, after = floor(state, T0 + 10 * HOLD_S, 0.98)  # recovering, but still missing the target
    assert after.margin == 3.0 and after.lowered_at is None


def test_the_margin_holds_while_more_than_half_the_budget_is_spent() -> None:
    state = FloorState(margin=3.0, raised_at=T0, last_attainment=0.992)
    _, after = floor(state, T0 + 10 * HOLD_S, 0.994)  # met and recovering, but 0.6 % of 1 % spent
    assert after.margin == 3.0 and after.lowered_at is None


def test_the_margin_holds_while_attainment_is_still_falling() -> None:
    state = FloorState(margin=3.0, raised_at=T0, last_attainment=1.0)
    _, after = floor(state, T0 + 10 * HOLD_S, 0.995)  # met, but misses are coming
    assert after.margin == 3.0 and after.lowered_at is None


def test_the_margin_may_fall_below_one_to_spend_the_error_budget() -> None:
    replicas, state = floor(FloorState(last_attainment=1.0), T0, 1.0)
    assert state.margin == pytest.approx(1.0 / 1.2)
    assert replicas == 2  # ceil(0.83 x 2)
    _, least = floor(FloorState(margin=0.26, raised_at=T0, last_attainment=1.0), T0 + HOLD_S, 1.0)
    assert least.margin == MIN_MARGIN == 0.25
    _, same = floor(least, T0 + 2 * HOLD_S, 1.0)
    assert same.margin == MIN_MARGIN and same.lowered_at == least.lowered_at


def test_no_raise_while_a_larger_floor_is_still_coming_up() -> None:
    state = FloorState(floor=2, floor_grew_at=T0, last_attainment=0.99)
    _, early = floor(state, T0 + HOLD_S - 1.0, 0.98)  # its pods may still be starting
    assert early.margin == 1.0 and early.raised_at is None
    _, later = floor(early, T0 + HOLD_S, 0.975)
    assert later.margin == pytest.approx(1.2) and later.raised_at == T0 + HOLD_S
    assert later.floor == 3 and later.floor_grew_at == T0 + HOLD_S


def test_the_request_size_is_smoothed_over_the_hold() -> None:
    _, state = floor(FloorState(), T0, None, tokens=1000.0)
    replicas, half = floor(state, T0 + HOLD_S / 2, None, tokens=3000.0)
    assert half.prompt_per_request == pytest.approx(2000.0)
    assert replicas == 2  # 10 x 2,000 / (5,000 x 2)
    _, full = floor(half, T0 + 2 * HOLD_S, None, tokens=3000.0)
    assert full.prompt_per_request == pytest.approx(3000.0)


def test_a_raise_at_time_zero_holds_like_any_other() -> None:
    _, raised = floor(FloorState(), 0.0, 0.985)
    assert raised.raised_at == 0.0
    _, after = floor(raised, 1.0, 1.0)
    assert after.margin == raised.margin


def test_budget_flags_respect_vllms_rule_that_the_budget_covers_max_num_seqs() -> None:
    # The variant sets nothing: the budget, and sequences capped at it when below vLLM's default 1,024.
    assert budget_flags(variant(), 512) == ["--max-num-batched-tokens", "512", "--max-num-seqs", "512"]
    assert budget_flags(variant(), 2048) == ["--max-num-batched-tokens", "2048"]
    # The variant's own --max-num-seqs stays and lifts the budget to it.
    assert budget_flags(variant("--max-num-seqs", "128"), 512) == ["--max-num-batched-tokens", "512"]
    assert budget_flags(variant("--max-num-seqs=1500"), 512) == ["--max-num-batched-tokens", "1500"]
    # The variant's own budget wins; no budget, no flags.
    assert budget_flags(variant("--max-num-batched-tokens", "4096"), 512) == []
    assert budget_flags(variant(), None) == []


def test_max_running_mirrors_the_rendered_flags() -> None:
    assert max_running(variant(), 512) == 512
    assert max_running(variant(), 2048) == 1024  # vLLM's default stays
    assert max_running(variant("--max-num-seqs", "128"), 512) == 128
    assert max_running(variant("--max-num-batched-tokens", "256"), 512) == 1024  # not greenllm's budget
    assert max_running(variant(), None) == 1024
