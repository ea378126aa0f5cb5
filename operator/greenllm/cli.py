"""`greenllm run | agent | simulate | plan | crd`: one entry point for operator, agent and tools."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from greenllm import __version__


def _run(args: argparse.Namespace) -> int:
    import kopf

    from greenllm.controller import handlers  # noqa: F401  (importing registers the handlers)
    from greenllm.controller.config import OperatorConfig

    config = OperatorConfig(
        prometheus_url=args.prometheus_url,
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port,
        probe_port=args.probe_port,
        log_level=args.log_level,
        default_carbon_intensity_g_per_kwh=args.default_carbon_intensity,
        peering_name=args.peering,
        priority=args.priority,
    )
    kopf.configure(verbose=args.log_level == "debug")
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.peering_name is None,
        peering_name=config.peering_name,
        priority=config.priority,
        liveness_endpoint=f"http://0.0.0.0:{config.probe_port}/healthz",
        memo=kopf.Memo(config=config),
    )
    return 0


def _plan(args: argparse.Namespace) -> int:
    from greenllm.calibration import default_energy_model
    from greenllm.core.decision import Observation
    from greenllm.core.step import initial_decision, initial_state, step
    from greenllm.modelfile import ModelFileError, load_green_model

    try:
        gm = load_green_model(Path(args.file))
    except ModelFileError as e:
        raise SystemExit(str(e)) from e
    energy = default_energy_model()
    decision = initial_decision(gm.spec, energy)
    if args.prompt_tokens_per_s is not None or args.output_tokens_per_s is not None:
        observation = Observation(
            time=0.0,
            prompt_tokens_per_s=args.prompt_tokens_per_s or 0.0,
            output_tokens_per_s=args.output_tokens_per_s or 0.0,
            carbon_intensity_g_per_kwh=args.carbon_intensity,
        )
        _, decision = step(gm.spec, initial_state(gm.spec, 0.0), observation, 0.0, energy)
    result = {
        "variant": decision.variant,
        "replicas": decision.replicas,
        "powerLimitW": decision.setting.limit_w,
        "lockedClockMhz": decision.setting.locked_clock_mhz,
        "expectedPowerW": decision.expected_power_w,
        "budgetMet": decision.budget_met,
        "reason": decision.reason,
        "alternatives": [
            {
                "variant": o.variant,
                "replicas": o.replicas,
                "setting": o.setting.label(),
                "powerW": o.power_w,
                "whyNot": o.why_not,
            }
            for o in decision.alternatives
        ],
    }
    print(json.dumps(result, indent=2))
    return 0


def _crd(args: argparse.Namespace) -> int:
    from greenllm.api.crd import render_yaml

    text = render_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greenllm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"greenllm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf)")
    run.add_argument("--prometheus-url", default="http://prometheus-operated.monitoring.svc:9090")
    run.add_argument(
        "--namespace", action="append", default=[], help="watch only these (repeat); default all"
    )
    run.add_argument("--metrics-port", type=int, default=9400)
    run.add_argument("--probe-port", type=int, default=8080, help="liveness endpoint /healthz")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--default-carbon-intensity", type=float, default=None, help="gCO2/kWh")
    run.add_argument("--peering", default=None, help="kopf peering name (several replicas)")
    run.add_argument("--priority", type=int, default=0, help="peering priority; give replicas distinct ones")
    run.set_defaults(func=_run)

    agent = sub.add_parser("agent", help="run the node power agent", add_help=False)
    agent.set_defaults(func=None)

    simulate = sub.add_parser("simulate", help="replay a request trace against baselines", add_help=False)
    simulate.set_defaults(func=None)

    plan = sub.add_parser("plan", help="print the decision for a GreenModel file")
    plan.add_argument("file")
    plan.add_argument("--prompt-tokens-per-s", type=float, default=None)
    plan.add_argument("--output-tokens-per-s", type=float, default=None)
    plan.add_argument("--carbon-intensity", type=float, default=None, help="gCO2/kWh")
    plan.set_defaults(func=_plan)

    crd = sub.add_parser("crd", help="print the GreenModel CRD generated from the API models")
    crd.add_argument("--output", "-o", default=None)
    crd.set_defaults(func=_crd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # agent and simulate own their flags; hand them the rest of the line untouched.
    if argv and argv[0] == "agent":
        from greenllm.agent.command import main as agent_main

        return agent_main(argv[1:])
    if argv and argv[0] == "simulate":
        from greenllm.sim.command import main as simulate_main

        return simulate_main(argv[1:])
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
