"""core.power: units, clamping to device constraints, restraint, and which GPU gets what."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.core.power import (
    Applied,
    Assignment,
    Backoff,
    Change,
    Claim,
    GpuIdentity,
    HoldPolicy,
    LimitConstraints,
    Requested,
    Resolved,
    Role,
    assign,
    decide_change,
    is_absurd_power,
    mj_to_joules,
    mw_to_watts,
    plan_clock,
    plan_limit,
    resolve_device_id,
    target_for,
    watts_to_mw,
)

# H100 SXM5: min 200 W, max 700 W, default 700 W (shared/data/gpu_specs/gpu_power_specs.csv).
H100 = LimitConstraints(min_mw=200_000, max_mw=700_000, default_mw=700_000)
# A100 SXM4 80GB: min 100 W, max 400 W, default 400 W (same file).
A100 = LimitConstraints(min_mw=100_000, max_mw=400_000, default_mw=400_000)
HOLD = HoldPolicy(deadband_mw=5_000, min_hold_s=60.0)


# ------------------------------------------------------------------------------------------ units


def test_watts_and_milliwatts() -> None:
    assert watts_to_mw(350) == 350_000
    assert watts_to_mw(212.5) == 212_500
    assert watts_to_mw(0.0004) == 0
    assert mw_to_watts(450_000) == 450.0
    assert mj_to_joules(1_500) == 1.5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_watts_to_mw_refuses_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        watts_to_mw(bad)


@pytest.mark.parametrize("bad", [1e308, -1e308, 1e7, 1.8e305])
def test_watts_to_mw_refuses_absurdly_large_not_overflows(bad: float) -> None:
    with pytest.raises(ValueError):  # was OverflowError (round(inf)) for 1e308
        watts_to_mw(bad)


@pytest.mark.parametrize("huge", [1e308, 1.7976931348623157e308, 1e7, 700.0011])
def test_limit_absurdly_large_is_refused_before_conversion(huge: float) -> None:
    plan = plan_limit(huge, H100)
    assert plan.target_mw is None
    assert plan.refused is not None and "above the device maximum 700 W" in plan.refused


@pytest.mark.parametrize(
    "device_id", ["9" * 5000, "²", "٣", "1²"], ids=["5000-digits", "sup2", "arabic3", "1sup2"]
)
def test_device_ids_that_are_not_ascii_indices_are_not_gpus(device_id: str) -> None:
    gpus = [GpuIdentity(uuid="GPU-a", index=3), GpuIdentity(uuid="GPU-b", index=1)]
    assert resolve_device_id(device_id, gpus) is None


@given(st.integers(min_value=0, max_value=2_000_000))
def test_mw_round_trip(mw: int) -> None:
    assert watts_to_mw(mw_to_watts(mw)) == mw


def test_constraints_are_checked() -> None:
    with pytest.raises(ValueError):
        LimitConstraints(min_mw=300_000, max_mw=200_000, default_mw=250_000)
    with pytest.raises(ValueError):
        LimitConstraints(min_mw=100_000, max_mw=400_000, default_mw=500_000)


# ------------------------------------------------------------------------------------------ clamping


def test_limit_in_range_is_kept() -> None:
    plan = plan_limit(450.0, H100)
    assert (plan.target_mw, plan.clamped, plan.refused) == (450_000, False, None)


def test_limit_below_minimum_is_clamped_up() -> None:
    plan = plan_limit(150.0, H100)
    assert plan.target_mw == 200_000
    assert plan.clamped
    assert plan.requested_w == 150.0


def test_limit_above_maximum_is_refused() -> None:
    plan = plan_limit(701.0, H100)
    assert plan.target_mw is None
    assert plan.refused is not None and "above the device maximum 700 W" in plan.refused


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf])
def test_limit_not_positive_is_refused(bad: float) -> None:
    assert plan_limit(bad, A100).refused is not None


def test_no_limit_means_default() -> None:
    plan = plan_limit(None, A100)
    assert plan.target_mw is None and not plan.clamped and plan.refused is None


@given(st.floats(min_value=1.0, max_value=1000.0, allow_nan=False))
def test_a_target_is_always_within_constraints(watts: float) -> None:
    plan = plan_limit(watts, H100)
    if plan.refused is None:
        assert plan.target_mw is not None
        assert H100.min_mw <= plan.target_mw <= H100.max_mw
        assert plan.clamped == (watts_to_mw(watts) < H100.min_mw)
    else:
        assert watts_to_mw(watts) > H100.max_mw


def test_clock_snaps_down_to_a_supported_clock() -> None:
    supported = [1035, 1770, 1980]
    assert plan_clock(1770, supported).target_mhz == 1770
    snapped = plan_clock(1800, supported)
    assert (snapped.target_mhz, snapped.clamped) == (1770, True)
    lowest = plan_clock(500, supported)
    assert (lowest.target_mhz, lowest.clamped) == (1035, True)
    assert plan_clock(2100, supported).refused is not None
    assert plan_clock(1500, []).refused is not None
    assert plan_clock(None, supported).target_mhz is None


def test_absurd_power() -> None:
    assert not is_absurd_power(690_000, 700_000, 1.5)
    assert not is_absurd_power(1_050_000, 700_000, 1.5)
    assert is_absurd_power(1_050_001, 700_000, 1.5)
    assert is_absurd_power(-1, 700_000, 1.5)


# ------------------------------------------------------------------------------------------ restraint


def test_first_change_applies_at_once() -> None:
    assert decide_change(Applied(), 300_000, None, H100.default_mw, 0.0, HOLD) is Change.APPLY


def test_same_setting_is_no_change() -> None:
    applied = Applied(limit_mw=300_000, changed_at=0.0)
    assert decide_change(applied, 300_000, None, H100.default_mw, 1.0, HOLD) is Change.NONE


def test_deadband() -> None:
    applied = Applied(limit_mw=300_000, changed_at=0.0)
    assert decide_change(applied, 304_999, None, H100.default_mw, 1000.0, HOLD) is Change.NONE
    assert decide_change(applied, 305_000, None, H100.default_mw, 1000.0, HOLD) is Change.APPLY
    # A cap within the deadband of the default is not worth setting.
    assert decide_change(Applied(), 697_000, None, H100.default_mw, 0.0, HOLD) is Change.NONE


def test_hold_time() -> None:
    applied = Applied(limit_mw=300_000, changed_at=100.0)
    assert decide_change(applied, 400_000, None, H100.default_mw, 159.9, HOLD) is Change.HELD
    assert decide_change(applied, 400_000, None, H100.default_mw, 160.0, HOLD) is Change.APPLY


def test_urgent_restore_ignores_hold_and_deadband() -> None:
    applied = Applied(limit_mw=698_000, changed_at=100.0)
    assert decide_change(applied, None, None, H100.default_mw, 101.0, HOLD, urgent=True) is Change.APPLY
    locked = Applied(clock_mhz=1770, changed_at=100.0)
    assert decide_change(locked, None, None, H100.default_mw, 101.0, HOLD, urgent=True) is Change.APPLY


def test_clock_change_is_never_in_the_deadband() -> None:
    applied = Applied(limit_mw=300_000, changed_at=0.0)
    assert decide_change(applied, 300_000, 1770, H100.default_mw, 100.0, HOLD) is Change.APPLY


def test_backoff_doubles_up_to_a_cap() -> None:
    backoff = Backoff(base_s=10.0, max_s=100.0)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 10.0, 20.0, 40.0, 80.0, 100.0]


# ------------------------------------------------------------------------------------------ which GPU

GPUS = [
    GpuIdentity("GPU-aaaa", 0),
    GpuIdentity("GPU-bbbb", 1, mig_uuids=("MIG-1111", "MIG-2222")),
    GpuIdentity("GPU-cccc", 2),
]


def test_device_ids_by_uuid_index_mig_and_replica() -> None:
    assert resolve_device_id("GPU-aaaa", GPUS) == Resolved("GPU-aaaa", False)
    assert resolve_device_id("2", GPUS) == Resolved("GPU-cccc", False)
    assert resolve_device_id("MIG-2222", GPUS) == Resolved("GPU-bbbb", True)
    assert resolve_device_id("GPU-aaaa::3", GPUS) == Resolved("GPU-aaaa", True)
    assert resolve_device_id("0::1", GPUS) == Resolved("GPU-aaaa", True)
    assert resolve_device_id("GPU-ffff", GPUS) is None
    assert resolve_device_id("7", GPUS) is None


def test_assign_owned_shared_free() -> None:
    claims = [
        Claim(pod="ns/a-1", gpu_uuid="GPU-aaaa", owner="ns/a"),
        Claim(pod="ns/a-2", gpu_uuid="GPU-aaaa", owner="ns/a", partition=True),
        Claim(pod="ns/a-1", gpu_uuid="GPU-bbbb", owner="ns/a", partition=True),
        Claim(pod="other/x", gpu_uuid="GPU-bbbb", owner=None, partition=True),
    ]
    result = assign(["GPU-aaaa", "GPU-bbbb", "GPU-cccc"], claims)
    assert result["GPU-aaaa"].role is Role.OWNED and result["GPU-aaaa"].owner == "ns/a"
    assert result["GPU-aaaa"].pods == ("ns/a-1", "ns/a-2")
    assert result["GPU-bbbb"].role is Role.SHARED
    assert "other/x" in result["GPU-bbbb"].reason
    assert result["GPU-cccc"].role is Role.FREE


def test_gpu_held_only_by_foreign_pods_is_foreign() -> None:
    foreign = assign(["GPU-aaaa"], [Claim(pod="other/x", gpu_uuid="GPU-aaaa", owner=None)])["GPU-aaaa"]
    assert foreign.role is Role.FOREIGN
    assert foreign.owner is None


def test_two_greenmodels_on_one_gpu_share_it() -> None:
    claims = [
        Claim(pod="ns/a-1", gpu_uuid="GPU-aaaa", owner="ns/a", partition=True),
        Claim(pod="ns/b-1", gpu_uuid="GPU-aaaa", owner="ns/b", partition=True),
    ]
    shared = assign(["GPU-aaaa"], claims)["GPU-aaaa"]
    assert shared.role is Role.SHARED
    assert shared.owner == "ns/a,ns/b"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", "p3"]),
            st.sampled_from(["g1", "g2"]),
            st.sampled_from([None, "A", "B"]),
        )
    )
)
def test_owned_means_every_holder_has_that_owner(rows: list[tuple[str, str, str | None]]) -> None:
    claims = [Claim(pod=p, gpu_uuid=g, owner=o) for p, g, o in rows]
    for uuid, a in assign(["g1", "g2"], claims).items():
        owners = {c.owner for c in claims if c.gpu_uuid == uuid}
        if a.role is Role.OWNED:
            assert owners == {a.owner}
        elif a.role is Role.FREE:
            assert owners == set()
        elif a.role is Role.FOREIGN:
            assert owners == {None}
        else:
            assert len(owners) > 1 and owners != {None}


# ------------------------------------------------------------------------------------------ targets


def test_target_owned_gpu_gets_the_request_clamped() -> None:
    owned = Assignment("GPU-aaaa", Role.OWNED, owner="ns/a")
    target = target_for(owned, Requested(limit_w=150.0, clock_mhz=1800), H100, (1035, 1770, 1980), False)
    assert target.limit.target_mw == 200_000 and target.limit.clamped
    assert target.clock.target_mhz == 1770
    assert not target.leave and not target.urgent


def test_target_refused_request_leaves_gpu_alone() -> None:
    owned = Assignment("GPU-aaaa", Role.OWNED, owner="ns/a")
    target = target_for(owned, Requested(limit_w=900.0), H100, (), True)
    assert target.leave and target.refused


def test_target_shared_or_free_restores_only_what_we_changed() -> None:
    for role in (Role.SHARED, Role.FOREIGN, Role.FREE):
        a = Assignment("GPU-aaaa", role)
        ours = target_for(a, None, H100, (), changed_by_us=True)
        assert ours.urgent and not ours.leave and ours.limit.target_mw is None
        theirs = target_for(a, None, H100, (), changed_by_us=False)
        assert theirs.leave
