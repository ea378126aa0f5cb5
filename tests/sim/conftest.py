"""Fixtures of the simulator tests (helpers live in simkit.py)."""

from __future__ import annotations

import pytest
from simkit import FakeSource, spec_dict

from greenllm.api.v1alpha1 import GreenModelSpec


@pytest.fixture
def spec() -> GreenModelSpec:
    return GreenModelSpec.model_validate(spec_dict())


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()
