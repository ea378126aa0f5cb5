"""Import boundaries of the agent: only agent/gpu/nvml.py touches pynvml; the power core stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import greenllm

PACKAGE = Path(greenllm.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_nvml_backend_imports_pynvml() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(m == "pynvml" or m.startswith("pynvml.") for m in imported_modules(path))
    )
    assert importers == ["agent/gpu/nvml.py"]


def test_power_core_imports_only_the_standard_library() -> None:
    modules = imported_modules(PACKAGE / "core" / "power.py")
    assert modules <= {"__future__", "math", "collections.abc", "dataclasses", "enum"}, modules
