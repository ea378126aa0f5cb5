"""Markers for the install-path tests (until pyproject declares them)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds and installs the wheel (seconds, not milliseconds)")
