#!/usr/bin/env python3
"""Write a steadier request trace made from the shipped Azure code trace: the same request sizes (resampled
with replacement), Poisson arrivals at the trace's mean rate over the same duration. Used by
hack/reference_scenario.sh as a trace no rule of greenllm was tuned on.

    python hack/steady_trace.py --seed 1 --out out/steady.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from greenllm.sim.trace import load_trace


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (timestamp, input, output tokens)")
    args = p.parse_args()
    base = load_trace()
    rng = np.random.default_rng(args.seed)
    n = len(base)
    arrivals = np.sort(rng.uniform(0.0, base.duration_s, size=rng.poisson(n)))
    pick = rng.integers(0, n, size=arrivals.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "input_tokens", "output_tokens"])
        for t, i in zip(arrivals, pick, strict=True):
            w.writerow([f"{t:.6f}", int(base.prompt_tokens[i]), int(base.output_tokens[i])])
    print(f"wrote {args.out}: {arrivals.size} requests over {base.duration_s:.0f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
