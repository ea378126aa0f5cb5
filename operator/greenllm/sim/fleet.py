"""A simulated fleet: the pods of one GreenModel's Deployment, with start-up delay and a GPU limit.

The model, in full:
- A pod needs its variant's GPUs (`variants[].gpuCount`, else `spec.gpu.count`). A new pod waits
  (Pending) until that many GPUs of the cluster's `gpus` are free, then starts (pods are scheduled in
  creation order; one that does not fit does not hold back a smaller one behind it); it becomes ready
  at the first readiness probe after `startup_s` (image pull, container start, model load), probes
  firing every `probe_period_s` from its start.
- Changing the replica count scales the Deployment: new pods are created, or pods are deleted (Pending
  first, then not-ready, then ready ones, newest first), at once.
- Changing the variant changes the pod template, so the Deployment rolls: new-variant pods are created up
  to `replicas + maxSurge` pods in all, and old-variant pods are deleted as long as at least
  `replicas - maxUnavailable` pods stay ready (old pods not ready yet are deleted first). maxSurge and
  maxUnavailable come from the Deployment greenllm renders (Kubernetes defaults of 25% / 25% when it sets
  no strategy), percentages rounded up and down respectively, as Kubernetes does.
- The power setting is a GPU knob applied by the node agent, not a pod template change: it applies to
  every pod from the next step on, without a restart.
- A starting pod holds its GPUs at the idle power of its variant; a Pending pod holds nothing.
- `instant=True` (the oracle) skips all of this: the target fleet is ready at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from greenllm.core.fasttier import FastTier
from greenllm.core.performance import PowerSetting, ReplicaPerformance


@dataclass(frozen=True, slots=True)
class FleetTarget:
    """What a policy wants running."""

    variant: str
    replicas: int
    setting: PowerSetting  # the efficient setting when `fast_tier` is set
    fast_tier: FastTier | None = None


@dataclass(slots=True)
class Pod:
    variant: str
    created: float
    started: float | None = None  # GPUs acquired
    ready_at: float | None = None

    def is_ready(self, now: float) -> bool:
        return self.ready_at is not None and self.ready_at <= now


@dataclass(frozen=True, slots=True)
class RolloutStrategy:
    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"
    probe_period_s: float = 10.0

    @classmethod
    def from_deployment(cls, deployment: Mapping[str, Any]) -> RolloutStrategy:
        """Read the rolling-update parameters and readiness probe period from a rendered Deployment."""
        spec = deployment.get("spec", {})
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        probe = (containers[0].get("readinessProbe") if containers else None) or {}
        return cls(
            max_surge=rolling.get("maxSurge", "25%"),
            max_unavailable=rolling.get("maxUnavailable", "25%"),
            # Kubernetes' default probe period is 10 s.
            probe_period_s=float(probe.get("periodSeconds", 10)),
        )

    def surge(self, replicas: int) -> int:
        return _resolve(self.max_surge, replicas, round_up=True)

    def unavailable(self, replicas: int) -> int:
        return _resolve(self.max_unavailable, replicas, round_up=False)


def _resolve(value: int | str, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        raw = float(text[:-1]) * replicas / 100.0
        return math.ceil(raw - 1e-9) if round_up else math.floor(raw + 1e-9)
    return int(text)


PerfLookup = Callable[[str, PowerSetting], ReplicaPerformance]


class Fleet:
    def __init__(
        self,
        perf: PerfLookup,
        gpus_per_replica: int | Mapping[str, int],
        gpus: int,
        startup_s: float,
        strategy: RolloutStrategy,
        *,
        instant: bool = False,
    ) -> None:
        # One count for every variant, or one per variant (a distilled student may need fewer GPUs).
        self._per_variant = dict(gpus_per_replica) if isinstance(gpus_per_replica, Mapping) else {}
        self._default_gpus = gpus_per_replica if isinstance(gpus_per_replica, int) else None
        # Per variant, one the cluster cannot hold runs no pod (max_pods 0); the simulate command refuses a
        # cluster too small for any variant above the quality floor.
        if self._default_gpus is not None and gpus < self._default_gpus:
            raise ValueError(f"{gpus} GPUs cannot hold one replica of {self._default_gpus} GPUs")
        self._perf = perf
        self._gpus = gpus
        self._startup = startup_s
        self._strategy = strategy
        self._instant = instant
        self.pods: list[Pod] = []
        self.target: FleetTarget | None = None
        self.setting = PowerSetting()

    # -- views ------------------------------------------------------------------------------------------
    def ready_pods(self, now: float) -> list[Pod]:
        return [p for p in self.pods if p.is_ready(now)]

    def gpus_of(self, variant: str) -> int:
        """GPUs one pod of `variant` holds."""
        return self._need(variant)

    def max_pods(self, variant: str) -> int:
        """The most pods of `variant` the cluster's GPUs hold at once."""
        return self._gpus // self._need(variant)

    def holding_pods(self) -> int:
        """Pods holding GPUs (started: ready or starting)."""
        return sum(1 for p in self.pods if p.started is not None)

    def holding_gpus(self) -> int:
        """GPUs held by started pods, each its variant's count."""
        return sum(self._need(p.variant) for p in self.pods if p.started is not None)

    def _need(self, variant: str) -> int:
        need = self._per_variant.get(variant, self._default_gpus)
        if need is None:
            raise KeyError(f"no GPU count for variant {variant!r}")
        return need

    def starting_power_w(self, now: float) -> float:
        """Pods holding GPUs but not ready yet draw their variant's idle power."""
        return sum(
            self._perf(p.variant, self.setting).idle_power_w
            for p in self.pods
            if p.started is not None and not p.is_ready(now)
        )

    # -- control ----------------------------------------------------------------------------------------
    def apply(self, target: FleetTarget, now: float) -> None:
        """A policy's new target; takes effect through `reconcile`."""
        most = self.max_pods(target.variant)
        if target.replicas > most:
            target = FleetTarget(target.variant, most, target.setting, target.fast_tier)
        self.target = target
        self.setting = target.setting
        if self._instant:
            # Pods of the same variant stay (their servers keep what they hold); the newest go first.
            kept = [p for p in self.pods if p.variant == target.variant][: target.replicas]
            kept += [Pod(target.variant, now, now, now) for _ in range(target.replicas - len(kept))]
            self.pods = kept

    def reconcile(self, now: float) -> None:
        """One pass of the Deployment controller and the scheduler at `now`."""
        if self.target is None or self._instant:
            return
        self._schedule(now)
        n = self.target.replicas
        variant = self.target.variant
        new = [p for p in self.pods if p.variant == variant]
        old = [p for p in self.pods if p.variant != variant]
        if len(new) > n:
            self._delete(new, len(new) - n, now)
            new = [p for p in self.pods if p.variant == variant]
        if not old:
            for _ in range(n - len(new)):
                self.pods.append(Pod(variant, now))
        else:
            room = n + self._strategy.surge(n) - len(self.pods)
            for _ in range(max(0, min(n - len(new), room))):
                self.pods.append(Pod(variant, now))
            # Old pods that serve nothing go first; then ready old pods while enough stay ready.
            self._delete(old, sum(1 for p in old if not p.is_ready(now)), now)
            old = [p for p in self.pods if p.variant != variant]
            unavailable = self._strategy.unavailable(n)
            if unavailable == 0 and self._strategy.surge(n) == 0:
                unavailable = 1
            ready = sum(1 for p in self.pods if p.is_ready(now))
            removable = ready - (n - unavailable)
            self._delete(old, max(0, min(removable, len(old))), now)
            # Pods freed by the deletions may let more new pods in on this pass (as the controller would
            # on its next sync, which is well within a step).
            new = [p for p in self.pods if p.variant == variant]
            room = n + self._strategy.surge(n) - len(self.pods)
            for _ in range(max(0, min(n - len(new), room))):
                self.pods.append(Pod(variant, now))
        self._schedule(now)

    def _delete(self, pods: list[Pod], count: int, now: float) -> None:
        if count <= 0:
            return

        def order(p: Pod) -> tuple[int, float]:
            rank = 0 if p.started is None else 1 if not p.is_ready(now) else 2
            return (rank, -p.created)

        doomed = {id(p) for p in sorted(pods, key=order)[:count]}
        self.pods = [p for p in self.pods if id(p) not in doomed]

    def _schedule(self, now: float) -> None:
        free = self._gpus - self.holding_gpus()
        for pod in self.pods:
            if free <= 0:
                break
            if pod.started is None and self._need(pod.variant) <= free:
                pod.started = now
                period = self._strategy.probe_period_s
                probes = math.ceil(self._startup / period - 1e-9) if period > 0 else 0
                pod.ready_at = now + (probes * period if period > 0 else self._startup)
                free -= self._need(pod.variant)

    def start_ready(self, target: FleetTarget, now: float) -> None:
        """Put the initial fleet in place, already ready (the simulation starts in steady state)."""
        self.apply(target, now)
        if not self._instant:
            count = min(target.replicas, self.max_pods(target.variant))
            self.pods = [Pod(target.variant, now, now, now) for _ in range(count)]
