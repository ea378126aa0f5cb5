"""`greenllm agent`: the node DaemonSet entry point."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from greenllm.agent.exporter import AgentMetrics
from greenllm.agent.gpu.base import GpuBackend
from greenllm.agent.gpu.nvml import NvmlBackend
from greenllm.agent.gpu.simulated import SimulatedBackend, simulated_h100
from greenllm.agent.kube import KubeEvents, KubeReader, load_api_client
from greenllm.agent.podresources import DEFAULT_SOCKET, PodResourcesClient
from greenllm.agent.reconcile import Restraint
from greenllm.agent.runner import Agent
from greenllm.agent.state import StateStore
from greenllm.core.fasttier import READ_PERIOD_S
from greenllm.core.power import Backoff, HoldPolicy, watts_to_mw

log = logging.getLogger("greenllm.agent")

SIMULATED_GPUS_FILE = "simulated-gpus.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="greenllm agent",
        description="Apply the per-GPU power settings chosen by the greenllm operator on this node.",
    )
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default: $NODE_NAME)")
    p.add_argument(
        "--state-dir", type=Path, default=Path("/var/lib/greenllm"), help="hostPath for the record"
    )
    p.add_argument(
        "--pod-resources-socket", type=Path, default=DEFAULT_SOCKET, help="kubelet PodResources socket"
    )
    p.add_argument("--interval", type=float, default=10.0, help="seconds between reconcile cycles")
    p.add_argument(
        "--fast-interval",
        type=float,
        default=READ_PERIOD_S,
        help="seconds between reads of the vLLM metrics of pods on fast-tier GPUs (status.fastTier)",
    )
    p.add_argument(
        "--metrics-port", type=int, default=9401, help="Prometheus metrics port (0: any free port)"
    )
    p.add_argument("--backend", choices=["nvml", "simulated"], default="nvml", help="GPU backend")
    p.add_argument(
        "--simulated-gpus",
        type=Path,
        default=None,
        help=f"simulated GPU state file (default: STATE_DIR/{SIMULATED_GPUS_FILE}; one H100 if absent)",
    )
    p.add_argument("--dry-run", action="store_true", help="log what would change; change nothing")
    p.add_argument("--min-hold", type=float, default=60.0, help="seconds a GPU setting is kept at least")
    p.add_argument("--deadband", type=float, default=5.0, help="ignore limit changes smaller than this, W")
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,  # `info` like the operator's flag, or `INFO`
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level",
    )
    return p


def backend_factory(args: argparse.Namespace) -> Callable[[], GpuBackend]:
    if args.backend == "simulated":
        path: Path = args.simulated_gpus or args.state_dir / SIMULATED_GPUS_FILE

        def simulated() -> GpuBackend:
            return SimulatedBackend(path, None if path.exists() else [simulated_h100(0)])

        return simulated
    return NvmlBackend


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.node_name:
        log.error("no node name: pass --node-name or set NODE_NAME (the downward API spec.nodeName)")
        return 2
    if args.interval <= 0 or args.fast_interval <= 0:
        log.error("--interval and --fast-interval must be positive")
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: restoring GPU defaults and stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    policy = Restraint(
        hold=HoldPolicy(deadband_mw=watts_to_mw(args.deadband), min_hold_s=args.min_hold),
        backoff=Backoff(base_s=args.interval, max_s=10 * args.interval),
    )
    metrics = AgentMetrics(args.node_name)
    port = metrics.serve(args.metrics_port)
    log.info("metrics on :%d/metrics", port)
    try:
        api_client = load_api_client()
    except Exception as exc:  # kubernetes.config.ConfigException and file errors
        log.error("no Kubernetes configuration (in-cluster or kubeconfig): %s", exc)
        return 2
    with PodResourcesClient(args.pod_resources_socket) as pod_resources:
        agent = Agent(
            node_name=args.node_name,
            backend_factory=backend_factory(args),
            pod_resources=pod_resources,
            cluster=KubeReader(api_client, args.node_name),
            events=KubeEvents(api_client, args.node_name),
            store=StateStore(args.state_dir),
            metrics=metrics,
            interval_s=args.interval,
            policy=policy,
            dry_run=args.dry_run,
            fast_interval_s=args.fast_interval,
        )
        log.info(
            "agent on node %s: backend %s, interval %g s%s",
            args.node_name,
            args.backend,
            args.interval,
            ", DRY RUN" if args.dry_run else "",
        )
        agent.run(stop)
    log.info("stopped")
    return 0
