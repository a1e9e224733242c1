"""Serving fixtures: the session's synthetic pipeline plus a snapshot and registry names of our own.

Each test module registers the session's trained model under its own registered-model name, so
moving aliases here never disturbs the training tests that share the session pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from features.store import StateDirs

ROOT = Path(__file__).resolve().parents[2]
USER_KEY = "test-user-key-0123456789"
ADMIN_KEY = "test-admin-key-9876543210"


def ensure_snapshot(state: StateDirs, dataset: str, feature_set: str) -> Path:
    """The snapshot at the last data date (so it is the latest, whatever other tests wrote)."""
    from features.build import data_date_range, transactions_source, write_snapshot
    from features.definitions import feature_set as get_feature_set
    from features.sources import connect

    con = connect(state)
    try:
        as_of = data_date_range(con, transactions_source(state, dataset))[1]
        path = state.snapshots(dataset, feature_set) / f"as_of={as_of.isoformat()}.parquet"
        if path.exists():
            return path
        return write_snapshot(con, state, dataset, get_feature_set(feature_set), as_of)
    finally:
        con.close()


def register_copy(state: StateDirs, model_uri: str, name: str, aliases: tuple[str, ...]) -> str:
    """Register a logged model under ``name`` (a new version) and point the aliases at it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from serving.scoring import mlflow_uris

    with mlflow_uris(state.tracking_uri):
        mv = mlflow.register_model(model_uri, name)
    client = MlflowClient(tracking_uri=state.tracking_uri)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(mv.version))
    return str(mv.version)


def serving_settings(pipeline: dict[str, Any], name: str, **extra: Any) -> dict[str, Any]:
    """A $PATRON_SERVING document serving registered model ``name`` as family churn."""
    state, cfg = pipeline["state"], pipeline["cfg"]
    model = {
        "registered_model": name,
        "alias": "champion",
        "dataset": pipeline["dataset"].name,
        "feature_set": cfg.feature_set,
        **extra.pop("model", {}),
    }
    return {"home": str(state.home), "models": {"churn": model}, **extra}


@pytest.fixture(scope="session")
def served_pipeline(synthetic_pipeline):
    """The session pipeline with its serving snapshot written."""
    cfg = synthetic_pipeline["cfg"]
    ensure_snapshot(
        synthetic_pipeline["state"], synthetic_pipeline["dataset"].name, cfg.feature_set
    )
    return synthetic_pipeline


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `bentoml serve` child process on a loopback port, its log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        bentoml = Path(sys.executable).with_name("bentoml")
        cmd = [
            str(bentoml),
            "serve",
            "serving.service:Patron",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(
            f"server not ready in {timeout_s} s:\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def server_env(settings: dict[str, Any], home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        {
            "PATRON_HOME": str(home),
            "PATRON_SERVING": json.dumps(settings),
            "PATRON_API_KEYS": USER_KEY,
            "PATRON_ADMIN_KEYS": ADMIN_KEY,
            **extra,
        }
    )
    return env
