#!/usr/bin/env python3
"""Regenerate crds/ (and the chart's copy) from the API models: `python hack/gen_crds.py`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from greenllm.api.crd import rendered_files  # noqa: E402

DIRS = [ROOT / "crds", ROOT / "charts" / "greenllm" / "crds"]


def main() -> int:
    for name, text in rendered_files().items():
        for directory in DIRS:
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
