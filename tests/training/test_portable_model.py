"""A logged model loads and predicts in a clean environment built from its own requirements.

The model's requirements.txt is pinned (``name==version``) and the project code it pickles
(``models``, ``features``) ships with it as MLflow code paths: a fresh virtual environment with
only those requirements — no project installed, not run from the repository — loads it and returns
the scores the training process computes (issue 14, item 7).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = """
import importlib.util
import sys
import mlflow.pyfunc
import pandas as pd
model_dir, rows, out = sys.argv[1:4]
assert importlib.util.find_spec("models") is None  # the project is not installed here
model = mlflow.pyfunc.load_model(model_dir)
import models
assert models.__file__.startswith(model_dir), models.__file__  # the shipped code, not a checkout
pd.DataFrame(model.predict(pd.read_parquet(rows))).to_parquet(out)
"""


def _uv() -> str | None:
    local = Path(sys.executable).with_name("uv")
    return str(local) if local.exists() else shutil.which("uv")


def test_a_logged_model_loads_in_a_fresh_environment_from_its_requirements(
    synthetic_pipeline, tmp_path
):
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed (the Makefile installs it into .venv)")
    state = synthetic_pipeline["state"]
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    model_id = synthetic_pipeline["logged"]["model_uri"].removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    model_dir = Path(location.removeprefix("file://"))
    requirements = (model_dir / "requirements.txt").read_text().split()
    pinned = [r for r in requirements if not r.startswith("-")]
    assert pinned and all("==" in r for r in pinned), requirements
    assert (model_dir / "code" / "models" / "pyfunc.py").exists()

    from tests.serving.conftest import ensure_snapshot

    snapshot = ensure_snapshot(state, "synthetic", synthetic_pipeline["cfg"].feature_set)
    rows = tmp_path / "rows.parquet"
    pd.read_parquet(snapshot).head(50).to_parquet(rows)
    expected = pd.DataFrame(mlflow.pyfunc.load_model(str(model_dir)).predict(pd.read_parquet(rows)))

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "-r",
            str(model_dir / "requirements.txt"),
        ],
        check=True,
        env=env,
    )
    out = tmp_path / "scores.parquet"
    done = subprocess.run(
        [str(python), "-c", SCRIPT, str(model_dir), str(rows), str(out)],
        cwd=tmp_path,  # not the repository: nothing of the project on sys.path
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
