"""Tuning: seeded TPE with median pruning on the validation cutoff; each trial a nested MLflow run.

The test cutoff plays no part in the search: trials are scored on the validation rows only; the best
parameters are then used for the final fit, which is evaluated out of time like any other run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.metrics import roc_auc_score

from features.sources import load_dataset
from features.store import StateDirs
from models.estimators import DEFAULT_XGB_PARAMS
from training.config import ExperimentConfig, SearchParam
from training.families import get_family
from training.families.base import Frame, RunContext
from training.families.binary import fit_model
from training.frames import LABEL
from training.guards import check_frame
from training.run import RunOutput, ensure_experiment, run_experiment, tracking

DEFAULT_SEARCH_SPACE: dict[str, SearchParam] = {
    "max_depth": SearchParam(type="int", low=2, high=8),
    "learning_rate": SearchParam(type="float", low=0.01, high=0.3, log=True),
    "n_estimators": SearchParam(type="int", low=100, high=600),
    "min_child_weight": SearchParam(type="float", low=1.0, high=30.0, log=True),
    "subsample": SearchParam(type="float", low=0.5, high=1.0),
    "colsample_bytree": SearchParam(type="float", low=0.5, high=1.0),
    "reg_lambda": SearchParam(type="float", low=1e-3, high=10.0, log=True),
}


@dataclass
class TuneResult:
    """Best parameters, the search's validation scores, and the final out-of-time runs."""

    best_params: dict[str, Any]
    best_valid_auc: float
    default_valid_auc: float
    n_trials: int
    n_pruned: int
    tuned: RunOutput | None = None

    @property
    def tuned_logged(self) -> dict[str, Any] | None:
        return self.tuned.logged if self.tuned else None


def suggest(trial: Any, space: dict[str, SearchParam]) -> dict[str, Any]:
    """Draw one parameter set from the search space."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        if p.type in ("int", "float") and (p.low is None or p.high is None):
            raise ValueError(f"tuning.search_space.{name}: {p.type} needs low and high")
        if p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low or 0), int(p.high or 0), log=p.log)
        elif p.type == "float":
            params[name] = trial.suggest_float(
                name, float(p.low or 0), float(p.high or 0), log=p.log
            )
        else:
            params[name] = trial.suggest_categorical(name, p.choices)
    return params


def valid_auc(
    cfg: ExperimentConfig, mf: Frame, params: dict[str, Any], callbacks: list[Any] | None = None
) -> float:
    """ROC AUC on the validation rows of a model fitted on the fit rows."""
    pipe = fit_model(cfg, mf, params, callbacks)
    valid = mf.part("valid")
    return float(roc_auc_score(valid[LABEL], pipe.predict_proba(valid[mf.feature_names])[:, 1]))


def search(
    cfg: ExperimentConfig,
    mf: Frame,
    state: StateDirs,
    n_trials: int | None = None,
    progress: Any = None,
) -> TuneResult:
    """Run the Optuna search, logging a parent run with one nested run per trial."""
    import mlflow
    import optuna
    from optuna_integration import XGBoostPruningCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = cfg.tuning.search_space or DEFAULT_SEARCH_SPACE
    base = {**DEFAULT_XGB_PARAMS, **cfg.model.params}
    trials = n_trials or cfg.tuning.n_trials
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=30),
    )
    with tracking(state.tracking_uri):
        exp_id = ensure_experiment(state, cfg.experiment_name)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.name}-tuning"):
            mlflow.set_tags({"family": cfg.family, "kind": "tuning"})
            default_auc = valid_auc(cfg, mf, base)
            mlflow.log_metric("default_valid_roc_auc", default_auc)

            def objective(trial: Any) -> float:
                params = suggest(trial, space)
                mlflow.start_run(
                    experiment_id=exp_id, run_name=f"trial-{trial.number}", nested=True
                )
                mlflow.log_params(params)
                callback = XGBoostPruningCallback(trial, "validation_0-auc")
                try:
                    auc = valid_auc(cfg, mf, {**base, **params}, [callback])
                except optuna.TrialPruned:
                    # a pruned trial is stopped on purpose, not a failure: KILLED + tag
                    mlflow.set_tag("pruned", "true")
                    mlflow.end_run(status="KILLED")
                    raise
                except BaseException:
                    mlflow.end_run(status="FAILED")
                    raise
                mlflow.log_metric("valid_roc_auc", auc)
                mlflow.end_run()
                if progress:
                    progress(trial.number + 1, trials)
                return auc

            study.optimize(objective, n_trials=trials, timeout=cfg.tuning.timeout_s, catch=())
            pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
            mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
            mlflow.log_metrics({"best_valid_roc_auc": study.best_value, "n_pruned": pruned})
    return TuneResult(
        best_params=dict(study.best_params),
        best_valid_auc=float(study.best_value),
        default_valid_auc=default_auc,
        n_trials=len(study.trials),
        n_pruned=int(pruned),
    )


def run_tuning(
    cfg: ExperimentConfig, state: StateDirs, n_trials: int | None = None, progress: Any = None
) -> TuneResult:
    """Search on the validation cutoff, then the final fit with the best parameters (logged and
    registered like any training run; tagged ``tuned``)."""
    family = get_family(cfg.family)
    if not family.tunable:
        raise ValueError(f"family: tuning supports the binary families, not {cfg.family!r}")
    mf = family.build_frame(cfg, RunContext(state, load_dataset(cfg.dataset)))
    check_frame(cfg, mf)
    result = search(cfg, mf, state, n_trials, progress)
    # the tuned run lands in the same MLflow experiment as the runs it competes with
    tuned_cfg = cfg.model_copy(
        update={"name": f"{cfg.name}-tuned", "experiment": cfg.experiment_name}
    )
    result.tuned = run_experiment(tuned_cfg, state, params=result.best_params)
    return result
