"""`bentoml build` makes a Bento of the service (no docker: the models stay in the registry)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bentoml_build_makes_a_bento_of_the_service(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PATRON_")},
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    done = subprocess.run(
        [str(bentoml), "build", "-f", "serving/bentofile.yaml", "-o", "tag", "."],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (bento_yaml,) = (tmp_path / "bentoml" / "bentos" / "patron").glob("*/bento.yaml")
    bento = bento_yaml.parent
    meta = yaml.safe_load(bento_yaml.read_text())
    assert meta["service"] == "serving.service:Patron" and meta["models"] == []
    routes = {r["route"] for r in meta["schema"]["routes"]}
    assert {"/score", "/next-best-offer", "/target"} <= routes
    src = bento / "src"
    for module in (
        "serving/service.py",
        "serving/targeting.py",
        "features/segments.py",
        "models/pyfunc.py",
        "models/nbo.py",
        "features/build.py",
    ):
        assert (src / module).exists(), module
    assert not (src / "tests").exists()
    assert not (src / "training").exists() and not (src / "experiments").exists()
    assert not list(src.rglob("*.parquet")) and not list(src.rglob("*.db"))
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml" in requirements and "mlflow" in requirements
