"""Shared fixtures: a temporary state folder and the public datasets beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features.store import StateDirs

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = Path(
    os.environ.get("PATRON_SHARED", str(ROOT.parent / "shared"))
) / "datasets"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDirs:
    """A fresh state folder; MLflow points into it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PATRON_HOME", str(tmp_path / "home"))
    return StateDirs.resolve(tmp_path / "home")


def require_dataset(*parts: str) -> Path:
    """Path of a file under ../shared/datasets, or skip the test saying what is missing."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public dataset not found at {path} (expected ../shared/datasets beside the repo)")
    return path
