"""The container image: the Dockerfile checked statically (no Docker engine here), and the package it builds
installed from its wheel into a clean virtual environment, where the console script must start."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import venv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chartkit import ROOT, find, objects

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = "python:3.11-slim"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[list[str], dict[str, str], list[Stage]]:
    """(parser directives, global ARG defaults, stages). Handles comments and backslash continuations."""
    lines = text.splitlines()
    directives = []
    for line in lines:
        match = re.match(r"#\s*(\w+)=(\S+)$", line)
        if not match:
            break
        directives.append(f"{match.group(1)}={match.group(2)}")
    logical: list[str] = []
    pending = ""
    for raw in lines:
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return directives, global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[str], dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _resolve(base: str, global_args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], base)


def test_multi_stage_on_slim_python(dockerfile: tuple[list[str], dict[str, str], list[Stage]]) -> None:
    directives, global_args, stages = dockerfile
    assert directives and directives[0].startswith("syntax=docker/dockerfile:1")
    assert len(stages) >= 2
    assert {_resolve(s.base, global_args) for s in stages} == {BASE_IMAGE}
    assert stages[0].name == "build"
    final = stages[-1]
    copies = final.args("COPY")
    assert copies and all(arg.startswith("--from=build ") for arg in copies), (
        "the runtime copies only build output"
    )


def test_final_stage_has_no_build_tools(dockerfile: tuple[list[str], dict[str, str], list[Stage]]) -> None:
    final = dockerfile[2][-1]
    commands = " ".join(final.args("RUN"))
    for tool in (
        "apt-get install",
        "apk add",
        "gcc",
        "build-essential",
        "pip install",
        "pip wheel",
        "python -m build",
    ):
        assert tool not in commands, tool
    assert re.search(r"pip uninstall --yes pip setuptools wheel", commands), (
        "pip/setuptools/wheel are removed"
    )
    build = dockerfile[2][0]
    assert re.search(r"pip uninstall --yes pip setuptools wheel", " ".join(build.args("RUN"))), (
        "the copied virtual environment carries no pip"
    )


def test_runs_as_the_non_root_user_the_chart_expects(
    dockerfile: tuple[list[str], dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[2][-1]
    (user,) = final.args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    commands = " ".join(final.args("RUN"))
    assert f"--uid {uid}" in commands and f"--gid {gid}" in commands
    pod = find(objects(), "Deployment")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))


def test_one_image_two_entry_points(dockerfile: tuple[list[str], dict[str, str], list[Stage]]) -> None:
    final = dockerfile[2][-1]
    (entrypoint,) = final.args("ENTRYPOINT")
    (cmd,) = final.args("CMD")
    assert json.loads(entrypoint) == ["greenllm"]  # exec form: signals reach the process
    assert json.loads(cmd) == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["greenllm"] == "greenllm.cli:main"
    objs = objects()
    assert find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"][0] == "run"
    assert find(objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"][0] == "agent"
    for workload in ("Deployment", "DaemonSet"):
        assert "command" not in find(objs, workload)["spec"]["template"]["spec"]["containers"][0]
    env = " ".join(final.args("ENV"))
    assert "PATH=/opt/greenllm/bin:" in env


def test_exposes_the_chart_ports(dockerfile: tuple[list[str], dict[str, str], list[Stage]]) -> None:
    exposed = {int(p) for arg in dockerfile[2][-1].args("EXPOSE") for p in arg.split()}
    objs = objects()
    ports = {
        p["containerPort"]
        for kind in ("Deployment", "DaemonSet")
        for p in find(objs, kind)["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert exposed == ports


# --- build context ------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!operator/", "**/__pycache__"]
    assert dockerignore_excludes(patterns, "tests/x.py")
    assert not dockerignore_excludes(patterns, "operator/greenllm/cli.py")
    assert dockerignore_excludes(patterns, "operator/greenllm/__pycache__/cli.cpython-311.pyc")


def build_context_files() -> list[str]:
    patterns = _dockerignore_patterns()
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return sorted(p for p in tracked if (ROOT / p).is_file() and not dockerignore_excludes(patterns, p))


def test_build_context_is_only_what_the_wheel_needs(
    dockerfile: tuple[list[str], dict[str, str], list[Stage]],
) -> None:
    context = build_context_files()
    assert "pyproject.toml" in context
    assert all(
        p == "pyproject.toml" or p == "README.md" or p.startswith("operator/greenllm/") for p in context
    )
    for ignored in (
        ".git/HEAD",
        "tests/manifests/test_image.py",
        "charts/greenllm/Chart.yaml",
        "deploy/x.yaml",
    ):
        assert dockerignore_excludes(_dockerignore_patterns(), ignored), ignored
    build = dockerfile[2][0]
    for copy in build.args("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            source = source.rstrip("/")
            assert any(p == source or p.startswith(source + "/") for p in context), (
                f"COPY {source}: not in context"
            )


# --- the wheel in a clean virtual environment ---------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel built from the Docker build context, installed with --no-deps into a venv
    that sees the already installed dependencies (offline: nothing is downloaded)."""
    work = tmp_path_factory.mktemp("image")
    context = work / "context"
    for rel in build_context_files():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    if not (context / "README.md").exists():
        pytest.fail("README.md is missing: pyproject.toml declares it and the Dockerfile copies it")
    dist = work / "dist"
    env = _clean_env()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(context),
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=work,
    )
    (wheel,) = dist.glob("greenllm-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    _see_outer_environment(env_dir)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=work,
    )
    return wheel, env_dir


def _see_outer_environment(env_dir: Path) -> None:
    """`system_site_packages` links the new venv to the *base* interpreter's site-packages. When the tests
    themselves run in a virtualenv (`pip install -e '.[test]'` inside one), the dependencies live in that
    outer venv, so its site directories are appended to the new venv's path with a .pth file (plain path
    lines: they come after the venv's own site-packages, so the installed wheel still wins over the
    outer editable install, whose .pth hooks are not run)."""
    if sys.prefix == sys.base_prefix:
        return
    (inner,) = (env_dir / "lib").glob("python*/site-packages")
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (inner / "_outer_environment.pth").write_text("".join(f"{p}\n" for p in outer))


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env_dir / "bin" / "greenllm"), *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=env_dir,
        timeout=120,
    )


@pytest.mark.slow
def test_wheel_holds_every_package_file(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "operator"
    shipped_suffixes = {".py", ".csv", ".md", ".json", ".yaml", ".typed"}
    paths = [ROOT / rel for rel in build_context_files()]
    expected = {
        path.relative_to(package).as_posix()
        for path in paths
        if path.is_relative_to(package) and path.suffix in shipped_suffixes
    }
    assert expected, "no package files found"
    assert expected - names == set(), "files missing from the wheel (pyproject package-data?)"


@pytest.mark.slow
def test_console_script_starts_from_the_wheel(installed: tuple[Path, Path]) -> None:
    _, env_dir = installed
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import greenllm; print(greenllm.__file__)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=env_dir,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"imported {where}, not the installed wheel"
    top = _run(env_dir, "--help")
    assert top.returncode == 0, top.stderr
    assert "run" in top.stdout and "agent" in top.stdout


@pytest.mark.slow
def test_operator_command_line_contract(installed: tuple[Path, Path]) -> None:
    result = _run(installed[1], "run", "--help")
    assert result.returncode == 0, result.stderr
    for flag in (
        "--prometheus-url",
        "--namespace",
        "--metrics-port",
        "--probe-port",
        "--log-level",
        "--default-carbon-intensity",
        "--peering",
        "--priority",
    ):
        assert flag in result.stdout, flag


@pytest.mark.slow
def test_agent_command_line_contract(installed: tuple[Path, Path]) -> None:
    result = _run(installed[1], "agent", "--help")
    assert result.returncode == 0, result.stderr
    for flag in (
        "--node-name",
        "--state-dir",
        "--pod-resources-socket",
        "--interval",
        "--metrics-port",
        "--backend",
        "--dry-run",
        "--log-level",
    ):
        assert flag in result.stdout, flag


# --- declared dependencies ---------------------------------------------------------------------------------


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _imported_distributions() -> set[str]:
    """Distributions providing the top-level modules the package imports (stdlib and greenllm left out)."""
    modules: set[str] = set()
    for path in (ROOT / "operator" / "greenllm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"greenllm", "__future__"}
    providers = importlib.metadata.packages_distributions()
    return {_requirement_name(dist) for module in modules for dist in providers.get(module, [module])}


def test_declared_dependencies_are_what_the_package_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(d) for d in project["dependencies"]}
    assert declared == _imported_distributions()
    sim = {_requirement_name(d) for d in project["optional-dependencies"]["sim"]}
    assert sim == {"matplotlib", "tqdm"}
    assert set(project["optional-dependencies"]["sim"]) <= set(project["dependencies"]), (
        "the default install includes [sim] with the same specifiers"
    )


def test_image_installs_the_dependencies_without_the_sim_extra(
    dockerfile: tuple[list[str], dict[str, str], list[Stage]],
) -> None:
    build = " ".join(dockerfile[2][0].args("RUN"))
    match = re.search(r"python -c '([^']*)' > (\S+)", build)
    assert match, "the build stage writes the runtime requirements from pyproject.toml"
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)], cwd=ROOT, check=True, capture_output=True, text=True
    )
    runtime = {_requirement_name(line) for line in result.stdout.split()}
    assert "matplotlib" not in runtime and "tqdm" not in runtime
    assert {"kopf", "kubernetes", "numpy", "urllib3", "nvidia-ml-py"} <= runtime
    assert f"pip install -r {match.group(2)}" in build
    assert re.search(r"pip install --no-deps /dist/greenllm-\S+\.whl", build)
    assert re.search(r"pip install (?!-r |--no-deps )", build) is None, "nothing else is installed"
