"""The operator's Prometheus client against a real Prometheus (Debian's `prometheus`) served over TLS with a
self-signed certificate and basic auth (`--web.config.file`): verified with the CA bundle, refused without
it (verification is never silently off), skipped only when asked, and the password read from its file."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from tests.prometheus_server import PROMETHEUS, free_port

from greenllm.controller.config import OperatorConfig
from greenllm.controller.prometheus import prometheus_query

USER = "greenllm"
PASSWORD = "greenllm-test"
# bcrypt of PASSWORD (cost 10), as Prometheus' basic_auth_users wants it; made once with crypt(3).
PASSWORD_BCRYPT = "$2b$10$Tc6b/jsk7QNqVcmM3vKff.FXh7Iy1qUGvDK.s3ApfPVHaJMtUBfzq"

pytestmark = pytest.mark.skipif(
    not (Path(PROMETHEUS).exists() and shutil.which("openssl")), reason="needs prometheus and openssl"
)


@dataclass
class TlsPrometheus:
    url: str
    ca: Path
    password_file: Path


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPrometheus]:
    d = tmp_path_factory.mktemp("tls-prom")
    key, cert = d / "server.key", d / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (d / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  {USER}: '{PASSWORD_BCRYPT}'\n"
    )
    (d / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    password_file = d / "password"
    password_file.write_text(PASSWORD + "\n")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    log = (d / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={d / 'web.yml'}"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"{url}/-/ready", verify=str(cert), auth=(USER, PASSWORD), timeout=1)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"prometheus did not start: {(d / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield TlsPrometheus(url, cert, password_file)
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _query(server: TlsPrometheus, **settings: object) -> object:
    config = OperatorConfig(prometheus_url=server.url, **settings)  # type: ignore[arg-type]
    return prometheus_query(config.prometheus_url, 5.0, retries=0, connection=config.prometheus_connection())(
        "vector(1)"
    )


def test_ca_bundle_and_basic_auth_reach_it(tls_prometheus: TlsPrometheus) -> None:
    result = _query(
        tls_prometheus,
        prometheus_ca_file=str(tls_prometheus.ca),
        prometheus_username=USER,
        prometheus_password_file=str(tls_prometheus.password_file),
    )
    assert isinstance(result, list) and result[0]["value"][1] == "1"


def test_an_unknown_certificate_is_refused_by_default(tls_prometheus: TlsPrometheus) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        _query(
            tls_prometheus,
            prometheus_username=USER,
            prometheus_password_file=str(tls_prometheus.password_file),
        )


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # urllib3 still warns
def test_skipping_verification_only_when_asked(tls_prometheus: TlsPrometheus) -> None:
    result = _query(
        tls_prometheus,
        prometheus_insecure_skip_verify=True,
        prometheus_username=USER,
        prometheus_password_file=str(tls_prometheus.password_file),
    )
    assert isinstance(result, list) and result


def test_a_wrong_password_is_an_error(tls_prometheus: TlsPrometheus, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    with pytest.raises(Exception, match="401"):
        _query(
            tls_prometheus,
            prometheus_ca_file=str(tls_prometheus.ca),
            prometheus_username=USER,
            prometheus_password_file=str(wrong),
        )


def test_no_credentials_is_an_error(tls_prometheus: TlsPrometheus) -> None:
    with pytest.raises(Exception, match="401"):
        _query(tls_prometheus, prometheus_ca_file=str(tls_prometheus.ca))
