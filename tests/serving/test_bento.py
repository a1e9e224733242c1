"""`bentoml build` makes a Bento of the service (no docker: the models stay in the registry), and
`patron bento build` one that carries its models (issue 14.7): served with MLflow unreachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serving.settings import ServingSettings

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


CARRY = "bento-carry-test"


def _bento_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PATRON_", "MLFLOW_", "BENTOML_"))
    }
    env.update({"BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"})
    return env


def test_a_bento_carries_its_models_and_serves_them_without_mlflow(served_pipeline, tmp_path):
    """`patron bento build` imports the champion into BentoML's model store (labels: family,
    alias, registered model, version) and lists it in the Bento's models; `bentoml serve` of
    that Bento, with the tracking URI on an empty folder, answers /score with that version."""
    import httpx

    from serving.cli import stop_server
    from serving.handlers import score_customers
    from serving.state import build_state
    from tests.serving.conftest import (
        USER_KEY,
        free_port,
        register_copy,
        serving_settings,
        wait_until_ready,
    )
    from tests.serving.test_http import snapshot_ids

    state = served_pipeline["state"]
    version = register_copy(state, served_pipeline["logged"]["model_uri"], CARRY, ("champion",))
    doc = serving_settings(served_pipeline, CARRY, reload_interval_s=0)
    doc["tracking_uri"] = state.tracking_uri
    serving_yaml = tmp_path / "serving.yaml"
    serving_yaml.write_text(yaml.safe_dump(doc))
    env = _bento_env(tmp_path)
    patron = Path(sys.executable).with_name("patron")
    done = subprocess.run(
        [str(patron), "bento", "build", "--serving", str(serving_yaml), "--version", "t1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    home = tmp_path / "bentoml"
    bento = home / "bentos" / "patron" / "t1"
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    tags = [m["tag"] if isinstance(m, dict) else m for m in manifest["models"]]
    assert tags == [f"patron-churn:{CARRY}-v{version}"]
    (model_yaml,) = (home / "models" / "patron-churn").glob("*/model.yaml")
    model = yaml.safe_load(model_yaml.read_text())
    assert model["module"] == "bentoml.mlflow"
    assert model["labels"] == {
        "family": "churn",
        "alias": "champion",
        "registered_model": CARRY,
        "version": version,
    }
    assert model["metadata"]["run_id"]

    # served from the Bento with MLflow unreachable: the tracking URI is an empty folder
    empty = tmp_path / "no-mlflow"
    empty.mkdir()
    doc["tracking_uri"] = empty.as_uri()
    port = free_port()
    env.update(
        {
            "PATRON_HOME": str(state.home),
            "PATRON_SERVING": json.dumps(doc),
            "PATRON_API_KEYS": USER_KEY,
        }
    )
    log = tmp_path / "bento.log"
    bentoml = Path(sys.executable).with_name("bentoml")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(bentoml), "serve", "patron:t1", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc, log, timeout_s=120)
        ids = snapshot_ids(served_pipeline, 5)
        got = httpx.post(
            f"{url}/score",
            json={"customer_ids": ids},
            headers={"Authorization": f"Bearer {USER_KEY}"},
            timeout=30,
        )
        assert got.status_code == 200, got.text
    finally:
        stop_server(proc)
    assert not list(empty.iterdir())  # MLflow never wrote its store there
    in_memory = build_state(
        ServingSettings.model_validate(serving_settings(served_pipeline, CARRY)), state
    )
    assert got.json() == score_customers(in_memory, "churn", ids, 10_000)


def test_outside_a_bento_the_registry_is_mlflows(tmp_path):
    """Only a process running in a Bento's src (bento.yaml beside it) reads carried models."""
    from serving.bento_models import bento_dir, registry_for
    from serving.registry import Registry

    mlflow_registry = Registry(tmp_path.as_uri())
    assert bento_dir(tmp_path) is None
    assert registry_for(mlflow_registry, tmp_path) is mlflow_registry
    (tmp_path / "src").mkdir()
    (tmp_path / "bento.yaml").write_text("service: serving.service:Patron\nmodels: []\n")
    assert bento_dir(tmp_path / "src") == tmp_path.resolve()
    # a Bento that carries no Patron model: MLflow's registry, as before
    assert registry_for(mlflow_registry, tmp_path / "src") is mlflow_registry
