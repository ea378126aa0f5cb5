"""`greenllm simulate`: replay a request trace through greenllm and the baselines, and compare them."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from greenllm.api.durations import parse_duration
from greenllm.controller.config import OperatorConfig
from greenllm.core.decision import Decision
from greenllm.core.performance import PowerSetting
from greenllm.core.render import deployment
from greenllm.modelfile import ModelFileError, load_green_model
from greenllm.sim.engine import (
    PolicyRun,
    Scenario,
    peak_utilization,
    rate_for_peak_replicas,
    run_policy,
    static_replicas,
)
from greenllm.sim.fleet import RolloutStrategy
from greenllm.sim.policies import (
    GreenllmPolicy,
    HpaPolicy,
    OraclePolicy,
    PerfTable,
    Policy,
    SimulationError,
    StaticPolicy,
    top_variant,
)
from greenllm.sim.report import Summary, ratios, summarize, table
from greenllm.sim.trace import TraceError, load_trace

POLICIES = ("greenllm", "static", "hpa", "oracle")

# Default grid intensity: Ember yearly average generation emissions intensity, World, 2024 = 472.94 gCO2/kWh
# (/work/shared/data/carbon/ember_yearly_average_selected.csv, row "World,World,2024,472.94,..."; Ember data
# CC BY-SA 4.0 via thegreenwebfoundation/co2.js data/output/average-intensities.json).
DEFAULT_CARBON_G_PER_KWH = 472.94
DEFAULT_CARBON_SOURCE = "Ember 2024 world average (ember_yearly_average_selected.csv, row World 2024)"

# Pod start-up (scheduling to ready) is a scenario assumption, not calibration data: no start-up time is
# in /work/shared/data. About a minute for an 8B model on one GPU with warm caches follows the phase times
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
        description="Replay a request trace through greenllm's decision loop and the static, hpa and oracle "
        "baselines on a simulated fleet; report energy, carbon and SLO attainment.",
    )
    p.add_argument("--model", required=True, type=Path, help="GreenModel YAML file")
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
        "--policies", default=",".join(POLICIES), help=f"comma-separated subset of {','.join(POLICIES)}"
    )
    p.add_argument(
        "--decisions-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write every greenllm decision step as JSON lines",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a PNG of demand, replicas, variant and power over time",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    return p


def _policies(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise SimulationError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; use {','.join(POLICIES)}"
        )
    return [n for n in POLICIES if n in names]


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario the arguments describe; the result is what --json prints."""
    from greenllm.calibration import default_energy_model

    try:
        window_s = parse_duration(args.rate_window)
    except ValueError as exc:
        raise SimulationError(f"--rate-window: {exc}") from exc
    names = _policies(args.policies)
    model = load_green_model(args.model)
    spec = model.spec
    trace = load_trace(args.trace)
    if args.start is not None or args.duration is not None:
        trace = trace.window(args.start or 0.0, args.duration)

    source = default_energy_model()
    perf = PerfTable(spec, source)
    top = top_variant(spec).name
    peak_window = args.peak_window if args.peak_window is not None else parse_duration(spec.scaling.interval)
    peak_busy = peak_utilization(trace, spec, perf, top, peak_window)
    headroom = spec.scaling.headroom
    if args.scale_to_peak_replicas is not None:
        factor = rate_for_peak_replicas(peak_busy, headroom, args.scale_to_peak_replicas)
    else:
        factor = args.rate_scale if args.rate_scale is not None else 1.0
    trace = trace.scaled(factor)
    n_static = static_replicas(peak_busy * factor, headroom)
    gpus = args.gpus if args.gpus is not None else max(spec.replicas.max, n_static) * spec.gpu.count
    if gpus < spec.gpu.count:
        raise SimulationError(f"--gpus {gpus} cannot hold one replica of {spec.gpu.count} GPUs")
    if "static" in names and n_static * spec.gpu.count > gpus:
        raise SimulationError(
            f"static needs {n_static} replicas ({n_static * spec.gpu.count} GPUs), only {gpus} GPUs given"
        )
    if args.carbon_intensity is not None:
        carbon, carbon_source = args.carbon_intensity, "--carbon-intensity"
    elif spec.metrics.carbon_intensity.grams_per_kwh is not None:
        carbon, carbon_source = spec.metrics.carbon_intensity.grams_per_kwh, "spec.metrics.carbonIntensity"
    else:
        carbon, carbon_source = DEFAULT_CARBON_G_PER_KWH, DEFAULT_CARBON_SOURCE

    # The rollout parameters and readiness probe of the Deployment the operator renders.
    owner = {"metadata": {"name": "sim", "namespace": "sim", "uid": "sim"}}
    rendered = deployment(owner, spec, Decision(top, 1, PowerSetting(), None, "simulate"))
    scenario = Scenario(
        spec=spec,
        trace=trace,
        perf=perf,
        gpus=gpus,
        step_s=args.step,
        startup_s=args.startup_delay,
        scrape_interval_s=args.scrape_interval,
        metrics_lag_s=args.metrics_lag,
        strategy=RolloutStrategy.from_deployment(rendered),
    )
    policies: list[Policy] = []
    for name in names:
        if name == "greenllm":
            policies.append(
                GreenllmPolicy(
                    spec,
                    source,
                    start_epoch=trace.start_epoch,
                    carbon_g_per_kwh=carbon,
                    window=args.rate_window,
                )
            )
        elif name == "static":
            policies.append(StaticPolicy(top, n_static))
        elif name == "hpa":
            policies.append(HpaPolicy(spec, top, window_s=window_s, max_replicas=scenario.max_replicas))
        else:
            policies.append(OraclePolicy(spec, perf, scenario.step_s, scenario.max_replicas))

    from tqdm import tqdm

    started = time.perf_counter()
    runs: dict[str, PolicyRun] = {}
    show = not args.no_progress and sys.stderr.isatty()
    with tqdm(
        total=scenario.steps * len(policies), file=sys.stderr, disable=not show, unit="step", desc="simulate"
    ) as bar:
        for policy in policies:
            bar.set_postfix_str(policy.name)
            runs[policy.name] = run_policy(scenario, policy, bar.update)
    elapsed = time.perf_counter() - started

    arrived = trace.total_prompt_tokens + trace.total_output_tokens
    summaries: dict[str, Summary] = {n: summarize(r, carbon, arrived) for n, r in runs.items()}
    if args.decisions_out is not None and "greenllm" in runs:
        args.decisions_out.parent.mkdir(parents=True, exist_ok=True)
        with args.decisions_out.open("w", encoding="utf-8") as out:
            for log in runs["greenllm"].decisions:
                out.write(json.dumps(log.as_json()) + "\n")
    if args.plot is not None:
        from greenllm.sim.plot import write_plot

        demand_prompt, demand_output = trace.binned(scenario.step_s, scenario.steps)
        by_quality = [v.name for v in sorted(spec.variants, key=lambda v: v.quality)]
        title = (
            f"{spec.model.name} on {spec.gpu.type}: {trace.name} x{factor:.3g} (static {n_static} replicas)"
        )
        write_plot(args.plot, runs, demand_prompt, demand_output, by_quality, scenario.step_s, title)
    return {
        "policies": {n: s.as_json() for n, s in summaries.items()},
        "ratios": {"greenllm_energy_over": ratios(summaries)},
        "scenario": {
            "model": spec.model.name,
            "gpu": spec.gpu.type,
            "trace": trace.name,
            "requests": trace.total_requests,
            "tokens_arrived": arrived,
            "duration_s": scenario.steps * scenario.step_s,
            "rate_scale": factor,
            "static_replicas": n_static,
            "peak_window_s": peak_window,
            "top_variant": top,
            "gpus": gpus,
            "step_s": scenario.step_s,
            "startup_delay_s": scenario.startup_s,
            "scrape_interval_s": scenario.scrape_interval_s,
            "metrics_lag_s": scenario.metrics_lag_s,
            "rate_window": args.rate_window,
            "carbon_g_per_kwh": carbon,
            "carbon_source": carbon_source,
            "wall_time_s": round(elapsed, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = simulate(args)
    except (ModelFileError, TraceError, SimulationError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s = result["scenario"]
        print(
            f"{s['model']} on {s['gpu']}, trace {s['trace']} x{s['rate_scale']:.4g} "
            f"({s['requests']:.0f} requests, {s['duration_s'] / 60:.1f} min); "
            f"static = {s['static_replicas']} x {s['top_variant']}; "
            f"carbon {s['carbon_g_per_kwh']} g/kWh ({s['carbon_source']})"
        )
        print()
        summaries = {n: Summary(**v) for n, v in result["policies"].items()}
        print(table(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
