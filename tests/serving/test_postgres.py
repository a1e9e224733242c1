"""The registry load path against a real MLflow tracking server on PostgreSQL (loopback only).

The setup starts a throwaway PostgreSQL cluster (initdb in a temporary folder, as the
``postgres`` user when the tests run as root) and ``mlflow server`` on it, logs the session's
trained model there, and builds the serving state from that server the way a replica does.
Skips, saying why, when PostgreSQL's server binaries or psycopg2 are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.settings import ServingSettings
from serving.state import build_state
from tests.serving.conftest import fluent_logging_to, free_port, load_logged, serving_settings

pytestmark = pytest.mark.server

NAME = "serving-postgres-test"


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return candidates[-1] if candidates else None


def _as_db_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as postgres")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres_mlflow():
    """(tracking URI, artifact folder) of an MLflow server on a fresh PostgreSQL cluster."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    pytest.importorskip("psycopg2", reason="psycopg2-binary is needed for a postgresql:// store")
    root = Path(tempfile.mkdtemp(prefix="patron-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    pg_port, ml_port = free_port(), free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    mlflow_proc = None
    started = False
    try:
        subprocess.run(
            _as_db_user(
                [initdb, "-D", str(data), "-U", "patron", "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            **run,
        )
        opts = (
            f"-p {pg_port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_db_user(
                [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w", "start"]
            ),
            **run,
        )
        started = True
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=pg_port, user="patron", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE mlflow")
        con.close()
        artifacts = root / "artifacts"
        artifacts.mkdir()
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        mlflow_proc = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(ml_port),
                "--backend-store-uri",
                f"postgresql+psycopg2://patron@127.0.0.1:{pg_port}/mlflow",
                "--artifacts-destination",
                artifacts.as_uri(),
                "--workers",
                "1",
            ],
            stdout=open(root / "mlflow.log", "wb"),  # noqa: SIM115 - lives as long as the server
            stderr=subprocess.STDOUT,
            env=env,
        )
        uri = f"http://127.0.0.1:{ml_port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if mlflow_proc.poll() is not None:
                raise RuntimeError((root / "mlflow.log").read_text()[-3000:])
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError((root / "mlflow.log").read_text()[-3000:])
        yield uri
    finally:
        if mlflow_proc is not None:
            mlflow_proc.terminate()
            try:
                mlflow_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                mlflow_proc.kill()
        if started:
            subprocess.run(
                _as_db_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def _publish(uri: str, wrapper, metrics: dict[str, float]) -> str:
    """Log the wrapper to the remote server, register it and make it champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from training.run import pip_requirements

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name("serving-postgres")
    exp_id = found.experiment_id if found else client.create_experiment("serving-postgres")
    with fluent_logging_to(uri):
        with mlflow.start_run(experiment_id=exp_id):
            mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=wrapper,
                pip_requirements=pip_requirements(),
                registered_model_name=NAME,
            )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(NAME, "champion", version)
        return version


def test_replicas_load_the_champion_from_a_postgres_backed_server(served_pipeline, postgres_mlflow):
    state = served_pipeline["state"]
    local = load_logged(state.tracking_uri, served_pipeline["logged"]["model_uri"])
    metrics = {"roc_auc": float(served_pipeline["result"].metrics["roc_auc"])}
    version = _publish(postgres_mlflow, local, metrics)

    settings = ServingSettings.model_validate(
        serving_settings(served_pipeline, NAME, tracking_uri=postgres_mlflow, reload_interval_s=0)
    )
    served_state = build_state(settings, state)
    served = served_state.models["churn"]
    assert served.meta.version == version
    assert served.meta.metrics["test_roc_auc"] == pytest.approx(metrics["roc_auc"])
    frame = served.base.features.iloc[:50]
    np.testing.assert_allclose(served.scores[:50], local.score(frame), rtol=0, atol=1e-12)

    # a new champion on the server is what the next reload serves
    new = _publish(postgres_mlflow, local, metrics)
    reloaded = build_state(settings, state, previous=served_state)
    assert reloaded.models["churn"].meta.version == new != version
    assert reloaded.models["churn"].base is served.base
