"""Asking Prometheus: the connection (TLS verification, bearer token or basic auth read per request) and a
`Query` backed by prometheus-api-client. What is asked and what the answers mean is loop/queries.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
import requests.auth
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from greenllm.loop.promql import Query


@dataclass(frozen=True)
class PrometheusConnection:
    """How the operator talks to Prometheus: TLS verification and authentication.

    Certificates are verified (against `ca_file`, else the system's CAs) unless `insecure_skip_verify`
    is set explicitly. A bearer token or a basic-auth password is read from its file on every request,
    so a rotated token or password is picked up without a restart."""

    ca_file: str | None = None
    insecure_skip_verify: bool = False
    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None

    @property
    def verify(self) -> bool | str:
        if self.insecure_skip_verify:
            return False
        return self.ca_file or True

    def auth(self) -> requests.auth.AuthBase | None:
        if self.bearer_token_file:
            return _BearerTokenFile(self.bearer_token_file)
        if self.username and self.password_file:
            return _BasicAuthFile(self.username, self.password_file)
        return None


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class _BearerTokenFile(requests.auth.AuthBase):
    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {_read_secret(self.path)}"
        return r


class _BasicAuthFile(requests.auth.AuthBase):
    def __init__(self, username: str, password_file: str) -> None:
        self.username = username
        self.password_file = password_file

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        basic = requests.auth.HTTPBasicAuth(self.username, _read_secret(self.password_file))
        result: requests.PreparedRequest = basic(r)
        return result


# What `prometheus_query` uses when no connection is passed: set once at start-up by `greenllm run`.
_default_connection = PrometheusConnection()


def set_default_connection(connection: PrometheusConnection) -> None:
    global _default_connection
    _default_connection = connection
    if connection.insecure_skip_verify:
        logging.getLogger(__name__).warning(
            "Prometheus TLS certificates are NOT verified (--prometheus-insecure-skip-verify)"
        )


def prometheus_client(url: str, timeout_s: float, retries: int, connection: PrometheusConnection) -> Any:
    """The PrometheusConnect for `url`: certificates verified unless told otherwise, auth per request."""
    retry = Retry(
        total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504], allowed_methods=["GET"]
    )
    session = requests.Session()
    session.verify = connection.verify
    return PrometheusConnect(url=url, session=session, retry=retry, timeout=timeout_s, auth=connection.auth())


def prometheus_query(
    url: str, timeout_s: float, retries: int = 2, connection: PrometheusConnection | None = None
) -> Query:
    """A Query backed by prometheus-api-client, with timeouts and retries with backoff."""
    client = prometheus_client(url, timeout_s, retries, connection or _default_connection)

    def run(promql: str) -> Any:
        return client.custom_query(promql)

    return run
