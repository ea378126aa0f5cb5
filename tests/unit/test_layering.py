"""The pure core stays pure: greenllm.core and greenllm.api import no shell, no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "greenllm"
FORBIDDEN = (
    "kopf",
    "kubernetes",
    "prometheus_api_client",
    "prometheus_client",
    "pynvml",
    "grpc",
    "requests",
    "aiohttp",
    "urllib",
    "socket",
    "subprocess",
    "os",
    "time",
    "datetime",
    "random",
    "greenllm.controller",
    "greenllm.agent",
    "greenllm.sim",
    "greenllm.calibration",
    "greenllm.cli",
)
PURE = sorted([*(PACKAGE / "core").glob("*.py"), *(PACKAGE / "api").glob("*.py")])


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_modules_import_no_shell(path: Path) -> None:
    bad = {n for n in imported(path) for f in FORBIDDEN if n == f or n.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_operator_dir_is_not_a_package() -> None:
    assert not (PACKAGE.parent / "__init__.py").exists(), (
        "operator/ would shadow the stdlib `operator` module"
    )


def test_only_the_nvml_backend_imports_pynvml() -> None:
    users = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "pynvml" in imported(p)]
    assert users == ["agent/gpu/nvml.py"]
