"""The operator's loop asks Prometheus with its own configuration's TLS and auth settings, not with the
process-wide default that only `greenllm run` sets (an operator started another way must not fall back to
no auth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest

from greenllm.controller import handlers, prometheus
from greenllm.controller.config import OperatorConfig
from greenllm.loop import promql


def test_the_loop_uses_its_configs_prometheus_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    config = OperatorConfig(prometheus_bearer_token_file=str(token))
    seen: list[dict[str, Any]] = []

    def fake_query(url: str, timeout_s: float, retries: int = 2, connection: Any = None) -> promql.Query:
        seen.append({"url": url, "timeout_s": timeout_s, "connection": connection})
        return lambda promql: []

    monkeypatch.setattr(prometheus, "prometheus_query", fake_query)
    memo = kopf.Memo(config=config, prometheus={})
    handlers._prometheus(memo, "http://prom:9090")
    handlers._prometheus(memo, "http://prom:9090")  # one client per URL
    assert len(seen) == 1
    assert seen[0]["connection"] == config.prometheus_connection()
    assert seen[0]["timeout_s"] == config.prometheus_timeout_s
