"""Serving fixtures: the session's synthetic pipeline plus a snapshot and registry names of our own.

Each test module registers the session's trained model under its own registered-model name, so
moving aliases here never disturbs the training tests that share the session pipeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from features.store import StateDirs

ROOT = Path(__file__).resolve().parents[2]
USER_KEY = "test-user-key-0123456789"
ADMIN_KEY = "test-admin-key-9876543210"
#: What a /target request with a churn or response-probability model must say to rank by it.
NON_CAUSAL = {"basis": "non_causal_score", "reason": "no uplift model for this offer yet"}


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


#: The synthetic next-best-offer experiment, cut down for the serving tests: what they check
#: (served = the model's own ranking, store = memory) holds for any fitted model, so two training
#: cutoffs and 60 trees do (the full one trains several times longer).
SMALL_NBO = {
    "cutoffs": {"train": ["2024-03-31", "2024-06-30"], "test": "2024-09-30"},
    "model": {"kind": "xgboost", "params": {"n_estimators": 60, "max_depth": 4}},
}


def small_nbo_config() -> Any:
    """``experiments/nbo/synthetic.yaml`` with ``SMALL_NBO``'s cutoffs and trees."""
    from training.config import load_experiment

    return load_experiment(ROOT / "experiments" / "nbo" / "synthetic.yaml", SMALL_NBO)


def register_copy(state: StateDirs, model_uri: str, name: str, aliases: tuple[str, ...]) -> str:
    """Register a logged model under ``name`` (a new version) and point the aliases at it."""
    return register_in(state.tracking_uri, model_uri, name, aliases)


def register_in(uri: str, model_uri: str, name: str, aliases: tuple[str, ...]) -> str:
    """Register a model of the store at ``uri`` (a logged ``models:/<model id>`` or a version's
    artifact location) under ``name``, explicitly, and point the aliases at the new version."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    source, run_id, model_id = model_uri, None, None
    if model_uri.startswith("models:/m-"):
        # resolved here: the SQL registry resolves a models:/ source with the process-wide URI
        model_id = model_uri.removeprefix("models:/")
        logged = client.get_logged_model(model_id)
        source, run_id = logged.artifact_location, logged.source_run_id
    with contextlib.suppress(MlflowException):  # registered before
        client.create_registered_model(name)
    mv = client.create_model_version(name, source, run_id=run_id, model_id=model_id)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(mv.version))
    return str(mv.version)


@contextmanager
def fluent_logging_to(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking and registry) at ``uri`` for the block (test set-up
    only), then put back both URIs and their environment variables, which MLflow exports."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env_before = {k: os.environ.get(k) for k in names}
    before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        registry_utils._registry_uri = before[1]
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_logged(uri: str, model_uri: str) -> Any:
    """The python model of a logged model (``models:/<model id>``) of the store at ``uri``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    return mlflow.pyfunc.load_model(location).unwrap_python_model()


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


def wait_until_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0
) -> None:
    """``serving.cli.wait_ready`` (until ``url``/readyz answers 200), with the log's tail when
    the server exits or time runs out."""
    from serving.cli import wait_ready

    try:
        wait_ready(url, proc, timeout_s)
    except (RuntimeError, TimeoutError) as exc:
        tail = log.read_text(errors="replace")[-3000:]
        raise type(exc)(f"{exc}:\n{tail}") from None


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
        from serving.lifecycle import own_bentoml_home, serve_command

        self.proc = subprocess.Popen(
            serve_command("127.0.0.1", self.port),
            env=own_bentoml_home(env, self.port),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        try:
            wait_until_ready(self.url, self.proc, self.log_path, timeout_s)
        except TimeoutError:
            self.stop()
            raise

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
    env.pop("MLFLOW_REGISTRY_URI", None)
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


def small_beside_large(
    srv: Server,
    big_ids: list[str],
    small_ids: list[str],
    big_ok: Callable[[Any], bool],
    small_body: Callable[[Any], Any],
) -> tuple[list[bool], list[tuple[str, int, Any]]]:
    """Two clients send ``/score`` for ``big_ids`` six times each while four others send each
    of ``small_ids`` (split between them) three times, 1 customer per request, once the large
    requests have started. Returns whether each large answer was 200 and ``big_ok``, and each
    small request's (customer, status, ``small_body(response)``)."""
    import httpx

    user = {"Authorization": f"Bearer {USER_KEY}"}
    big_out: list[bool] = []
    small_out: list[tuple[str, int, Any]] = []
    started = threading.Event()

    def big_client() -> None:
        with httpx.Client(base_url=srv.url, headers=user, timeout=60) as http:
            for _ in range(6):
                started.set()
                r = http.post("/score", json={"customer_ids": big_ids})
                big_out.append(r.status_code == 200 and big_ok(r))

    def small_client(mine: list[str]) -> None:
        started.wait(timeout=60)
        with httpx.Client(base_url=srv.url, headers=user, timeout=60) as http:
            for cid in mine * 3:
                r = http.post("/score", json={"customer_ids": [cid]})
                small_out.append((cid, r.status_code, small_body(r)))

    srv.wait_ready()
    bigs = [threading.Thread(target=big_client) for _ in range(2)]
    smalls = [threading.Thread(target=small_client, args=(small_ids[i::4],)) for i in range(4)]
    for t in [*bigs, *smalls]:
        t.start()
    for t in [*bigs, *smalls]:
        t.join(timeout=120)
    return big_out, small_out
