"""The one run path and the one logging path of every family.

``run_experiment`` builds the family's frame, trains, and hands the result to ``log_run``, which
writes the same complete record for every family: tags (family, dataset, feature set, git commit,
grade, promotion reason), params, metrics (test, baseline, delta, champion), the config file and
the resolved config, the data manifest, the feature set, evaluation tables and charts, the model
with its signature; then registers it as ``challenger`` and moves ``champion`` when earned.

MLflow's tracking URI is passed explicitly (``StateDirs.tracking_uri``) and set only inside
``tracking``, which restores the previous URI and environment afterwards.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.sources import load_dataset
from features.store import StateDirs
from training.config import ExperimentConfig
from training.families import get_family
from training.families.base import Family, Frame, RunContext, Trained
from training.guards import check_frame
from training.promote import Champion, PromotionDecision, PromotionPolicy, decide_promotion

#: What a logged model needs to load and predict in a clean environment, pinned by
#: ``pip_requirements`` to the versions it was trained with (xgboost-cpu or xgboost, whichever
#: is installed).
REQUIRED_DISTRIBUTIONS = (
    "mlflow",
    "xgboost-cpu",
    "scikit-learn",
    "scipy",
    "pandas",
    "numpy",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "cloudpickle",
)
#: The project's packages a pickled model refers to (``models.*``; next-best-offer models also
#: import ``features``), shipped with each logged model as MLflow code paths.
CODE_PACKAGES = ("models", "features")
ROOT = Path(__file__).resolve().parent.parent


def pip_requirements() -> list[str]:
    """``name==version`` of every distribution a served model imports, as installed now."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in REQUIRED_DISTRIBUTIONS:
        candidates = ("xgboost-cpu", "xgboost") if name == "xgboost-cpu" else (name,)
        for candidate in candidates:
            try:
                pinned.append(f"{candidate}=={version(candidate)}")
                break
            except PackageNotFoundError:
                continue
        else:
            raise RuntimeError(f"{name} is not installed: it is needed to log a servable model")
    return pinned


def code_paths() -> list[str]:
    """The project packages shipped with a logged model (loaded before the installed ones only
    where the project is not installed, e.g. a fresh environment built from requirements)."""
    return [str(ROOT / package) for package in CODE_PACKAGES]


_TRACKING_LOCK = threading.RLock()
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value; promotion.json keeps the whole reason


@dataclass
class RunOutput:
    """A finished run: the frame, the trained result and what was logged / registered."""

    frame: Frame
    trained: Trained
    logged: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        return self.trained.metrics


@contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Use ``uri`` for MLflow's fluent API inside the block only; restore the previous tracking
    and registry URIs and both environment variables afterwards (MLflow exports each URI to the
    environment when it is set)."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    with _TRACKING_LOCK:
        old_env = {name: os.environ.get(name) for name in names}
        old_tracking = tracking_utils._tracking_uri
        old_registry = registry_utils._registry_uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_tracking)  # type: ignore[arg-type]
            registry_utils._registry_uri = old_registry
            for name, value in old_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def ensure_experiment(state: StateDirs, name: str) -> str:
    """The MLflow experiment's id (created with an absolute artifact location); inside
    ``tracking``."""
    import mlflow

    state.mlflow_dir.mkdir(parents=True, exist_ok=True)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = (state.artifact_root / name).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def git_sha() -> str:
    """The commit of the code that ran ("unknown" outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_manifest(
    cfg: ExperimentConfig, ingest_report: dict[str, Any], frame: Frame, trained: Trained
) -> dict[str, Any]:
    """The data manifest: input files with sha256, ingest counts, the family's own facts
    (feature set, cutoffs, split …) and row counts."""
    tables = ingest_report.get("tables", {})
    return {
        "dataset": ingest_report.get("dataset"),
        "input_files": [f for t in tables.values() for f in t.get("source_files", [])],
        "input_files_by_table": {
            name: list(t.get("source_files", [])) for name, t in tables.items()
        },
        "ingest": {
            name: {k: t[k] for k in ("read", "accepted", "quarantined", "quarantined_by_reason")}
            for name, t in tables.items()
        },
        "family": cfg.family,
        "feature_set": None,
        **frame.manifest,
        "row_counts": trained.row_counts,
    }


def run_experiment(
    cfg: ExperimentConfig,
    state: StateDirs,
    progress: Callable[[str], None] | None = None,
    params: dict[str, Any] | None = None,
    on_cutoff: Callable[[int, int], None] | None = None,
) -> RunOutput:
    """The whole job for any family: frame, train, log to MLflow, register, decide promotion.
    The MLflow run starts when the job does: its duration is the whole job's. ``progress``
    hears each stage, ``on_cutoff`` (done, total) as the features of each cutoff are built."""
    started_ms = int(time.time() * 1000)
    family = get_family(cfg.family)
    ctx = RunContext(state, load_dataset(cfg.dataset), on_cutoff)
    if progress:
        progress("features")
    frame = family.build_frame(cfg, ctx)
    frame.manifest.setdefault("dataset", ctx.dataset.name)
    check_frame(cfg, frame)
    if progress:
        progress("fit")
    trained = family.train(cfg, frame, params)
    if progress:
        progress("log")
    manifest = build_manifest(cfg, ctx.catalog.ingest_report(), frame, trained)
    logged = log_run(cfg, family, frame, trained, manifest, state, started_ms=started_ms)
    return RunOutput(frame, trained, logged)


def log_inputs(manifest: dict[str, Any]) -> None:
    """Each ingested table as an MLflow dataset input: its source files (path) and their sha256
    digests (the run page's "Datasets"); nothing of the data itself is logged."""
    import hashlib

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    dataset = manifest.get("dataset") or "data"
    by_table = manifest.get("input_files_by_table") or {}
    for table, files in sorted(by_table.items()):
        if not files:
            continue
        digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()[:16]
        try:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": local files
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(str(files[0]["path"]))
        except Exception:  # a source MLflow cannot name: the run still logs
            continue
        meta = MetaDataset(source, name=f"{dataset}.{table}", digest=digest)  # type: ignore[abstract]
        mlflow.log_input(meta, context="training")


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}


def _write_artifact(folder: Path, name: str, value: Any) -> Path:
    path = folder / name
    if isinstance(value, pd.DataFrame):
        if name.endswith(".parquet"):
            value.to_parquet(path, index=False)
        else:
            value.to_csv(path, index=False)
    else:
        import json

        path.write_text(json.dumps(value, indent=2, default=str))
    return path


def log_run(
    cfg: ExperimentConfig,
    family: Family,
    frame: Frame,
    trained: Trained,
    manifest: dict[str, Any],
    state: StateDirs,
    started_ms: int | None = None,
) -> dict[str, Any]:
    """Log the complete record of a run; register the model; decide and log promotion.

    The run is named by the family's settings plus a short unique id (runs of one config stay
    apart), starts at ``started_ms`` (the job's start) and records each ingested table's source
    files as MLflow dataset inputs (source path, sha256 digest)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    metric, _ = family.promotion_metric(cfg)
    sha = git_sha()
    with tracking(state.tracking_uri):
        exp_id = ensure_experiment(state, cfg.experiment_name)
        client = MlflowClient(tracking_uri=state.tracking_uri)
        created = client.create_run(
            exp_id,
            start_time=started_ms,
            run_name=f"{family.run_name(cfg, trained)} {uuid.uuid4().hex[:6]}",
        )
        with (
            mlflow.start_run(run_id=created.info.run_id),
            tempfile.TemporaryDirectory() as tmp,
        ):
            log_inputs(manifest)
            folder = Path(tmp)
            fs = frame.feature_set
            mlflow.set_tags(
                {
                    "family": cfg.family,
                    "dataset": manifest.get("dataset") or "",
                    "feature_set": fs.key if fs else "",
                    "git_sha": sha,
                    "mlflow.source.git.commit": sha,
                    "registered_model": cfg.registered_model,
                    "test_cutoff": (manifest.get("cutoffs") or {}).get("test", ""),
                    "test_split": cfg.test_label,  # which rows the test metrics are on
                    "grade": trained.grade,
                    "baseline": trained.baseline_name,
                    "mlflow.note.content": family.describe(cfg, trained),
                    **family.tags(cfg, frame, trained),
                }
            )
            cutoffs = manifest.get("cutoffs") or {}
            mlflow.log_params(
                {
                    **{f"xgb.{k}": v for k, v in trained.params.items()},
                    "family": cfg.family,
                    "feature_set": fs.key if fs else "",
                    "horizon_days": manifest.get("horizon_days") or "",
                    "lookback_days": manifest.get("lookback_days") or "",
                    "train_cutoffs": ",".join(cutoffs.get("train", [])),
                    "test_cutoff": cutoffs.get("test", ""),
                    "seed": cfg.seed,
                    **family.log_params(cfg, frame, trained),
                }
            )
            mlflow.log_metrics({f"test_{k}": v for k, v in _finite(trained.metrics).items()})
            mlflow.log_metrics(
                {f"baseline_{k}": v for k, v in _finite(trained.baseline_metrics).items()}
            )
            for prefix, values in trained.extra_metrics.items():
                mlflow.log_metrics({f"{prefix}_{k}": v for k, v in _finite(values).items()})
            mlflow.log_metric(
                f"delta_baseline_{metric}",
                trained.metrics[metric] - trained.baseline_metrics[metric],
            )
            if cfg.config_path is not None:
                mlflow.log_artifact(str(cfg.config_path), artifact_path="config")
            mlflow.log_dict(cfg.model_dump(mode="json"), "config/resolved.json")
            mlflow.log_dict(manifest, "data_manifest.json")
            if fs is not None:
                mlflow.log_dict({**fs.spec(), "features": fs.describe()}, "feature_set.json")
            outputs = {
                "test_predictions.parquet": trained.test_predictions,
                **family.artifacts(cfg, frame, trained),
            }
            paths = [_write_artifact(folder, name, value) for name, value in outputs.items()]
            paths += family.charts(cfg, trained, folder)
            for path in paths:
                mlflow.log_artifact(str(path), artifact_path="evaluation")
            return register_and_promote(cfg, family, frame, trained, state)


def register_and_promote(
    cfg: ExperimentConfig, family: Family, frame: Frame, trained: Trained, state: StateDirs
) -> dict[str, Any]:
    """Inside an active run: log the served model with its signature, register it as
    ``challenger``, re-score the champion on the same test rows, move ``champion`` when earned,
    and log the decision with its evidence (``promotion.json``, ``promotion_*`` metrics)."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    run = mlflow.active_run()
    assert run is not None, "register_and_promote runs inside log_run's MLflow run"
    wrapper = family.wrap(cfg, frame, trained)
    example = family.input_example(cfg, trained)
    predict_params = family.predict_params(cfg)
    output = wrapper.predict(None, example, predict_params)
    with warnings.catch_warnings():
        # integer feature columns are never missing in snapshots: MLflow's hint does not apply
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            signature=infer_signature(example, output, predict_params),
            input_example=example,
            pip_requirements=pip_requirements(),
            code_paths=code_paths(),
            registered_model_name=cfg.registered_model,
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    decision = decide(cfg, family, trained, client)
    client.set_registered_model_alias(cfg.registered_model, "challenger", version)
    if decision.promote:
        client.set_registered_model_alias(cfg.registered_model, "champion", version)
    for key, value in {"grade": trained.grade, "family": cfg.family}.items():
        client.set_model_version_tag(cfg.registered_model, version, key, value)
    mlflow.set_tags(
        {
            "promoted_to_champion": str(decision.promote).lower(),
            "promotion_reason": decision.reason[:MAX_TAG_CHARS],
            "model_version": version,
        }
    )
    mlflow.log_dict(decision.to_dict(), "promotion.json")
    mlflow.log_metrics(decision.evidence_metrics())
    if decision.champion is not None and np.isfinite(decision.champion):
        mlflow.log_metric(f"champion_{decision.metric}", decision.champion)
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "model_uri": info.model_uri,
        "registered_model": cfg.registered_model,
        "version": version,
        "champion": decision.promote,
        "decision": decision.to_dict(),
    }


def champion_evidence(
    cfg: ExperimentConfig, family: Family, trained: Trained, client: Any
) -> Champion | None:
    """The current champion's scores of the challenger's own test rows, scored as the family
    scores a loaded champion (None without a champion). When it cannot score them (it needs
    inputs this run lacks), no scores: the error and its own logged test metric instead."""
    import mlflow
    from mlflow.exceptions import MlflowException

    metric, _ = family.promotion_metric(cfg)
    try:
        mv = client.get_model_version_by_alias(cfg.registered_model, "champion")
    except MlflowException:
        return None
    try:
        wrapper = mlflow.pyfunc.load_model(
            f"models:/{cfg.registered_model}/{mv.version}"
        ).unwrap_python_model()
        scores = np.asarray(family.champion_scores(cfg, trained, wrapper), dtype=float)
        rows = len(trained.test_predictions)
        if scores.shape != (rows,):
            raise ValueError(f"scores of shape {scores.shape} for {rows} test rows")
        return Champion(str(mv.version), scores)
    except (ValueError, KeyError, AttributeError, TypeError, MlflowException) as err:
        logged = client.get_run(mv.run_id).data.metrics.get(f"test_{metric}")
        return Champion(str(mv.version), None, logged, f"{type(err).__name__}: {err}")


def promotion_policy(cfg: ExperimentConfig, family: Family) -> PromotionPolicy:
    """The experiment's promotion policy with the family's metric, direction and guards."""
    metric, higher = family.promotion_metric(cfg)
    return cfg.promotion.model_copy(
        update={
            "metric": metric,
            "higher_is_better": higher,
            "guards": family.promotion_guards(cfg),
        }
    )


def decide(
    cfg: ExperimentConfig, family: Family, trained: Trained, client: Any
) -> PromotionDecision:
    """Champion / challenger decision on evidence: paired bootstraps of the family's metric and
    guards against the baseline and the re-scored champion on the same test rows, readiness."""
    policy = promotion_policy(cfg, family)
    metric = policy.metric
    names = {metric, *(policy.guards or []), *(r.metric for r in policy.readiness)}
    metric_of = {}
    for name in sorted(names):
        try:
            metric_of[name] = family.metric_of(cfg, trained, name)
        except KeyError:
            continue  # decide_promotion names it: no evidence, no promotion
    champion = champion_evidence(cfg, family, trained, client)
    try:
        challenger = family.model_scores(cfg, trained)
        baseline = family.baseline_scores(cfg, trained)
        groups = family.bootstrap_groups(cfg, trained)
        return decide_promotion(policy, metric_of, challenger, baseline, champion, groups)
    except KeyError as err:
        # the family gives no per-row scores (model, baseline) of its test rows
        return PromotionDecision(
            promote=False,
            metric=metric,
            challenger=trained.metrics.get(metric, float("nan")),
            baseline=trained.baseline_metrics.get(metric, float("nan")),
            champion=None if champion is None else champion.logged_metric,
            margin=policy.margin,
            reason=(
                f"no per-row scores of the test rows ({type(err).__name__}: {err}; the family "
                "must give model_scores and baseline_scores): no evidence, not promoted"
            ),
            confidence=policy.confidence,
            n_boot=policy.n_boot,
            champion_version=None if champion is None else champion.version,
        )


def build_frame(
    cfg: ExperimentConfig,
    state: StateDirs,
    on_cutoff: Callable[[int, int], None] | None = None,
) -> Frame:
    """The experiment's modelling frame, built by its family and checked (no MLflow)."""
    ctx = RunContext(state, load_dataset(cfg.dataset), on_cutoff)
    frame = get_family(cfg.family).build_frame(cfg, ctx)
    check_frame(cfg, frame)
    return frame


def train_frame(
    cfg: ExperimentConfig, frame: Frame, params: dict[str, Any] | None = None
) -> Trained:
    """Fit and evaluate the experiment's family on a frame (no MLflow)."""
    return get_family(cfg.family).train(cfg, frame, params)
