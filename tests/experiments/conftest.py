"""Shared state for the experiments tests: the multi-arm synthetic data, generated once."""

from __future__ import annotations

import pytest

from features.cli import _generate, _ingest
from features.sources import load_dataset
from features.store import StateDirs


@pytest.fixture(scope="session")
def arms_state(tmp_path_factory: pytest.TempPathFactory) -> StateDirs:
    """``synthetic_arms`` (three randomised multi-arm waves) at 20 000 customers, ingested."""
    state = StateDirs.resolve(tmp_path_factory.mktemp("arms"))
    dataset = load_dataset("synthetic_arms")
    _generate(dataset, state, customers=20_000, seed=5)
    _ingest(dataset, state)
    return state
