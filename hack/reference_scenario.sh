#!/usr/bin/env bash
# The reference scenario of `greenllm simulate` (issue 9): examples/llama-3.1-8b-h100.yaml (Llama-3.1-8B on
# H100-SXM; bf16, fp8, int8, int4; quality floor 0.97; 99 % of requests within TTFT 2 s and TPOT 50 ms),
# scaled so that a peak-rule static fleet would need 16 replicas, on three traces:
#   1. the shipped Azure LLM code trace (CC-BY 4.0, Patel et al., Splitwise, ISCA 2024), --scale-mode copies;
#   2. the same, --scale-mode shifted (independent user populations);
#   3. a steadier trace made from it: the same request sizes, Poisson arrivals at the trace's mean rate
#      (hack/steady_trace.py, seed 1) -- a trace no rule was tuned on.
# Prints each comparison and whether the issue's targets are met (greenllm attainment >= target, energy
# <= best-static, target <= 0.85 x best-static and <= 0.50 x static). Outputs go to $OUT (out/reference).
# Extra arguments go to the simulator (e.g. --sensitivity, --startup-delay 120s).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/reference}"
mkdir -p "$out"
python_bin="${PYTHON:-python3}"
export PYTHONPATH="operator${PYTHONPATH:+:$PYTHONPATH}"

"$python_bin" hack/steady_trace.py --seed 1 --out "$out/steady.csv"
run() {
  local name="$1"; shift
  "$python_bin" -m greenllm.sim.command --model examples/llama-3.1-8b-h100.yaml \
    --scale-to-peak-replicas 16 --decisions-out "$out/$name.decisions.jsonl" --json --no-progress "$@" \
    > "$out/$name.json"
  "$python_bin" - "$out/$name.json" "$name" <<'PY'
import json
import sys

from greenllm.sim.command import report_text

result = json.load(open(sys.argv[1]))
print(f"== {sys.argv[2]} ==")
print(report_text(result))
p = result["policies"]
g = p["greenllm"]
target = result["scenario"]["attainment_target"]
over = result["ratios"]["greenllm_energy_over"]
checks = [
    ("greenllm attainment", g["slo_attainment"], f">= {target}", g["slo_attainment"] >= target),
    ("greenllm / best-static energy", over["best-static"], "<= 1 (target 0.85)", over["best-static"] <= 1.0),
    ("greenllm / static energy", over["static"], "<= 0.50", over["static"] <= 0.50),
    ("greenllm / clairvoyant energy", over["clairvoyant"], "(reported)", None),
]
for name, value, want, ok in checks:
    verdict = "" if ok is None else ("met" if ok else "NOT met")
    print(f"{name:<32} {value:8.3f}  target {want:<20} {verdict}")
print(f"simulation wall time {result['scenario']['wall_time_s']:.1f} s\n")
PY
}
run code-copies --scale-mode copies "$@"
run code-shifted --scale-mode shifted "$@"
run steady --trace "$out/steady.csv" "$@"
