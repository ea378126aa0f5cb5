"""The runner-ups a decision shows, each with why it was not chosen (more power, over the budget, or the
SLO rule it breaks)."""

from __future__ import annotations

from greenllm.core.decision import Option
from greenllm.core.plan_rules import Candidate, Pair
from greenllm.core.plan_space import PlanSpace


def alternatives(
    space: PlanSpace, chosen: Candidate | None, allowed_w: float | None, count: int = 3
) -> tuple[Option, ...]:
    """Runner-ups with why not: one replica fewer than the chosen configuration (why more are needed),
    then the best configuration of the other variants with the least power (one each: the power
    difference, or the budget they break), then variants that cannot meet the SLOs (the rule they
    break), then other settings of the same variants when there are few variants."""
    picked: list[Option] = []
    if chosen is not None and chosen.replicas - 1 >= space.min_replicas and chosen.slo_met:
        pair = space.find(chosen.variant, chosen.setting)
        if pair is not None:
            fewer = space.candidate(pair, chosen.replicas - 1)
            picked.append(fewer.option(fewer.why_not or _over_budget(fewer, allowed_w) or "more power"))
    want = count - len(picked)
    chosen_variant = None if chosen is None else chosen.variant
    chosen_setting = None if chosen is None else chosen.setting
    shown = space.least_by_variant(want, chosen_variant) if want > 0 else []
    if len(shown) < want:  # variants that cannot meet the SLOs: the one serving the most first
        have = {p.variant for p in shown} | {chosen_variant}
        stuck = [p for p in space.pairs if p.variant not in have and p.n_need is None]
        top = space.max_replicas
        stuck.sort(key=lambda p: -(top / p.work if p.work > top else 1.0))  # by share served at the top
        for pair in stuck:
            if len(shown) >= want:
                break
            if pair.variant not in have:
                have.add(pair.variant)
                shown.append(pair)
    if len(shown) < want:  # few variants: other settings of the same variants
        used = {id(p) for p in shown}
        rest = [
            p
            for p in space.ordered()
            if id(p) not in used and not (p.variant == chosen_variant and p.setting == chosen_setting)
        ]
        for pair in rest:
            space.evaluate(pair)
        rest.sort(key=lambda p: p.best_w)
        shown.extend(rest[: want - len(shown)])
    picked.extend(_runner_up(space, pair, chosen, allowed_w) for pair in shown)
    return tuple(picked)


def _runner_up(space: PlanSpace, pair: Pair, chosen: Candidate | None, allowed_w: float | None) -> Option:
    c = space.best(pair)
    if c is None:
        return space.candidate(pair, space.max_replicas).option(pair.why)
    over = _over_budget(c, allowed_w)
    if over:
        return c.option(over)
    if chosen is None:
        return c.option("not chosen")
    diff = c.power_w - chosen.power_w
    pct = diff / chosen.power_w * 100.0 if chosen.power_w > 0.0 else 0.0
    why = f"+{diff:.0f} W (+{pct:.1f}%)" if diff >= 0.0 else f"{diff:.0f} W, held by stability rules"
    return c.option(why)


def _over_budget(c: Candidate, allowed_w: float | None) -> str:
    if c.within(allowed_w):
        return ""
    assert allowed_w is not None
    return f"over budget: {c.power_w:.0f} W > {allowed_w:.0f} W allowed"
