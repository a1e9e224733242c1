"""The MLflow registry as serving sees it: aliases, model versions and the runs behind them.

Every call names its store: an ``MlflowClient`` built with explicit tracking and registry URIs,
and artifacts downloaded with those URIs passed along. Nothing here sets MLflow's process-wide
URIs (``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` to the environment), so two
registries in one process never see each other's store.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from features.store import StateDirs
from serving.settings import ServingSettings

#: How many ``models:/`` indirections a version's download URI may go through.
_MAX_HOPS = 4


@dataclass(frozen=True)
class ModelMeta:
    """Registry facts of one served model version."""

    family: str
    kind: str
    registered_model: str
    alias: str
    version: str
    run_id: str
    trained_at: str | None
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    loaded_at: str


def tracking_uri_of(settings: ServingSettings, state: StateDirs) -> str:
    """The settings' tracking URI, else the state's (as ``StateDirs.resolve`` settled it)."""
    return settings.tracking_uri or state.tracking_uri


def recorded_feature_set(python_model: Any) -> dict[str, Any] | None:
    """The feature set a model recorded (``info["feature_set_spec"]``); None for older models."""
    info = getattr(python_model, "info", {}) or {}
    spec = info.get("feature_set_spec") if isinstance(info, Mapping) else None
    return dict(spec) if spec else None


def run_facts(client: Any, run_id: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
    """Training time, test metrics and a few tags of the run that logged a model."""
    try:
        run = client.get_run(run_id)
    except Exception:  # a model registered from outside a run
        return None, {}, {}
    started = run.info.start_time
    trained_at = (
        datetime.fromtimestamp(started / 1000, tz=UTC).isoformat(timespec="seconds")
        if started
        else None
    )
    metrics = {
        k: float(v)
        for k, v in sorted(run.data.metrics.items())
        if k.startswith("test_") and math.isfinite(float(v))
    }
    tags = {k: v for k, v in run.data.tags.items() if k in ("grade", "test_cutoff", "git_sha")}
    return trained_at, metrics, tags


class Registry:
    """The few MLflow registry calls the service makes, all against one explicit store."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self._client: Any = None
        self._lock = threading.Lock()
        # (name, version) -> the feature set the version recorded: versions never change
        self._feature_sets: dict[tuple[str, str], dict[str, Any] | None] = {}
        # models loaded only to read their record, handed to the next load() of that version
        self._unclaimed: dict[tuple[str, str], Any] = {}

    @property
    def client(self) -> Any:
        """The store's ``MlflowClient``, made on first use: a replica whose families all come
        from the online store never imports MLflow nor opens (or creates) its database."""
        with self._lock:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
                )
            return self._client

    def version(self, name: str, alias: str) -> tuple[str, str]:
        """(version, run_id) an alias points at now."""
        mv = self.client.get_model_version_by_alias(name, alias)
        return str(mv.version), str(mv.run_id)

    def run_facts(self, run_id: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
        """Training time, test metrics and a few tags of a run of this store."""
        return run_facts(self.client, run_id)

    def artifact_uri(self, name: str, version: str) -> str:
        """Where a registered version's files are (``models:/`` indirections resolved here)."""
        uri = self.client.get_model_version_download_uri(name, version)
        for _ in range(_MAX_HOPS):
            if not uri.startswith("models:/"):
                return uri
            # MLflow's own resolver of models:/ URIs reads the process-wide URIs: resolve here
            ref = uri.removeprefix("models:/").strip("/")
            if "/" not in ref and "@" not in ref:  # a logged model id (MLflow 3: m-...)
                uri = self.client.get_logged_model(ref).artifact_location
            else:
                ref_name, _, ref_version = ref.partition("/")
                uri = self.client.get_model_version_download_uri(ref_name, ref_version)
        raise ValueError(f"{name} v{version}: too many models:/ indirections to its files")

    def load(self, name: str, version: str) -> Any:
        """The python model of a registered version (by number, so an alias move cannot race)."""
        with self._lock:
            model = self._unclaimed.pop((name, version), None)
        if model is not None:
            return model
        import mlflow

        uri = self.artifact_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="patron-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
                registry_uri=self.registry_uri,
            )
            model = mlflow.pyfunc.load_model(local).unwrap_python_model()
        with self._lock:
            self._feature_sets[(name, version)] = recorded_feature_set(model)
        return model

    def feature_set(self, name: str, version: str) -> dict[str, Any] | None:
        """The feature set a version recorded (None: none); loads it once when never loaded."""
        key = (name, version)
        with self._lock:
            if key in self._feature_sets:
                return self._feature_sets[key]
        model = self.load(name, version)
        with self._lock:
            self._unclaimed[key] = model  # the build that follows takes it instead of reloading
            return self._feature_sets[key]
