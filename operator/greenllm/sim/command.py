"""`greenllm simulate`: replay a request trace through greenllm and the baselines, and compare them."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from greenllm.api.durations import parse_duration
from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.controller.config import OperatorConfig
from greenllm.core.burst import (
    energy_per_request_j,
    fast_tier_for,
    max_running,
    serving_budget,
    setting_performance,
)
from greenllm.core.decision import Decision
from greenllm.core.energy import EnergyModel
from greenllm.core.performance import PowerSetting
from greenllm.core.plan_rules import MEAN_PROMPT_TOKENS
from greenllm.core.render import deployment
from greenllm.core.step import MEAN_OUTPUT_TOKENS
from greenllm.modelfile import ModelFileError, load_green_model, require_supported_gpu
from greenllm.sim.baselines import Evaluator, Found, best_static, clairvoyant, frontier, smallest_count
from greenllm.sim.engine import (
    PolicyRun,
    Scenario,
    peak_utilization,
    rate_for_peak_replicas,
    static_replicas,
)
from greenllm.sim.fleet import RolloutStrategy
from greenllm.sim.policies import (
    ClairvoyantPolicy,
    GreenllmPolicy,
    HpaPolicy,
    PerfTable,
    SimulationError,
    top_variant,
)
from greenllm.sim.report import Summary, ratios, summarize, table
from greenllm.sim.trace import SCALE_MODES, Trace, TraceError, load_trace

POLICIES = ("greenllm", "static", "best-static", "hpa", "clairvoyant", "instant")

# Default grid intensity: Ember yearly average generation emissions intensity, World, 2024 = 472.94 gCO2/kWh
# (shared/data/carbon/ember_yearly_average_selected.csv, row "World,World,2024,472.94,..."; Ember data
# CC BY-SA 4.0 via thegreenwebfoundation/co2.js data/output/average-intensities.json).
DEFAULT_CARBON_G_PER_KWH = 472.94
DEFAULT_CARBON_SOURCE = "Ember 2024 world average (ember_yearly_average_selected.csv, row World 2024)"

# Pod start-up (scheduling to ready) is a scenario assumption, not calibration data: no start-up time is
# in shared/data. About a minute for an 8B model on one GPU with warm caches follows the phase times
# reported in vllm-project/vllm issue #44881 (container init ~16 s, ~18 s for 21.8 GiB of weights, ~5 s of
# cached torch.compile) plus CUDA-graph warm-up. Override with --startup-delay.
DEFAULT_STARTUP = "60s"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="greenllm simulate",
        description="Replay a request trace, request by request, through greenllm's two-tier control loop "
        "and the baselines (static, best-static, hpa, clairvoyant, instant) on a simulated fleet; report "
        "energy, carbon and the share of requests within both the TTFT and the TPOT SLO.",
    )
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        action="append",
        help="GreenModel YAML file; with --budget, repeat it for a team of GreenModels (a file may then "
        "hold several, e.g. the team's whole kubectl file)",
    )
    p.add_argument(
        "--budget",
        type=Path,
        default=None,
        metavar="FILE",
        help="EnergyBudget YAML file covering every --model: simulate the team with the budget shared "
        "(divided every interval) against each model with a fixed equal share of it",
    )
    p.add_argument(
        "--member-trace",
        type=_member_trace,
        action="append",
        default=None,
        metavar="trace=FILE,offset=DURATION,scale=K,mode=MODE",
        help="with --budget, the trace of the n-th --model (every key optional; defaults: --trace, the "
        "n-th of N equal offsets into it, --rate-scale, --scale-mode)",
    )
    p.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="CSV of requests: timestamp, input tokens, output tokens (default: the shipped Azure LLM code "
        "trace 2023, CC-BY 4.0, Patel et al., Splitwise, ISCA 2024)",
    )
    scale = p.add_mutually_exclusive_group()
    scale.add_argument(
        "--rate-scale",
        type=_positive_float,
        default=None,
        metavar="K",
        help="multiply the trace's request rate by K",
    )
    scale.add_argument(
        "--scale-to-peak-replicas",
        type=_positive_int,
        default=None,
        metavar="N",
        help="pick the rate factor that makes the static baseline need N replicas at the peak",
    )
    p.add_argument(
        "--scale-mode",
        choices=SCALE_MODES,
        default="copies",
        help="how the rate is scaled: copies (each request K times at its own time: bursts K times "
        "larger) or shifted (K copies of the trace, each shifted by a seeded random offset: K independent "
        "user populations)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the copies and offsets (0)")
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="re-run the comparison at the energy model's uncertainty corners (idle 70 W per H100, prefill "
        "utilisation 0.35, power caps saving half) and print the ratios at each",
    )
    p.add_argument(
        "--peak-window",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="window over which the peak demand is averaged to size static (default: spec.scaling.interval)",
    )
    p.add_argument(
        "--start", type=_duration, default=None, metavar="DURATION", help="skip the trace's first DURATION"
    )
    p.add_argument(
        "--duration",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="replay only DURATION of the trace",
    )
    p.add_argument("--step", type=_duration, default=1.0, metavar="DURATION", help="simulation step (1s)")
    p.add_argument(
        "--startup-delay",
        type=_duration,
        default=parse_duration(DEFAULT_STARTUP),
        metavar="DURATION",
        help=f"pod start to ready ({DEFAULT_STARTUP}; an assumption, see greenllm.sim.command)",
    )
    p.add_argument(
        "--gpus",
        type=_positive_int,
        default=None,
        help="GPUs available to the model (default: enough for replicas.max and for static)",
    )
    p.add_argument(
        "--scrape-interval",
        type=_duration,
        default=15.0,
        metavar="DURATION",
        help="Prometheus scrape interval (15s)",
    )
    p.add_argument(
        "--metrics-lag",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="extra delay before a scraped sample can be queried (0s)",
    )
    p.add_argument(
        "--rate-window",
        default=OperatorConfig().rate_window,
        metavar="DURATION",
        help="range of rate() in the operator's queries and the HPA's utilization "
        f"(the operator's default, {OperatorConfig().rate_window})",
    )
    p.add_argument(
        "--carbon-intensity",
        type=_nonneg_float,
        default=None,
        metavar="G",
        help="grid intensity, gCO2/kWh (default: spec.metrics.carbonIntensity.gramsPerKwh, else "
        f"{DEFAULT_CARBON_G_PER_KWH}, {DEFAULT_CARBON_SOURCE})",
    )
    p.add_argument(
        "--min-quality",
        type=_nonneg_float,
        default=None,
        metavar="Q",
        help="quality floor to run the scenario at, in place of the file's spec.slo.minQuality (the "
        "same check: at least one variant must meet it)",
    )
    p.add_argument(
        "--policies", default=",".join(POLICIES), help=f"comma-separated subset of {','.join(POLICIES)}"
    )
    p.add_argument(
        "--decisions-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write every greenllm decision step as JSON lines (checked writable before the run)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a PNG (FILE must end in .png) of demand, replicas, variant and power over time",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    return p


def _member_trace(text: str) -> Any:
    from greenllm.sim.team import parse_member_trace

    return parse_member_trace(text)


def _policies(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise SimulationError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; use {','.join(POLICIES)}"
        )
    return [n for n in POLICIES if n in names]


def _scaled(
    base: Trace, args: argparse.Namespace, spec_peak: Callable[[Trace], float], headroom: float
) -> tuple[Trace, float]:
    """The trace at the requested rate: --rate-scale K, or the K at which the peak rule (highest-quality
    variant, default power, busiest `--peak-window`, spec headroom) needs --scale-to-peak-replicas."""
    if args.scale_to_peak_replicas is None:
        factor = args.rate_scale if args.rate_scale is not None else 1.0
        return base.replicated(factor, args.scale_mode, args.seed), factor
    wanted = args.scale_to_peak_replicas
    factor = rate_for_peak_replicas(spec_peak(base), headroom, wanted)
    if args.scale_mode == "copies":
        return base.replicated(factor, "copies", args.seed), factor
    # Shifted copies smooth the peak: find the largest K whose superposed trace needs `wanted` (bisection).
    lo, hi = factor, factor * 2.0
    while static_replicas(spec_peak(base.replicated(hi, "shifted", args.seed)), headroom) <= wanted:
        lo, hi = hi, hi * 2.0
    for _ in range(30):
        mid = (lo + hi) / 2.0
        if static_replicas(spec_peak(base.replicated(mid, "shifted", args.seed)), headroom) <= wanted:
            lo = mid
        else:
            hi = mid
    return base.replicated(lo, "shifted", args.seed), lo


@dataclass(frozen=True)
class Comparison:
    """One run of the chosen policies on one energy model."""

    summaries: dict[str, Summary]
    runs: dict[str, PolicyRun]
    notes: dict[str, str]


def scenario_for(
    spec: GreenModelSpec, trace: Trace, source: EnergyModel, args: argparse.Namespace, gpus: int
) -> Scenario:
    """The simulated fleet of one GreenModel as the operator would render it (rollout strategy, vLLM's
    token budgets and running limits per variant), with the run's timing flags."""
    perf = PerfTable(spec, source)
    top = top_variant(spec).name
    budgets = {v.name: serving_budget(spec, v, setting_performance(spec, v, source)) for v in spec.variants}
    owner = {"metadata": {"name": "sim", "namespace": "sim", "uid": "sim"}}
    rendered = deployment(owner, spec, Decision(top, 1, PowerSetting(), None, "simulate"))
    return Scenario(
        spec=spec,
        trace=trace,
        perf=perf,
        gpus=gpus,
        step_s=args.step,
        startup_s=args.startup_delay,
        scrape_interval_s=args.scrape_interval,
        metrics_lag_s=args.metrics_lag,
        strategy=RolloutStrategy.from_deployment(rendered),
        token_budgets=budgets,
        running_limits={v.name: max_running(v, budgets[v.name]) for v in spec.variants},
    )


def compare(
    spec: GreenModelSpec,
    trace: Trace,
    source: EnergyModel,
    names: list[str],
    args: argparse.Namespace,
    carbon: float,
    gpus: int,
    tick: Callable[[int], None] | None = None,
) -> Comparison:
    scenario = scenario_for(spec, trace, source, args, gpus)
    perf = scenario.perf
    top = top_variant(spec).name
    budgets = scenario.token_budgets
    ev = Evaluator(scenario, spec.slo.attainment, tick)
    # The feedback loops (greenllm, hpa) are scored on the last of several back-to-back replays of the
    # trace: an operator that has been running remembers the previous hour (its error budget and warm
    # floor), and its own cold start has left the attainment window; the other policies start with their
    # fleet in place.
    passes = warmup_passes(spec.slo.attainment_window.seconds, trace.duration_s)
    warm = Evaluator(
        replace(
            scenario,
            trace=trace.repeated(passes + 1),
            measure_from_s=passes * trace.duration_s,
        ),
        spec.slo.attainment,
        tick,
    )

    def max_n(variant: str) -> int:
        """replicas.max, or fewer when the cluster's GPUs hold fewer replicas of `variant`."""
        return min(spec.replicas.max, scenario.max_replicas(variant))

    interval_s = spec.scaling.interval.seconds
    settings = source.power_settings(spec.gpu, spec.power)
    request = (
        float(trace.prompt_tokens.mean()) if len(trace) else MEAN_PROMPT_TOKENS,
        float(trace.output_tokens.mean()) if len(trace) else MEAN_OUTPUT_TOKENS,
    )
    runs: dict[str, PolicyRun] = {}
    notes: dict[str, str] = {}
    found: dict[str, Found] = {}
    for name in names:
        if name == "greenllm":
            policy = GreenllmPolicy(
                spec,
                source,
                start_epoch=warm.scenario.trace.start_epoch,
                carbon_g_per_kwh=carbon,
                window=args.rate_window,
            )
            runs[name], _ = warm.run(policy)
        elif name == "static":
            found[name] = smallest_count(ev, top, PowerSetting(), 1, max_n(top), "static")
        elif name == "best-static":
            found[name] = best_static(ev, spec, perf, settings, request, spec.replicas.max)
        elif name == "hpa":
            runs[name], _ = warm.run(
                HpaPolicy(spec, top, window_s=parse_duration(args.rate_window), max_replicas=max_n(top))
            )
        else:
            pairs = frontier(spec, perf, settings, request)
            # The variant whose burst setting (default power) prefills fastest per joule, with greenllm's
            # fast tier for it.
            choice = min(
                (x for x in pairs if x[1].is_default),
                key=lambda x: energy_per_request_j(x[2], *request),
            )
            variant = spec.variant(choice[0])
            perfs = setting_performance(spec, variant, source)
            tier = fast_tier_for(spec, variant, settings, perfs, request, budgets[variant.name])
            found[name] = clairvoyant(
                ev,
                name,
                variant.name,
                tier,
                tier.efficient if tier is not None else PowerSetting(),
                choice[2],
                budgets[variant.name],
                interval_s=interval_s,
                min_replicas=spec.replicas.min,
                max_replicas=max_n(variant.name),
                instant=name == "instant",
            )
    for name, f in found.items():
        runs[name] = f.run
        target = f.policy.initial()
        what = f"{target.replicas} x {target.variant} at {target.setting.label()}"
        if isinstance(f.policy, ClairvoyantPolicy):
            what = f"{target.variant}, margin {f.policy.margin:.2f} over the foreseen need"
        met = "" if f.met else f"; nothing searched meets {spec.slo.attainment:.0%}: the closest"
        notes[name] = what + met
    runs = {n: runs[n] for n in names}
    summaries = {n: summarize(r, carbon, scenario.ttft_slo_s, scenario.tpot_slo_s) for n, r in runs.items()}
    return Comparison(summaries, runs, notes)


def warmup_passes(window_s: float, duration_s: float) -> int:
    """Replays before the scored one: enough that the first (cold) one is out of the attainment window."""
    if duration_s <= 0:
        return 1
    return max(1, math.ceil(window_s / duration_s - 1e-9) + 1)


_JOB: tuple[Any, ...] = ()


def _compare_one(name: str) -> Comparison:
    spec, trace, source, args, carbon, gpus = _JOB
    return compare(spec, trace, source, [name], args, carbon, gpus)


def compare_parallel(
    spec: GreenModelSpec,
    trace: Trace,
    source: EnergyModel,
    names: list[str],
    args: argparse.Namespace,
    carbon: float,
    gpus: int,
    tick: Callable[[int], None] | None = None,
) -> Comparison:
    """`compare`, one policy per process on as many cores as there are (the searches are independent);
    in this process when there is one core, one policy, or no fork."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or len(names) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return compare(spec, trace, source, names, args, carbon, gpus, tick)
    global _JOB
    _JOB = (spec, trace, source, args, carbon, gpus)
    # The searches cost most: start them first.
    order = sorted(
        names,
        key=lambda n: (
            ("best-static", "static", "clairvoyant").index(n)
            if n in ("best-static", "static", "clairvoyant")
            else 3
        ),
    )
    with multiprocessing.get_context("fork").Pool(min(cores, len(names))) as pool:
        parts = dict(zip(order, pool.map(_compare_one, order, chunksize=1), strict=True))
    _JOB = ()
    return Comparison(
        summaries={n: parts[n].summaries[n] for n in names},
        runs={n: parts[n].runs[n] for n in names},
        notes={n: parts[n].notes[n] for n in names if n in parts[n].notes},
    )


SENSITIVITY: tuple[tuple[str, dict[str, float]], ...] = (
    ("centre", {}),
    ("idle 70 W", {"idle_w": 70.0}),
    ("prefill U 0.35", {"prefill_utilization": 0.35}),
    ("caps save half", {"cap_saving_scale": 0.5}),
    ("all three", {"idle_w": 70.0, "prefill_utilization": 0.35, "cap_saving_scale": 0.5}),
)


def check_writable(path: Path, flag: str, suffix: str | None = None) -> None:
    """Refuse, before a long run, an output path that cannot be written: a directory, a parent that
    cannot be created, a read-only file or directory, or (with `suffix`) the wrong file type. Probes by
    creating the parents and opening the file for appending; a file that did not exist is removed again."""
    if path.is_dir():
        raise SimulationError(f"{flag} {path}: is a directory, give a file name")
    if suffix is not None and path.suffix.lower() != suffix:
        kind = suffix[1:].upper()
        raise SimulationError(f"{flag} {path}: must end in {suffix} (the file written is a {kind})")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SimulationError(f"{flag} {path}: cannot be written: {reason}") from None
    if not existed:
        path.unlink(missing_ok=True)


def _reporting(write: Callable[..., None], flag: str, errors: list[str] | None) -> Callable[..., None]:
    """`write`, which on failure records one line in `errors` (when given) instead of raising, so the
    results of a long run are still printed."""

    def guarded(path: Path, *rest: Any) -> None:
        try:
            write(path, *rest)
        except Exception as exc:
            if errors is None:
                raise
            errors.append(f"{flag} {path}: not written: {type(exc).__name__}: {exc}".splitlines()[0])

    return guarded


def _write_decisions(path: Path, logs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for log in logs:
            out.write(json.dumps(log.as_json()) + "\n")


class _NoProgress:
    """Stands in for tqdm where the `[sim]` extra is not installed (the container image)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        del n


def _progress(show: bool) -> Any:
    """A tqdm progress bar on stderr when it is installed and wanted, else one that shows nothing."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(file=sys.stderr, disable=not show, unit="step", desc="simulate")


def simulate(args: argparse.Namespace, errors: list[str] | None = None) -> dict[str, Any]:
    """Run the scenario the arguments describe; the result is what --json prints. A failure to write
    --decisions-out or --plot after the run goes to `errors` when given (else it raises)."""
    from greenllm.calibration import default_energy_model, energy_model_at

    try:
        parse_duration(args.rate_window)
    except ValueError as exc:
        raise SimulationError(f"--rate-window: {exc}") from exc
    models = args.model if isinstance(args.model, list) else [args.model]
    if getattr(args, "budget", None) is not None:
        from greenllm.sim.team import simulate_team

        return simulate_team(args)
    if getattr(args, "member_trace", None):
        raise SimulationError("--member-trace needs --budget (team mode)")
    if len(models) != 1:
        raise SimulationError(f"{len(models)} --model files: several GreenModels need --budget (team mode)")
    model_path: Path = models[0]
    names = _policies(args.policies)
    if args.decisions_out is not None:
        check_writable(args.decisions_out, "--decisions-out")
    if args.plot is not None:
        check_writable(args.plot, "--plot", ".png")
    model = load_green_model(model_path)
    require_supported_gpu(model, model_path, default_energy_model())
    spec = model.spec if args.min_quality is None else with_quality_floor(model.spec, args.min_quality)
    base = load_trace(args.trace)
    if args.start is not None or args.duration is not None:
        base = base.window(args.start or 0.0, args.duration)
    try:
        source = default_energy_model()
        perf = PerfTable(spec, source)
        top = top_variant(spec).name
        perf(top, PowerSetting())
    except ValueError as exc:
        raise SimulationError(str(exc)) from exc
    peak_window = args.peak_window if args.peak_window is not None else spec.scaling.interval.seconds
    headroom = spec.scaling.headroom

    def spec_peak(t: Trace) -> float:
        return peak_utilization(t, spec, perf, top, peak_window)

    trace, factor = _scaled(base, args, spec_peak, headroom)
    n_peak = static_replicas(spec_peak(trace), headroom)
    # GPUs per replica differ by variant (variants[].gpuCount): by default the cluster holds the peak of
    # the widest one, and it must hold one replica of every variant the planner may choose.
    widths = {v.name: spec.gpus_per_replica(v) for v in spec.variants if v.quality >= spec.slo.min_quality}
    gpus = args.gpus if args.gpus is not None else max(spec.replicas.max, n_peak) * max(widths.values())
    for name, width in widths.items():
        if gpus < width:
            raise SimulationError(f"--gpus {gpus} cannot hold one replica of variant {name!r} ({width} GPUs)")
    if args.carbon_intensity is not None:
        carbon, carbon_source = args.carbon_intensity, "--carbon-intensity"
    elif spec.metrics.carbon_intensity.grams_per_kwh is not None:
        carbon, carbon_source = spec.metrics.carbon_intensity.grams_per_kwh, "spec.metrics.carbonIntensity"
    else:
        carbon, carbon_source = DEFAULT_CARBON_G_PER_KWH, DEFAULT_CARBON_SOURCE

    started = time.perf_counter()
    show = not args.no_progress and sys.stderr.isatty()
    with _progress(show) as bar:
        result = compare_parallel(spec, trace, source, names, args, carbon, gpus, bar.update)
        sensitivity: dict[str, dict[str, float | None]] = {}
        if args.sensitivity:
            for label, corner in SENSITIVITY:
                cmp = (
                    result
                    if not corner
                    else compare(
                        spec, trace, energy_model_at(**corner), names, args, carbon, gpus, bar.update
                    )
                )
                sensitivity[label] = {
                    **{f"over_{n}": r for n, r in ratios(cmp.summaries).items()},
                    **{f"attainment_{n}": s.slo_attainment for n, s in cmp.summaries.items()},
                }
    elapsed = time.perf_counter() - started
    runs = result.runs
    if args.decisions_out is not None and "greenllm" in runs:
        write_decisions = _reporting(_write_decisions, "--decisions-out", errors)
        write_decisions(args.decisions_out, runs["greenllm"].decisions)
    if args.plot is not None:
        from greenllm.sim import plot

        write_plot = _reporting(plot.write_plot, "--plot", errors)

        steps = next(iter(runs.values())).steps
        demand_prompt, demand_output = trace.binned(args.step, steps)
        by_quality = [v.name for v in sorted(spec.variants, key=lambda v: v.quality)]
        title = f"{spec.model.name} on {spec.gpu.type}: {trace.name} x{factor:.3g} ({args.scale_mode})"
        write_plot(
            args.plot,
            runs,
            demand_prompt,
            demand_output,
            by_quality,
            args.step,
            title,
            result.summaries,
            spec.slo.attainment,
        )
    return {
        "policies": {n: s.as_json() for n, s in result.summaries.items()},
        "ratios": {"greenllm_energy_over": ratios(result.summaries)},
        "baselines": result.notes,
        "sensitivity": sensitivity,
        "scenario": {
            "model": spec.model.name,
            "gpu": spec.gpu.type,
            "trace": trace.name,
            "requests": len(trace),
            "tokens_arrived": trace.total_prompt_tokens + trace.total_output_tokens,
            "duration_s": next(iter(runs.values())).steps * args.step,
            "rate_scale": factor,
            "scale_mode": args.scale_mode,
            "seed": args.seed,
            "peak_rule_replicas": n_peak,
            "peak_window_s": peak_window,
            "top_variant": top,
            "gpus": gpus,
            "step_s": args.step,
            "startup_delay_s": args.startup_delay,
            "scrape_interval_s": args.scrape_interval,
            "metrics_lag_s": args.metrics_lag,
            "rate_window": args.rate_window,
            "attainment_target": spec.slo.attainment,
            "power_budget_w": spec.budget.power_w,
            "carbon_g_per_kwh": carbon,
            "carbon_source": carbon_source,
            "wall_time_s": round(elapsed, 3),
        },
    }


def with_quality_floor(spec: GreenModelSpec, floor: float) -> GreenModelSpec:
    """`spec` at another slo.minQuality, validated as the file would be (--min-quality)."""
    doc = spec.model_dump(by_alias=True, exclude_unset=True)
    doc["slo"] = {**doc.get("slo", {}), "minQuality": floor}
    try:
        return GreenModelSpec.model_validate(doc)
    except ValidationError as exc:
        why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise SimulationError(f"--min-quality {floor:g}: {why}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    errors: list[str] = []
    try:
        result = simulate(args, errors)
    except (ModelFileError, TraceError, SimulationError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    elif "members" in result:
        from greenllm.sim.team import report_text as team_report_text

        print(team_report_text(result))
    else:
        print(report_text(result))
    for error in errors:  # after the results: a long run's numbers are never lost to a failed write
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
    return 1 if errors else 0


def report_text(result: dict[str, Any]) -> str:
    """The human-readable report of a `simulate` result."""
    s = result["scenario"]
    headline = (
        f"{s['model']} on {s['gpu']}, trace {s['trace']} x{s['rate_scale']:.4g} ({s['scale_mode']}, "
        f"{s['requests']:.0f} requests, {s['duration_s'] / 60:.1f} min), target {s['attainment_target']:.0%} "
        f"of requests within both SLOs; carbon {s['carbon_g_per_kwh']} g/kWh"
    )
    lines = [
        *textwrap.wrap(headline, width=100),
        "",
        table(
            {n: Summary(**v) for n, v in result["policies"].items()}, power_budget_w=s.get("power_budget_w")
        ),
    ]
    shares = result["policies"].get("greenllm", {}).get("variant_share") or {}
    if shares:
        mix = ", ".join(f"{v} {share:.0%}" for v, share in sorted(shares.items(), key=lambda kv: -kv[1]))
        lines += ["", f"greenllm's fleet by variant (share of replica-time asked for): {mix}"]
    if result.get("baselines"):
        lines.append("")
        lines += [f"{name}: {what}" for name, what in result["baselines"].items()]
    if result.get("sensitivity"):
        lines += ["", "sensitivity (greenllm energy over each policy; greenllm attainment):"]
        for corner, values in result["sensitivity"].items():
            over = ", ".join(
                f"{k[5:]} {v:.2f}" for k, v in values.items() if k.startswith("over_") and v is not None
            )
            att = values.get("attainment_greenllm")
            lines.append(f"  {corner:<15} {over}" + ("" if att is None else f"; attainment {att:.2%}"))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
