"""Trace-replay simulator that drives the same decision step as the operator.

`greenllm simulate` (`greenllm.sim.command.main`) replays a request trace in fixed time steps (1 s by
default) against four policies on the same fleet model and the same energy profiles:

- greenllm: the operator's loop itself. Every `spec.scaling.interval` the controller's PromQL
  (`loop.promql.build_queries`) is answered by a simulated Prometheus and turned into an
  `Observation` by `loop.promql.observe`; `core.step.step` decides. No peeking: Prometheus holds
  only scrapes taken so far (every `--scrape-interval`, visible after `--metrics-lag`), and rates come
  from those samples with Prometheus' own extrapolation (`telemetry`). vLLM counts tokens when it serves
  them, so a saturated fleet shows its own capacity plus a queue (`num_requests_waiting`), not the demand.
- static: highest-quality variant, default power, replicas sized for the trace's peak (demand averaged
  over `--peak-window`, default the scaling interval, plus the spec's headroom).
- hpa: highest-quality variant, default power, a Kubernetes HPA on GPU utilization (70% target,
  5-minute scale-down window, the default scale-up policies, 15 s sync, 10% tolerance).
- oracle: each step, the least-power (variant, setting, replicas) that can serve that step's exact
  work, with no start-up delay and no switching cost: the lower bound.

Models (each module's docstring has the detail):
- `fluidqueue`: requests are fluid cohorts served first-come-first-served by the whole fleet at the
  `ReplicaPerformance` capacities; a backlog carries over; a token served more than the spec's TTFT p90
  SLO after its request arrived counts as late, and tokens still queued at the end as unserved. The
  SLO attainment is on-time tokens / tokens that arrived.
- `fleet`: the Deployment greenllm renders, rolled by Kubernetes' rules (maxSurge / maxUnavailable from
  the rendered object, Kubernetes defaults otherwise), pods ready at the first readiness probe after
  `--startup-delay`, at most `--gpus` GPUs, power settings applied in place.
- Energy: ready replicas draw `ReplicaPerformance.power_w` at the load they served in the step, starting
  pods the idle power of their variant, pending pods nothing. Carbon = energy x grid intensity
  (`--carbon-intensity`, else `spec.metrics.carbonIntensity.gramsPerKwh`, else the Ember 2024 world
  average).
- Rate scaling multiplies every request (fluid weight) without compressing time, so the trace's bursts
  keep their shape: K copies of each request arrive together.
"""
