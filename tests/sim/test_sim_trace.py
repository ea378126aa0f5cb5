"""Trace.replicated: the rate scaled by whole requests, as aligned copies or shifted populations."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from simkit import make_trace

from greenllm.sim.trace import Trace, load_trace

N = 400
DURATION = 100.0


@pytest.fixture(scope="module")
def base() -> Trace:
    rng = np.random.default_rng(3)
    arrival = np.sort(rng.uniform(0.0, DURATION, N))
    return make_trace(arrival, rng.integers(1, 5000, N).astype(float), rng.integers(1, 500, N), DURATION)


def pairs(trace: Trace) -> Counter[tuple[float, float]]:
    return Counter(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist(), strict=True))


def circular_gaps(times: np.ndarray) -> np.ndarray:
    return np.sort(np.append(np.diff(times), DURATION - times[-1] + times[0]))


def is_sorted(trace: Trace) -> bool:
    return bool(np.all(np.diff(trace.arrival_s) >= 0))


@pytest.mark.parametrize("mode", ["copies", "shifted"])
def test_factor_one_is_the_trace_itself(base: Trace, mode: str) -> None:
    same = base.replicated(1.0, mode, seed=5)
    assert np.array_equal(same.arrival_s, base.arrival_s)
    assert np.array_equal(same.prompt_tokens, base.prompt_tokens)
    assert np.array_equal(same.output_tokens, base.output_tokens)
    assert same.duration_s == base.duration_s and same.weight == 1.0


def test_copies_keep_every_time_and_multiply_every_request(base: Trace) -> None:
    triple = base.replicated(3.0, "copies")
    assert len(triple) == 3 * N
    assert triple.weight == 1.0 and triple.duration_s == DURATION
    assert Counter(triple.arrival_s.tolist()) == Counter({t: 3 for t in base.arrival_s.tolist()})
    by_request = Counter(
        zip(
            triple.arrival_s.tolist(),
            triple.prompt_tokens.tolist(),
            triple.output_tokens.tolist(),
            strict=True,
        )
    )
    original = zip(
        base.arrival_s.tolist(), base.prompt_tokens.tolist(), base.output_tokens.tolist(), strict=True
    )
    assert by_request == Counter({r: 3 for r in original})
    assert triple.total_prompt_tokens == pytest.approx(3 * base.total_prompt_tokens)


def test_fractional_copies_add_each_request_once_more_with_the_fraction(base: Trace) -> None:
    big = make_trace(np.linspace(0.0, 10.0, 20_000), 100.0, 10.0)
    scaled = big.replicated(2.25, "copies", seed=1)
    # Binomial(20,000, 0.25) extra requests: mean 5,000, sd 61.
    assert abs(len(scaled) - 2.25 * len(big)) < 5 * 61
    assert set(scaled.arrival_s.tolist()) <= set(big.arrival_s.tolist())
    assert is_sorted(scaled)
    assert len(base.replicated(0.5, "copies", seed=2)) < N


def test_shifted_copies_are_the_same_requests_at_other_times(base: Trace) -> None:
    shifted = base.replicated(4.0, "shifted", seed=11)
    assert len(shifted) == 4 * N
    assert pairs(shifted) == Counter({k: 4 * v for k, v in pairs(base).items()})
    assert is_sorted(shifted)
    assert shifted.arrival_s.min() >= 0.0 and shifted.arrival_s.max() < DURATION
    assert shifted.duration_s == DURATION
    # Not aligned: most of the new requests arrive at times no original request arrives at.
    original = set(base.arrival_s.tolist())
    assert sum(t not in original for t in shifted.arrival_s.tolist()) >= 3 * N
    # The copy is the original rotated round the end: the same gaps between requests on the circle.
    copies = base.replicated(2.0, "shifted", seed=11)
    extra = np.sort(np.asarray([t for t in copies.arrival_s.tolist() if t not in original]))
    assert len(extra) == N
    assert np.allclose(circular_gaps(extra), circular_gaps(base.arrival_s), atol=1e-9)


def test_shifted_copies_of_the_shipped_trace_stay_within_it() -> None:
    trace = load_trace().window(0.0, 600.0)
    shifted = trace.replicated(2.0, "shifted", seed=0)
    assert len(shifted) == 2 * len(trace)
    assert shifted.arrival_s.min() >= 0.0 and shifted.arrival_s.max() <= trace.duration_s


def test_the_seed_decides_the_offsets(base: Trace) -> None:
    a = base.replicated(3.0, "shifted", seed=4)
    b = base.replicated(3.0, "shifted", seed=4)
    c = base.replicated(3.0, "shifted", seed=5)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    # Which requests a fraction keeps depends on the seed too.
    d = base.replicated(1.5, "copies", seed=4)
    e = base.replicated(1.5, "copies", seed=4)
    f = base.replicated(1.5, "copies", seed=5)
    assert np.array_equal(d.arrival_s, e.arrival_s)
    assert not np.array_equal(d.arrival_s, f.arrival_s) or len(d) != len(f)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan"), float("inf")])
def test_a_bad_factor_is_refused(base: Trace, factor: float) -> None:
    with pytest.raises(ValueError, match="rate scale"):
        base.replicated(factor, "copies")


def test_a_bad_mode_is_refused(base: Trace) -> None:
    with pytest.raises(ValueError, match="scale mode"):
        base.replicated(2.0, "stretched")


def test_a_fluid_scaled_trace_cannot_be_replicated(base: Trace) -> None:
    with pytest.raises(ValueError, match="unscaled"):
        base.scaled(2.0).replicated(2.0, "copies")
