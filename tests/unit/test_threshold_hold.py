"""The decision step keeps the fast tier's burst threshold in force against the jitter of its rates
(core.burst.held_threshold through core.step): the threshold it published is in the loop state, survives
status.controllerState, and the next tick keeps it while the exact value only jitters across an edge."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from greenllm.api.v1alpha1 import PowerMode
from greenllm.calibration import default_energy_model
from greenllm.core.decision import Decision, Observation
from greenllm.core.performance import PowerSetting
from greenllm.core.step import LoopState, initial_state, step
from greenllm.modelfile import load_green_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama-3.1-8b-h100.yaml"
SPEC = load_green_model(EXAMPLE).spec
SOURCE = default_energy_model()
REQUESTS_PER_S = 10.0


def observe(t: float, prompt_tokens: float) -> Observation:
    """A steady load of requests of `prompt_tokens` each, nothing waiting, the SLOs met."""
    return Observation(
        time=t,
        prompt_tokens_per_s=REQUESTS_PER_S * prompt_tokens,
        output_tokens_per_s=REQUESTS_PER_S * 200.0,
        requests_per_s=REQUESTS_PER_S,
        requests_waiting=0.0,
        attainment=0.999,
    )


def start() -> LoopState:
    return initial_state(SPEC, 0.0, Decision("int8", 2, PowerSetting(limit_w=450.0), None, "seed", True))


def threshold(state: LoopState, t: float, prompt_tokens: float) -> tuple[float, LoopState]:
    new, decision = step(SPEC, state, observe(t, prompt_tokens), t, SOURCE)
    assert decision.fast_tier is not None, "the example must run a fast tier for this test to mean anything"
    return decision.fast_tier.rule.burst_at_waiting, new


def edge() -> tuple[float, float]:
    """A prompt size where a fresh state's threshold steps down by one (larger prompts: fewer requests
    waiting already need the burst setting), found by bisection; (the threshold below it, the size)."""
    low, high = 200.0, 4000.0
    top, _ = threshold(start(), 15.0, low)
    assert threshold(start(), 15.0, high)[0] < top
    for _ in range(40):
        middle = (low + high) / 2
        if threshold(start(), 15.0, middle)[0] == top:
            low = middle
        else:
            high = middle
    below, _ = threshold(start(), 15.0, low)
    return below, high


def test_jitter_across_an_edge_keeps_the_threshold_and_a_real_change_moves_it() -> None:
    below, size = edge()
    before, state = threshold(start(), 15.0, size * 0.999)
    assert before == below and state.floor.burst_at_waiting == below
    fresh, _ = threshold(start(), 30.0, size * 1.001)
    assert fresh == below - 1  # without the one in force, the jitter would flip it
    kept, state = threshold(LoopState.from_status(state.to_status()), 30.0, size * 1.001)
    assert kept == below  # through status.controllerState too (a restart keeps it)
    moved, _ = threshold(state, 45.0, size * 2.0)
    assert moved < below


def test_no_fast_tier_clears_the_threshold_in_force() -> None:
    off = SPEC.model_copy(update={"power": SPEC.power.model_copy(update={"mode": PowerMode.OFF})})
    state = start()
    state = replace(state, floor=replace(state.floor, burst_at_waiting=3.0))
    new, decision = step(off, state, observe(15.0, 1000.0), 15.0, SOURCE)
    assert decision.fast_tier is None and new.floor.burst_at_waiting is None
