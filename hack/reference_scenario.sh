#!/usr/bin/env bash
# The reference scenario of `greenllm simulate` (issue 3): the shipped Azure LLM code trace (CC-BY 4.0,
# Patel et al., Splitwise, ISCA 2024) scaled so that the static baseline needs 16 replicas at its peak,
# served by examples/llama-3.1-8b-h100.yaml (Llama-3.1-8B on H100-SXM; bf16, fp8, int8, int4; quality
# floor 0.97). Prints the per-policy table, greenllm's energy ratios to each baseline and whether the
# issue's targets are met (greenllm <= 0.47x static, <= 1.15x oracle, SLO attainment >= 99%).
# Writes result.json, decisions.jsonl and reference.png to $OUT (default out/reference).
# Extra arguments go to the simulator (e.g. --startup-delay 120s).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/reference}"
mkdir -p "$out"
python_bin="${PYTHON:-python}"
export PYTHONPATH="operator${PYTHONPATH:+:$PYTHONPATH}"

start=$(date +%s.%N)
"$python_bin" -m greenllm.sim.command \
  --model examples/llama-3.1-8b-h100.yaml \
  --scale-to-peak-replicas 16 \
  --decisions-out "$out/decisions.jsonl" \
  --plot "$out/reference.png" \
  --json "$@" > "$out/result.json"
end=$(date +%s.%N)

"$python_bin" - "$out/result.json" "$start" "$end" <<'PY'
import json
import sys

from greenllm.sim.report import Summary, table

result = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
s = result["scenario"]
print(
    f"{s['model']} on {s['gpu']}: {s['trace']} x{s['rate_scale']:.4g}, static = {s['static_replicas']} x "
    f"{s['top_variant']}, start-up {s['startup_delay_s']:g} s, carbon {s['carbon_g_per_kwh']} g/kWh"
)
print()
print(table({name: Summary(**values) for name, values in result["policies"].items()}))
print()
ratios = result["ratios"]["greenllm_energy_over"]
slo = result["policies"]["greenllm"]["slo_attainment"]
checks = [
    ("greenllm / static energy", ratios["static"], "<= 0.47", ratios["static"] <= 0.47),
    ("greenllm / oracle energy", ratios["oracle"], "<= 1.15", ratios["oracle"] <= 1.15),
    ("greenllm / hpa energy", ratios["hpa"], "(reported)", None),
    ("greenllm SLO attainment", slo, ">= 0.99", slo >= 0.99),
]
for name, value, target, ok in checks:
    verdict = "" if ok is None else ("met" if ok else "NOT met")
    print(f"{name:<26} {value:8.3f}  target {target:<10} {verdict}")
print(f"\nsimulation {s['wall_time_s']:.1f} s, whole run {wall:.1f} s; outputs in {sys.argv[1].rsplit('/', 1)[0]}/")
PY
