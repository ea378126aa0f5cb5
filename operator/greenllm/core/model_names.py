"""Model and GPU names as written in specs and in the calibration: normalised forms to compare them, and
the parameter count a model name states."""

from __future__ import annotations

import re

_SIZE_MOE = re.compile(r"(?<![\w.])(\d+)x(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
_SUFFIXES = ("-instruct", "-it", "-hf", "-fp8", "-chat")


def normalize_model_name(name: str) -> str:
    base = name.strip().lower().rsplit("/", 1)[-1]
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                changed = True
    return base.removeprefix("meta-")


def params_from_name(name: str) -> float | None:
    """Parameter count in billions written in a model name ("Llama-3.1-8B" -> 8), or None."""
    base = name.rsplit("/", 1)[-1]
    moe = _SIZE_MOE.search(base)
    if moe:
        return float(moe.group(1)) * float(moe.group(2))
    m = _SIZE.search(base)
    return float(m.group(1)) if m else None


def normalize_gpu_name(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().upper())
