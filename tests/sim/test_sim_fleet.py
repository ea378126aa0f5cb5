"""The simulated fleet: start-up delay, readiness probes, GPU limits and rolling variant switches."""

from __future__ import annotations

from simkit import perf

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.render import deployment
from greenllm.sim.fleet import Fleet, FleetTarget, RolloutStrategy

DEFAULT = PowerSetting()


def lookup(variant: str, setting: PowerSetting) -> ReplicaPerformance:
    return perf(idle=100.0 if variant == "old" else 80.0)


def fleet(gpus: int = 8, startup: float = 25.0, instant: bool = False) -> Fleet:
    return Fleet(lookup, 1, gpus, startup, RolloutStrategy(probe_period_s=10.0), instant=instant)


def ready(f: Fleet, now: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pod in f.ready_pods(now):
        counts[pod.variant] = counts.get(pod.variant, 0) + 1
    return counts


def test_new_pods_are_ready_at_the_first_probe_after_start_up() -> None:
    f = fleet()
    f.start_ready(FleetTarget("old", 1, DEFAULT), 0.0)
    f.apply(FleetTarget("old", 3, DEFAULT), 0.0)
    f.reconcile(0.0)
    assert ready(f, 29.0) == {"old": 1}
    assert ready(f, 30.0) == {"old": 3}  # 25 s of start-up, probes every 10 s


def test_starting_pods_hold_gpus_at_idle_power_pending_ones_do_not() -> None:
    f = fleet(gpus=2)
    f.start_ready(FleetTarget("old", 1, DEFAULT), 0.0)
    f.apply(FleetTarget("old", 2, DEFAULT), 0.0)
    f.reconcile(0.0)
    assert f.starting_power_w(0.0) == 100.0  # the ready replica's power is its server's, not the fleet's
    assert f.holding_gpus() == 2
    assert f.starting_power_w(30.0) == 0.0  # ready at the probe at 30 s
    # A surge pod of a new variant finds no free GPU: Pending, it holds nothing and draws nothing.
    f.apply(FleetTarget("new", 2, DEFAULT), 40.0)
    f.reconcile(40.0)
    assert len(f.pods) == 3 and f.holding_gpus() == 2
    assert f.starting_power_w(40.0) == 0.0


def test_replicas_are_capped_by_the_gpus() -> None:
    f = fleet(gpus=3)
    f.start_ready(FleetTarget("old", 1, DEFAULT), 0.0)
    f.apply(FleetTarget("old", 10, DEFAULT), 0.0)
    f.reconcile(0.0)
    assert len(f.pods) == 3
    assert ready(f, 100.0) == {"old": 3}


def test_variant_switch_rolls_without_losing_capacity() -> None:
    # 2 replicas: maxSurge 25% -> 1, maxUnavailable 25% -> 0. Three GPUs: one new pod at a time.
    f = fleet(gpus=3)
    f.start_ready(FleetTarget("old", 2, DEFAULT), 0.0)
    f.apply(FleetTarget("new", 2, DEFAULT), 0.0)
    seen = []
    for t in range(0, 100):
        f.reconcile(float(t))
        r = ready(f, float(t))
        assert sum(r.values()) >= 2, (t, r)
        assert f.holding_gpus() <= 3
        seen.append(r)
    assert seen[0] == {"old": 2}
    assert seen[30] == {"new": 1, "old": 1}
    assert seen[60] == {"new": 2}


def test_each_pod_holds_its_variants_gpus_through_a_switch() -> None:
    """A 2-GPU teacher rolled to a 1-GPU student (variants[].gpuCount) on 6 GPUs: the scheduler counts each
    pod's own GPUs, the cap on replicas is per variant, and the roll keeps 3 of 4 replicas ready."""
    f = Fleet(lookup, {"old": 2, "new": 1}, 6, 25.0, RolloutStrategy(probe_period_s=10.0))
    assert (f.max_pods("old"), f.max_pods("new")) == (3, 6)
    f.start_ready(FleetTarget("old", 5, DEFAULT), 0.0)
    assert len(f.pods) == 3 and f.holding_gpus() == 6  # capped by the teacher's 2 GPUs per pod
    f.apply(FleetTarget("old", 2, DEFAULT), 0.0)
    f.reconcile(0.0)
    assert (f.holding_pods(), f.holding_gpus()) == (2, 4)
    f.apply(FleetTarget("new", 4, DEFAULT), 1.0)
    seen = {}
    for t in range(1, 120):
        f.reconcile(float(t))
        assert f.holding_gpus() <= 6, t
        seen[t] = (ready(f, float(t)), f.holding_pods(), f.holding_gpus(), len(f.pods))
    # maxSurge 1: three new pods; two start in the 2 free GPUs, the third is Pending (it holds nothing).
    assert seen[1] == ({"old": 2}, 4, 6, 5)
    # Two new ready: one old pod goes (3 of 4 stay ready), its 2 GPUs start the Pending and a last new pod.
    assert seen[31] == ({"old": 1, "new": 2}, 5, 6, 5)
    assert seen[61] == ({"new": 4}, 4, 4, 4)
    # A wider variant than the cluster: no pod of it at all (the simulate command refuses such a cluster).
    assert Fleet(lookup, {"old": 8, "new": 1}, 6, 25.0, RolloutStrategy()).max_pods("old") == 0


def test_scale_down_removes_starting_pods_before_ready_ones() -> None:
    f = fleet()
    f.start_ready(FleetTarget("old", 2, DEFAULT), 0.0)
    f.apply(FleetTarget("old", 4, DEFAULT), 0.0)
    f.reconcile(0.0)
    f.apply(FleetTarget("old", 2, DEFAULT), 5.0)
    f.reconcile(5.0)
    assert ready(f, 5.0) == {"old": 2}
    assert f.holding_gpus() == 2


def test_power_setting_applies_to_running_pods_without_restart() -> None:
    f = fleet(gpus=4)
    f.start_ready(FleetTarget("old", 2, DEFAULT), 0.0)
    before = list(f.pods)
    f.apply(FleetTarget("old", 2, PowerSetting(limit_w=300.0)), 1.0)
    f.reconcile(1.0)
    assert ready(f, 1.0) == {"old": 2}
    assert f.pods == before and all(a is b for a, b in zip(f.pods, before, strict=True))
    assert f.setting == PowerSetting(limit_w=300.0)


def test_starting_pods_draw_idle_power_at_the_current_setting() -> None:
    seen: list[PowerSetting] = []

    def spy(variant: str, setting: PowerSetting) -> ReplicaPerformance:
        seen.append(setting)
        return perf()

    f = Fleet(spy, 1, 4, 60.0, RolloutStrategy())
    f.start_ready(FleetTarget("old", 1, DEFAULT), 0.0)
    f.apply(FleetTarget("old", 2, PowerSetting(limit_w=300.0)), 1.0)
    f.reconcile(1.0)
    assert f.starting_power_w(1.0) == 100.0
    assert seen[-1] == PowerSetting(limit_w=300.0)


def test_instant_fleet_changes_at_once() -> None:
    f = fleet(instant=True)
    f.start_ready(FleetTarget("old", 1, DEFAULT), 0.0)
    f.apply(FleetTarget("new", 5, DEFAULT), 3.0)
    f.reconcile(3.0)
    assert ready(f, 3.0) == {"new": 5}
    assert f.starting_power_w(3.0) == 0.0


def test_rollout_parameters_come_from_the_rendered_deployment(spec: GreenModelSpec) -> None:
    owner = {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}}
    rendered = deployment(owner, spec, Decision("hq", 4, DEFAULT, None, "test"))
    strategy = RolloutStrategy.from_deployment(rendered)
    probe = rendered["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"]
    assert strategy.probe_period_s == probe
    # Kubernetes defaults when the Deployment sets no strategy: 25% surge rounded up, 25% unavailable down.
    assert strategy.surge(4) == 1 and strategy.unavailable(4) == 1
    assert strategy.surge(5) == 2 and strategy.unavailable(5) == 1
    assert RolloutStrategy(max_surge=0, max_unavailable="50%").unavailable(5) == 2
