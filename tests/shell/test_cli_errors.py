"""`greenllm` refusing what it cannot do in one line, run as a user would (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-h100.yaml"


def greenllm(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin", "HOME": "/nonexistent-home"}
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=timeout,
        check=False,
    )


def one_line(out: subprocess.CompletedProcess[str], prefix: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.fixture
def unknown_gpu(tmp_path: Path) -> Path:
    model = tmp_path / "b999.yaml"
    text = EXAMPLE.read_text()
    assert "type: H100" in text
    model.write_text(text.replace("type: H100", "type: B999", 1))
    return model


def test_plan_with_an_unknown_gpu_lists_the_supported_ones(unknown_gpu: Path) -> None:
    out = greenllm("plan", str(unknown_gpu))
    assert out.returncode == 2 and out.stdout == ""
    line = one_line(out, "greenllm plan: error: ")
    assert "B999" in line and "H100-SXM" in line and "B200" in line


def test_simulate_with_an_unknown_gpu_lists_the_supported_ones(unknown_gpu: Path) -> None:
    out = greenllm("simulate", "--model", str(unknown_gpu), "--no-progress")
    assert out.returncode == 2 and out.stdout == ""
    line = one_line(out, "greenllm simulate: error: ")
    assert "B999" in line and "supported: H100-SXM" in line


def test_plan_without_demand_says_so_and_how_to_pass_one() -> None:
    out = greenllm("plan", str(EXAMPLE))
    assert out.returncode == 0
    line = one_line(out, "greenllm plan: planned for zero demand")
    assert "--prompt-tokens-per-s" in line and "--output-tokens-per-s" in line
    assert greenllm("plan", str(EXAMPLE), "--prompt-tokens-per-s", "100").stderr == ""


def test_plan_refuses_a_negative_demand() -> None:
    out = greenllm("plan", str(EXAMPLE), "--prompt-tokens-per-s", "-5")
    assert out.returncode == 2 and "must be >= 0" in out.stderr


@pytest.mark.skipif(bool(os.environ.get("KUBERNETES_SERVICE_HOST")), reason="inside a pod")
def test_run_without_credentials_exits_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    out = greenllm("run", env={"KUBECONFIG": str(missing)}, timeout=60)
    assert out.returncode == 1
    line = one_line(out, "greenllm run: error: no Kubernetes credentials")
    assert str(missing) in line


@pytest.mark.skipif(bool(os.environ.get("KUBERNETES_SERVICE_HOST")), reason="inside a pod")
def test_run_without_any_kubeconfig_or_service_account() -> None:
    out = greenllm("run", timeout=60)
    assert out.returncode == 1
    line = one_line(out, "greenllm run: error: no Kubernetes credentials")
    assert "service account" in line


def test_run_with_a_malformed_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("current-context: nowhere\n")
    out = greenllm("run", env={"KUBECONFIG": str(kubeconfig)}, timeout=60)
    assert out.returncode == 1
    assert str(kubeconfig) in one_line(out, "greenllm run: error: cannot use the kubeconfig")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"GREENLLM_IO_THREADS": "lots"}, "GREENLLM_IO_THREADS='lots'"),
        ((), {"GREENLLM_PROMETHEUS_USERNAME": "u"}, "basic auth needs both"),
        (("--prometheus-ca-file", "/ca", "--prometheus-insecure-skip-verify"), {}, "exclude each other"),
    ],
)
def test_run_refuses_bad_settings_before_connecting(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    out = greenllm("run", *args, env=env, timeout=60)
    assert out.returncode == 2
    assert message in one_line(out, "greenllm run: error: ")


def test_run_refuses_a_bad_flag_value() -> None:
    out = greenllm("run", "--io-threads", "0", timeout=60)
    assert out.returncode == 2 and "--io-threads: must be > 0" in out.stderr
