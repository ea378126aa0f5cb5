"""Stability rules: when a better plan is worth acting on. Small pure functions.

Rules:
- Saving of a change = (power now - power after) / power now, both at the current demand. For a variant
  switch, both fleets as the burst rules will run them (core.step.run_candidate: at least each variant's
  warm floor of replicas, at its fast tier's efficient setting), not as the fluid plan sized them.
- Variant switch (restarts every pod): only when the saving is at least `scaling.switchThreshold` and
  some switch has been worth it on every tick for `scaling.switchHold` (`gate_switch`). A switch
  goes to the best variant of the tick on which the hold ends. A tick where no switch is worth it
  resets the hold. The hold is skipped when the current variant cannot serve at all (see step).
- Power setting (no restart): changed when the current one no longer meets the SLOs and budgets, or
  when the new one saves at least `scaling.switchThreshold` (`worth_switching`); no hold.
- Replicas: the Kubernetes HPA stabilization rule (`stabilize_replicas`): scale up to the smallest
  recommendation of the last `scaleUpStabilization`, scale down to the largest recommendation of the
  last `scaleDownStabilization`. A noisy demand thus raises replicas at once (with the default 0 s up
  window) and lowers them only when every recommendation in the down window is lower, so replicas change
  down at most once per quiet window and never oscillate faster than the windows. The decision step
  applies the down-window to the demand instead (`core.step`, rule 2: plan on the window's peak demand,
  so variant and power setting are sized for it too) and calls this with the up-window only.
"""

from __future__ import annotations

from dataclasses import dataclass

from greenllm.core.performance import PowerSetting

History = tuple[tuple[float, int], ...]


def saving(current_w: float, candidate_w: float) -> float:
    """Relative saving of moving from `current_w` to `candidate_w` (negative = costs more)."""
    if current_w <= 0.0:
        return 0.0 if candidate_w >= current_w else 1.0
    return (current_w - candidate_w) / current_w


def worth_switching(current_w: float, candidate_w: float, threshold: float) -> bool:
    """A change pays for itself: it saves something, and at least `threshold` of the current power."""
    s = saving(current_w, candidate_w)
    return s > 0.0 and s >= threshold


@dataclass(frozen=True, slots=True)
class SwitchGate:
    switch: bool  # act on the switch now
    pending_variant: str | None  # the variant worth switching to while the hold runs
    pending_since: float | None  # since when some switch has been worth it
    reason: str  # human-readable; empty when no switch was considered


def gate_switch(
    current_variant: str,
    current_w: float,
    candidate_variant: str,
    candidate_w: float,
    threshold: float,
    hold_s: float,
    pending_since: float | None,
    now: float,
) -> SwitchGate:
    """Decide whether to switch variant now (see the module rules)."""
    if candidate_variant == current_variant:
        return SwitchGate(False, None, None, "")
    pct = saving(current_w, candidate_w) * 100.0
    if not worth_switching(current_w, candidate_w, threshold):
        return SwitchGate(
            False,
            None,
            None,
            f"kept variant {current_variant}: {candidate_variant} would save {pct:.1f}% "
            f"< switchThreshold {threshold * 100:.0f}%",
        )
    since = now if pending_since is None else pending_since
    held = now - since
    if held >= hold_s:
        return SwitchGate(
            True,
            None,
            None,
            f"switched variant {current_variant} -> {candidate_variant}: saves {pct:.1f}% "
            f">= switchThreshold {threshold * 100:.0f}% for {held:.0f}s >= switchHold {hold_s:.0f}s",
        )
    return SwitchGate(
        False,
        candidate_variant,
        since,
        f"kept variant {current_variant}: switch to {candidate_variant} saves {pct:.1f}%, "
        f"pending {held:.0f}s of switchHold {hold_s:.0f}s",
    )


def keep_setting(
    current: PowerSetting, current_w: float | None, best: PowerSetting, best_w: float, threshold: float
) -> bool:
    """Keep the current power setting when it still qualifies (`current_w` not None) and the best one
    does not save at least `threshold`."""
    if current == best or current_w is None:
        return current == best
    return not worth_switching(current_w, best_w, threshold)


def _prune(history: History, now: float, keep_s: float) -> History:
    """Drop entries older than `keep_s`, and those no future window can need: every window holding an
    entry also holds all later ones, so an entry with a later one >= it and a later one <= it never
    decides a window's max or min. What stays is at most about 2 x (max - min replicas) entries."""
    recent = [(t, n) for t, n in history if now - t <= keep_s]
    out: list[tuple[float, int]] = []
    later_max: int | None = None
    later_min: int | None = None
    for t, n in reversed(recent):
        dominated = later_max is not None and later_min is not None and later_max >= n >= later_min
        if not dominated:
            out.append((t, n))
        later_max = n if later_max is None else max(later_max, n)
        later_min = n if later_min is None else min(later_min, n)
    out.reverse()
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Stabilized:
    replicas: int
    history: History
    reason: str  # empty when the recommendation is applied as is


def stabilize_replicas(
    current: int, recommended: int, history: History, now: float, up_s: float, down_s: float
) -> Stabilized:
    """HPA-style stabilization of a replica recommendation (see the module rules)."""
    full = (*history, (now, recommended))
    up_floor = min(n for t, n in full if now - t <= up_s)
    down_ceiling = max(n for t, n in full if now - t <= down_s)
    replicas = current
    if replicas < up_floor:
        replicas = up_floor
    if replicas > down_ceiling:
        replicas = down_ceiling
    kept = _prune(full, now, max(up_s, down_s))
    reason = ""
    if replicas != recommended:
        if recommended < current:
            reason = (
                f"scale-down to {recommended} held by scaleDownStabilization {down_s:.0f}s "
                f"(highest recommendation in window: {down_ceiling})"
            )
        else:
            reason = (
                f"scale-up to {recommended} held by scaleUpStabilization {up_s:.0f}s "
                f"(lowest recommendation in window: {up_floor})"
            )
    return Stabilized(replicas, kept, reason)
