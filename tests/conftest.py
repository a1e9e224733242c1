"""Shared fixtures: a temporary state folder and the public datasets beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features.store import StateDirs

ROOT = Path(__file__).resolve().parent.parent
# OpenMP threads that spin while they wait hold cores the suite's other processes need (servers
# the tests start, the test process itself): an XGBoost fit measured 16 s instead of 2.4 s with
# the cores shared, 1.7 s with passive waiting. Set before anything loads the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SHARED_DATASETS = Path(os.environ.get("PATRON_SHARED", str(ROOT.parent / "shared"))) / "datasets"


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
        pytest.skip(
            f"public dataset not found at {path} (expected ../shared/datasets beside the repo)"
        )
    return path


@pytest.fixture(scope="session")
def synthetic_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """Synthetic data generated, ingested and trained once per session (churn/synthetic.yaml)."""
    from features.sources import ingest, load_dataset
    from features.synthetic import SyntheticConfig, generate
    from training.config import load_experiment
    from training.run import run_experiment

    home = tmp_path_factory.mktemp("pipeline") / "home"
    state = StateDirs.resolve(home)
    old_env = {k: os.environ.get(k) for k in ("PATRON_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["PATRON_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    state = StateDirs.resolve(home)
    try:
        dataset = load_dataset("synthetic")
        syn = SyntheticConfig.model_validate({**dataset.synthetic, "n_customers": 3000})
        generate(syn, state.synthetic(dataset.name))
        report = ingest(dataset, state)
        cfg = load_experiment(ROOT / "experiments" / "churn" / "synthetic.yaml")
        out = run_experiment(cfg, state)
        yield {
            "state": state,
            "dataset": dataset,
            "cfg": cfg,
            "result": out.trained,
            "logged": out.logged,
            "ingest": report,
            "frame": out.frame,
        }
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Fixtures built once per process that several modules share: under pytest-xdist (``make test``
#: runs two workers) every test using one of them goes to the same worker, so each is built once.
SHARED_FIXTURE_GROUPS = {
    "synthetic_pipeline": "synthetic-pipeline",  # also served_pipeline, which builds on it
    "arms_state": "arms",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``: the tests that share a session fixture form one group, every
    other module one group (its module fixtures — a Spark session, a browser — built once); the
    README test, a long chain of subprocesses, is a group of its own so the other worker runs the
    rest beside it."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    for item in items:
        names = getattr(item, "fixturenames", ())
        group = next((g for f, g in SHARED_FIXTURE_GROUPS.items() if f in names), None)
        if group is None:
            module = item.nodeid.split("::", 1)[0]
            readme = item.nodeid.startswith("tests/test_readme.py::test_readme_commands")
            group = "readme" if readme else module
        item.add_marker(pytest.mark.xdist_group(group))
