"""The BentoML service over real HTTP on a loopback port: start, score, stop."""

from __future__ import annotations

import httpx
import pytest

from training.cli import _free_port, _serving_env, _snapshot, start_server, wait_ready

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(synthetic_pipeline):
    state, cfg = synthetic_pipeline["state"], synthetic_pipeline["cfg"]
    _snapshot("synthetic", cfg.feature_set, None, state)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(_serving_env(cfg, state), "127.0.0.1", port)
    try:
        wait_ready(url, proc)
        yield url, synthetic_pipeline
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode is not None


def test_scores_known_and_lists_unknown_ids(server):
    url, pipeline = server
    import pandas as pd

    from features.build import latest_snapshot

    _, path = latest_snapshot(pipeline["state"], "synthetic", "churn_v1")
    ids = pd.read_parquet(path, columns=["customer_id"])["customer_id"].head(3).tolist()
    response = httpx.post(f"{url}/score", json={"customer_ids": [*ids, "NOPE"]}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert [s["customer_id"] for s in body["scores"]] == ids
    assert all(0.0 <= s["probability"] <= 1.0 for s in body["scores"])
    assert body["unknown"] == [{"customer_id": "NOPE", "reason": "not in the feature snapshot"}]
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(pipeline["state"].tracking_uri)
    name = pipeline["cfg"].registered_model
    champion = MlflowClient().get_model_version_by_alias(name, "champion")
    assert body["version"] == str(champion.version)


@pytest.mark.parametrize(
    "payload",
    [
        {"customer_ids": []},
        {"customer_ids": "C1"},
        {"customer_ids": [1.5, None]},
        {},
        {"customer_ids": ["C1"], "model": "no-such-model"},
    ],
)
def test_bad_requests_get_4xx_with_a_message(server, payload):
    url, _ = server
    response = httpx.post(f"{url}/score", json=payload, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    assert response.text


def test_health_endpoints(server):
    url, _ = server
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
