"""`greenllm run | agent | simulate | plan | crd`: one entry point for operator, agent and tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from greenllm import __version__


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"greenllm {command}: error: {message}", file=sys.stderr)
    return code


def kube_credentials_problem() -> str | None:
    """Why the operator could not log in to Kubernetes (None: it can), as its login handler would try:
    an explicit $KUBECONFIG first, else the pod's service account, else ~/.kube/config."""
    import kopf

    settings = kopf.OperatorSettings()
    where = os.environ.get("KUBECONFIG")
    try:
        if where:
            info = kopf.login_with_kubeconfig(settings=settings) or kopf.login_with_service_account(
                settings=settings
            )
        else:
            info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
                settings=settings
            )
    except FileNotFoundError as exc:
        return f"no Kubernetes credentials: kubeconfig {exc.filename} does not exist ($KUBECONFIG={where})"
    except Exception as exc:  # a malformed kubeconfig: kopf would retry it forever
        return f"cannot use the kubeconfig ($KUBECONFIG={where or '~/.kube/config'}): {exc!r}".splitlines()[0]
    if info is not None:
        return None
    return (
        "no Kubernetes credentials: no $KUBECONFIG and no ~/.kube/config, and not in a pod with a "
        "service account (KUBERNETES_SERVICE_HOST and /var/run/secrets/kubernetes.io/serviceaccount/token)"
    )


def _set_log_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


class SuccessOfPerEventHandlers:
    """A filter for kopf's object log: drops "Handler 'x' succeeded." of handlers kopf calls on every watch
    event (`names`). In one benchmark run at 5,000 GreenModels they were 44,700 of the operator's 54,700 log
    lines, saying nothing; their failures, and every other line, are kept. Not at --log-level debug."""

    def __init__(self, names: Iterable[str]) -> None:
        self.lines = frozenset(f"Handler {name!r} succeeded." for name in names)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() in self.lines)


def _run(args: argparse.Namespace) -> int:
    from greenllm.controller.config import SETTINGS, ConfigError, OperatorConfig

    try:
        config = OperatorConfig.from_sources({s.field: getattr(args, s.field) for s in SETTINGS})
    except ConfigError as exc:
        return _fail("run", str(exc))
    problem = kube_credentials_problem()
    if problem is not None:
        return _fail("run", problem, 1)

    import kopf

    from greenllm.controller import handlers, heap  # importing handlers registers them with kopf
    from greenllm.controller.memo import OperatorMemo
    from greenllm.controller.prometheus import set_default_connection

    kopf.configure(verbose=config.log_level == "debug")
    _set_log_level(config.log_level)
    if config.log_level != "debug":
        logging.getLogger("kopf.objects").addFilter(SuccessOfPerEventHandlers(handlers.PER_EVENT_HANDLERS))
    set_default_connection(config.prometheus_connection())
    # A lost leader Lease stops the process as SIGTERM does (gracefully); then it exits 1 below. (Not kopf's
    # stop_flag: kopf waits on a thread-style flag in an executor thread that then blocks the exit.)
    memo = OperatorMemo(config=config, on_lease_lost=lambda: os.kill(os.getpid(), signal.SIGTERM))
    heap.settle()  # after the imports: they are never garbage
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.peering_name is None,
        peering_name=config.peering_name,
        priority=config.priority,
        liveness_endpoint=f"http://0.0.0.0:{config.probe_port}/healthz",
        memo=memo,
    )
    lease = memo.get("leader")
    if lease is not None and lease.lost:
        return _fail("run", "lost the leader Lease; exiting so that this pod restarts as a follower", 1)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from greenllm.calibration import default_energy_model
    from greenllm.core.decision import Observation
    from greenllm.core.step import initial_decision, initial_state, step
    from greenllm.modelfile import ModelFileError, load_green_model, require_supported_gpu

    energy = default_energy_model()
    try:
        gm = load_green_model(Path(args.file))
        require_supported_gpu(gm, args.file, energy)
    except ModelFileError as e:
        return _fail("plan", str(e))
    decision = initial_decision(gm.spec, energy)
    if args.prompt_tokens_per_s is None and args.output_tokens_per_s is None:
        print(
            "greenllm plan: planned for zero demand (the decision before any metrics); pass one with "
            "--prompt-tokens-per-s N and/or --output-tokens-per-s N",
            file=sys.stderr,
        )
    else:
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
        "reasonKind": str(decision.kind),
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
    from greenllm.api.crd import render_energy_budget_yaml, render_yaml

    text = render_energy_budget_yaml() if args.kind == "EnergyBudget" else render_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """`greenllm run`'s flags, one per config setting; None = not given (the environment or default)."""
    from greenllm.controller.config import SETTINGS, OperatorConfig

    defaults = OperatorConfig()
    for s in SETTINGS:
        default = s.render(getattr(defaults, s.field)) if getattr(defaults, s.field) is not None else "none"
        help_text = f"{s.help} [env {s.env}; default {default or 'all'}]"
        if s.kind == "switch":
            run.add_argument(s.flag, dest=s.field, action="store_true", default=None, help=help_text)
            continue

        def parse(text: str, setting: Any = s) -> Any:
            try:
                return setting.parse(text)
            except (ValueError, TypeError) as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        run.add_argument(
            s.flag,
            dest=s.field,
            type=parse,
            action="append" if s.kind == "list" else "store",
            default=None,
            metavar=s.metavar,
            help=help_text,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greenllm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"greenllm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the operator (kopf)",
        description="Run the operator. Each setting comes from its flag, else its GREENLLM_* "
        "environment variable, else the default.",
    )
    add_run_arguments(run)
    run.set_defaults(func=_run)

    agent = sub.add_parser("agent", help="run the node power agent", add_help=False)
    agent.set_defaults(func=None)

    simulate = sub.add_parser("simulate", help="replay a request trace against baselines", add_help=False)
    simulate.set_defaults(func=None)

    plan = sub.add_parser("plan", help="print the decision for a GreenModel file")
    plan.add_argument("file", help="GreenModel YAML file")
    plan.add_argument(
        "--prompt-tokens-per-s",
        type=_nonneg_float,
        default=None,
        metavar="N",
        help="demand to plan for: prompt tokens/s (default: none, the decision before any metrics)",
    )
    plan.add_argument(
        "--output-tokens-per-s",
        type=_nonneg_float,
        default=None,
        metavar="N",
        help="demand to plan for: output tokens/s (default: none)",
    )
    plan.add_argument(
        "--carbon-intensity", type=_nonneg_float, default=None, metavar="G", help="grid intensity, gCO2/kWh"
    )
    plan.set_defaults(func=_plan)

    crd = sub.add_parser("crd", help="print a CRD generated from the API models (GreenModel by default)")
    crd.add_argument(
        "--kind", choices=["GreenModel", "EnergyBudget"], default="GreenModel", help="which CRD to print"
    )
    crd.add_argument("--output", "-o", default=None, metavar="FILE", help="write to FILE instead of stdout")
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
