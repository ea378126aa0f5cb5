"""Benchmark of the decision step: 10 variants x replicas 1..64 x 8 power settings per GreenModel.

    PYTHONPATH=operator python hack/bench_planner.py [--ticks 3000] [--seed 1] [--check 300]

Times `planner.plan` (the planner alone: the whole search, choice, runner-ups) and `step.step` (accounting,
budgets, demand with its queue and down-window peak, SLO guard, planner and stability) per tick under
random demands spanning 0..64 replicas of work, with the performance source being (a) the real energy
model on the shipped calibration (it caches per variant and setting, as in the operator) and (b) a fixed
table of the same curves (planner cost only). One tick in four sees waiting requests and one in four a
TTFT p90 over the SLO, so the queue and guard paths are timed too; the budget lines run the Degrade
search (a 3 kW budget below what the SLOs need most of the time), and one line parses the spec again
before every tick, as the operator does (the parse is not timed). Prints p50, p99 and max in
milliseconds, wall-clock and CPU. `--check N` also compares N plans with an exhaustive search over every
replica count and reports mismatches (must be 0: the shortcuts are exact).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.table_source

from tests.table_source import TableSource

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.calibration import default_energy_model
from greenllm.core.decision import Demand, Observation
from greenllm.core.plan_rules import PerformanceSource
from greenllm.core.plan_space import PlanSpace
from greenllm.core.planner import plan
from greenllm.core.step import initial_state, step

PRECISIONS = ("bf16", "fp16", "fp8", "int8", "int4")


def bench_spec() -> GreenModelSpec:
    """10 variants: the five precisions from the calibrated profiles, and five with their own profiles
    (spec overrides, as a user with measurements would write them)."""
    variants: list[dict[str, Any]] = [
        {"name": f"{p}-cal", "precision": p, "image": "vllm", "quality": 1.0 - 0.01 * i}
        for i, p in enumerate(PRECISIONS)
    ]
    for i, p in enumerate(PRECISIONS):
        variants.append(
            {
                "name": f"{p}-measured",
                "precision": p,
                "image": "vllm",
                "quality": 0.99 - 0.01 * i,
                "profile": {
                    "outputTokensPerSecond": 4000 + 1000 * i,
                    "idlePowerW": 120,
                    "loadedPowerW": 650 - 20 * i,
                },
            }
        )
    return GreenModelSpec.model_validate(
        {
            "model": {"name": "Llama-3.1-8B-Instruct", "paramsBillions": 8},
            "gpu": {"type": "H100-SXM", "count": 1},
            "variants": variants,
            "replicas": {"min": 1, "max": 64},
            "scaling": {"interval": "15s", "scaleDownStabilization": "5m", "switchHold": "5m"},
        }
    )


def as_table(spec: GreenModelSpec, source: PerformanceSource) -> TableSource:
    settings = source.power_settings(spec.gpu, spec.power)
    table = {}
    for v in spec.variants:
        for s in settings:
            perf = source.performance(spec, v, s)
            if perf is not None:
                table[(v.name, s)] = perf
    return TableSource(settings, table)


def demands(spec: GreenModelSpec, source: TableSource, count: int, seed: int) -> list[Demand]:
    """Random demands whose work spans 0..60 replicas of the first variant at default power."""
    rng = random.Random(seed)
    ref = source.performance(spec, spec.variants[0], source.settings[0])
    assert ref is not None
    out: list[Demand] = []
    for _ in range(count):
        work = rng.uniform(0.05, 60.0)
        prompt_share = rng.uniform(0.05, 0.6)  # share of busy time spent prefilling
        out.append(
            Demand(
                work * prompt_share * ref.prompt_tokens_per_s,
                work * (1.0 - prompt_share) * ref.output_tokens_per_s,
            )
        )
    return out


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread) milliseconds per call. On a shared machine the wall-clock tail
    includes time the OS gave to other processes; the CPU time is the decision's own cost."""
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        fn()
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        wall.append((t1 - t0) / 1e6)
        cpu.append((c1 - c0) / 1e6)
    return wall, cpu


def _pcts(samples: list[float]) -> tuple[float, float, float]:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)]
    return statistics.median(samples), p99, samples[-1]


def report(name: str, result: tuple[list[float], list[float]]) -> str:
    (w50, w99, wmax), (c50, c99, _) = _pcts(result[0]), _pcts(result[1])
    return (
        f"{name:<38} wall p50 {w50:6.3f} p99 {w99:6.3f} max {wmax:6.3f} ms | "
        f"cpu p50 {c50:6.3f} p99 {c99:6.3f} ms"
    )


def ticker(
    specs: GreenModelSpec | list[GreenModelSpec], src: PerformanceSource, series: list[Demand]
) -> Callable[[], None]:
    """One `step` per call over `series`, 15 s apart, carrying the loop state; with a list of specs, tick i
    uses specs[i] (equal content, distinct objects, as when the operator parses the spec every tick)."""
    each = specs if isinstance(specs, list) else [specs] * len(series)
    spec = each[0]
    state = initial_state(spec, 0.0)
    ticks = iter(enumerate(series))

    def tick() -> None:
        nonlocal state
        i, d = next(ticks)
        t = 15.0 * i
        o = Observation(
            time=t,
            prompt_tokens_per_s=d.prompt_tokens_per_s,
            output_tokens_per_s=d.output_tokens_per_s,
            power_w=1000.0,
            energy_j_total=1000.0 * t,
            requests_waiting=float(i % 7) if i % 4 == 1 else 0.0,
            ttft_p90_ms=spec.slo.ttft_p90_ms * (1.5 if i % 4 == 2 else 0.5),
        )
        state, _ = step(each[i], state, o, t, src)

    return tick


def exhaustive_min(spec: GreenModelSpec, demand: Demand, source: TableSource) -> float | None:
    space = PlanSpace(spec, demand, source)
    best: float | None = None
    for pair in space.pairs:
        for n in range(spec.replicas.min, spec.replicas.max + 1):
            c = space.candidate(pair, n)
            if c.slo_met and (best is None or c.power_w < best):
                best = c.power_w
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", type=int, default=300, help="plans to compare with an exhaustive search")
    args = ap.parse_args(argv)

    spec = bench_spec()
    model = default_energy_model()
    table = as_table(spec, model)
    settings = table.settings
    pairs = len(table.table)
    print(
        f"{len(spec.variants)} variants x {len(settings)} power settings ({pairs} runnable pairs) x replicas "
        f"{spec.replicas.min}..{spec.replicas.max}, {args.ticks} ticks"
    )
    series = demands(spec, table, args.ticks, args.seed)

    budget_spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"power_w": 3000.0})})
    for label, src in (("energy model", model), ("table", table)):
        it = iter(series * 2)
        plan_ms = timed(lambda src=src, it=it: plan(spec, next(it), None, src), args.ticks)
        print(report(f"plan()  [{label}]", plan_ms))
        for name, s in (("step() ", spec), ("step() 3 kW budget, Degrade", budget_spec)):
            print(report(f"{name} [{label}]", timed(ticker(s, src, series), args.ticks)))
        # As the operator runs it: the spec parsed again on every tick (parsing itself not timed).
        doc = spec.model_dump(by_alias=True)
        fresh = [GreenModelSpec.model_validate(doc) for _ in series]
        print(report(f"step() spec parsed per tick [{label}]", timed(ticker(fresh, src, series), args.ticks)))
        it2 = iter(series)
        exhausted_ms = timed(lambda src=src, it2=it2: plan(budget_spec, next(it2), 3000.0, src), args.ticks)
        print(report(f"plan() 3 kW budget, Degrade [{label}]", exhausted_ms))

    mismatches = 0
    for d in series[: args.check]:
        got = plan(spec, d, None, table)
        want = exhaustive_min(spec, d, table)
        if want is None:
            continue
        if got.expected_power_w is None or abs(got.expected_power_w - want) > 1e-9 * max(want, 1.0):
            mismatches += 1
    print(
        f"exactness: {mismatches} mismatches against the exhaustive search in "
        f"{min(args.check, len(series))} plans"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
