#!/usr/bin/env python3
"""Regenerate crds/ (and the chart's copy) from the API models: `python hack/gen_crds.py`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from greenllm.api.crd import render_yaml  # noqa: E402

TARGETS = [
    ROOT / "crds" / "greenmodels.greenllm.io.yaml",
    ROOT / "charts" / "greenllm" / "crds" / "greenmodels.greenllm.io.yaml",
]


def main() -> int:
    text = render_yaml()
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
