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


def cli_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> str:
    """Run the ``patron`` entry point; it must exit 1 with one ``error:`` line and no traceback.
    Returns that line."""
    from patron.cli import main

    monkeypatch.setattr("sys.argv", ["patron", *args])
    monkeypatch.delenv("PATRON_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


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


#: Under pytest-xdist (``make test`` runs two workers, ``--dist loadfile``) each module is one unit
#: of work (its module fixtures — a Spark session, a browser, the demo — built once); session
#: fixtures are built once per worker. xdist hands the modules out by their number of tests
#: (most first); this order (the README test, the demo, servers, trainings first) holds only in
#: a single process. Tried under xdist (``--no-loadscope-reorder``): the README test then ran
#: beside the servers and trainings, 676 s instead of 540, and the suite took 24 min against 20.
#:
#: Not ``--dist loadgroup`` with an ``xdist_group`` mark per module, as before: with pytest 9.2
#: xdist 3.8 no longer tags a grouped test's node id (pytest-xdist issue 1386), so every test was
#: scheduled on its own and a module's fixtures were built on both workers (measured: the demo's
#: 80-second fixture twice, the Spark session of the parity tests twice).
HEAVY_FIRST = ("tests/test_readme.py", "tests/test_demo.py", "tests/serving/", "tests/training/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heavy modules first (in one process; xdist hands modules out in its own order)."""

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return next(
            (i for i, p in enumerate(HEAVY_FIRST) if module.startswith(p)), len(HEAVY_FIRST)
        )

    items.sort(key=rank)  # stable: collection order within a rank and within a module
