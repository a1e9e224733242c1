"""Tuning: seeded TPE over several out-of-time validation folds; the tuned parameters are kept only
on evidence; each trial a nested MLflow run.

Folds (``tuning_folds``) never contain a test row:

* cutoff experiments with two or more training cutoffs: rolling origin. Each of the last
  ``tuning.folds`` training cutoffs ``v`` validates a model fitted on the rows of the earlier
  training cutoffs ``c`` whose label window has closed by then (``c + horizon_days <= v``);
* a labelled table: ``tuning.folds`` stratified folds of the non-test rows (seeded), or, when the
  table is split by date or row order, forward chaining over the non-test rows in time order;
* one training cutoff: the single fit / validation split (said in the result).

A trial's objective is its mean validation ROC AUC over the folds (median pruning after each fold).
The best trial's parameters are kept only when their pooled out-of-fold predictions beat those of
the default parameters (the config's ``model.params`` over the package defaults) by the promotion
rule: the paired-bootstrap lower bound of the AUC improvement above ``promotion.margin``
(``training.evidence.paired_bootstrap``). Otherwise the final run uses the defaults. The final run
is the one run path's (``run_experiment``); it alone reads the test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.model_selection import StratifiedKFold

from features.sources import load_dataset
from features.store import StateDirs
from models.estimators import DEFAULT_XGB_PARAMS, xgb_pipeline
from training.config import ExperimentConfig, SearchParam
from training.evidence import MetricOf, PairedDifference, paired_bootstrap
from training.families import get_family
from training.families.base import Frame, RunContext
from training.frames import AS_OF, ID, LABEL, SPLIT, rolling_origin
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


@dataclass(frozen=True)
class Fold:
    """One validation fold: positions (``iloc``) of its fit and validation rows in the frame."""

    name: str
    fit: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class FoldPlan:
    """How trials are validated: the scheme, its folds and a sentence saying so."""

    scheme: str  # rolling_origin | stratified_folds | forward_chaining | single_split
    folds: list[Fold]
    note: str

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"fold": f.name, "fit_rows": len(f.fit), "valid_rows": len(f.valid)} for f in self.folds
        ]


@dataclass
class TuneResult:
    """Best parameters, the search's validation scores, the keep-or-not evidence and the final
    out-of-time run."""

    best_params: dict[str, Any]
    best_valid_auc: float
    default_valid_auc: float
    n_trials: int
    n_pruned: int
    plan: FoldPlan | None = None
    evidence: PairedDifference | None = None
    kept: bool = False
    reason: str = ""
    fold_aucs: dict[str, list[float]] = field(default_factory=dict)  # best / default per fold
    tuned: RunOutput | None = None

    @property
    def tuned_logged(self) -> dict[str, Any] | None:
        return self.tuned.logged if self.tuned else None

    @property
    def final_params(self) -> dict[str, Any]:
        """The parameters the final run is trained with (the tuned ones only when kept)."""
        return dict(self.best_params) if self.kept else {}


# --------------------------------------------------------------------------- a fast AUC


def rank_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney; ties count one half), vectorised: equal to
    ``sklearn.metrics.roc_auc_score`` and much faster inside a bootstrap. Raises ValueError
    when ``y`` has one class only."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC is undefined with one class only")
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_fold_auc(y: np.ndarray, fold_of: np.ndarray) -> MetricOf:
    """metric_of for ``paired_bootstrap``: the mean over folds of the ROC AUC of the rows drawn,
    the statistic the search maximises (folds are scored apart: base rates differ by cutoff)."""
    codes = np.unique(fold_of)

    def metric(idx: np.ndarray, scores: np.ndarray) -> float:
        yi, si, fi = y[idx], scores[idx], fold_of[idx]
        return float(np.mean([rank_auc(yi[fi == c], si[fi == c]) for c in codes]))

    return metric


# --------------------------------------------------------------------------- folds


def _both_classes(frame: pd.DataFrame, rows: np.ndarray) -> bool:
    return len(rows) > 0 and frame[LABEL].iloc[rows].nunique() == 2


def _single_split(frame: pd.DataFrame, why: str) -> FoldPlan:
    split = frame[SPLIT].to_numpy()
    fit, valid = np.flatnonzero(split == "fit"), np.flatnonzero(split == "valid")
    if not (_both_classes(frame, fit) and _both_classes(frame, valid)):
        raise ValueError(
            f"tuning: {why}, and the frame's fit / valid split has no usable validation rows "
            "(both classes needed in each): nothing to score trials on"
        )
    fold = Fold("validation split", fit, valid)
    return FoldPlan("single_split", [fold], f"{why}: trials are scored on the one validation split")


def rolling_origin_folds(cfg: Any, frame: pd.DataFrame, k: int) -> FoldPlan:
    """For each of the last ``k`` training cutoffs v that has usable history: fit on the rows at
    earlier training cutoffs c with c + horizon_days <= v (their labels are known by v), validate
    on the rows at v. Test rows are never in a fold."""
    train = sorted(cfg.cutoffs.train)
    candidates: list[Fold] = []
    for v, closed, fit, valid in rolling_origin(frame, cfg.horizon_days):
        if _both_classes(frame, fit) and _both_classes(frame, valid):
            last_fit = max(closed).date().isoformat()
            name = f"cutoff {v.date().isoformat()} (fit to {last_fit})"
            candidates.append(Fold(name, fit, valid))
    folds = candidates[-k:]
    if not folds:
        return _single_split(frame, "no training cutoff has an earlier one whose horizon has ended")
    return FoldPlan(
        "rolling_origin",
        folds,
        f"rolling origin over the last {len(folds)} training cutoffs (of {len(train)}; asked "
        f"{k}): each fitted on earlier cutoffs whose {cfg.horizon_days}-day horizon has ended",
    )


def labelled_folds(cfg: Any, frame: pd.DataFrame, k: int) -> FoldPlan:
    """k folds of the non-test rows: stratified and seeded, or, for a table split by date or row
    order, forward chaining (fit on the earlier blocks, validate on the next)."""
    rest = np.flatnonzero((frame[SPLIT] != "test").to_numpy())
    kind = cfg.split.kind
    if kind in ("date", "ordered"):
        if kind == "date":
            when = pd.to_datetime(frame[cfg.split.date_column].iloc[rest], errors="coerce")
            rest = rest[np.argsort(when.to_numpy(), kind="stable")]
        blocks = np.array_split(rest, k + 1)
        folds = [
            Fold(f"block {i + 1} of {k + 1}", np.concatenate(blocks[:i]), blocks[i])
            for i in range(1, k + 1)
        ]
        note = f"forward chaining over {k + 1} time-ordered blocks of the non-test rows"
        scheme = "forward_chaining"
    else:
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=cfg.seed)
        y = frame[LABEL].iloc[rest].to_numpy()
        folds = [
            Fold(f"fold {i + 1} of {k}", rest[fit], rest[valid])
            for i, (fit, valid) in enumerate(skf.split(rest, y))
        ]
        note = f"{k} stratified folds (seed {cfg.seed}) of the non-test rows"
        scheme = "stratified_folds"
    folds = [f for f in folds if _both_classes(frame, f.fit) and _both_classes(frame, f.valid)]
    if not folds:
        return _single_split(frame, "no fold has both classes")
    return FoldPlan(scheme, folds, note)


def tuning_folds(cfg: Any, mf: Frame) -> FoldPlan:
    """The validation folds of a search (docs/training.md, Tuning); never a test row."""
    frame = mf.frame.reset_index(drop=True)
    k = cfg.tuning.folds
    cutoffs = getattr(cfg, "cutoffs", None)
    if AS_OF in frame.columns and cutoffs is not None:
        if len(cutoffs.train) < 2:
            return _single_split(frame, "one training cutoff only")
        return rolling_origin_folds(cfg, frame, k)
    if getattr(cfg, "split", None) is not None and AS_OF not in frame.columns:
        return labelled_folds(cfg, frame, k)
    return _single_split(frame, "no cutoffs and no labelled split")


# --------------------------------------------------------------------------- search


@dataclass
class _FoldData:
    x_fit: pd.DataFrame
    y_fit: np.ndarray
    x_valid: pd.DataFrame
    y_valid: np.ndarray


def _fold_data(mf: Frame, plan: FoldPlan) -> list[_FoldData]:
    frame = mf.frame.reset_index(drop=True)
    names = mf.feature_names
    out = []
    for f in plan.folds:
        fit, valid = frame.iloc[f.fit], frame.iloc[f.valid]
        out.append(
            _FoldData(
                fit[names],
                fit[LABEL].to_numpy().astype(int),
                valid[names],
                valid[LABEL].to_numpy().astype(int),
            )
        )
    return out


def fit_predict(cfg: Any, mf: Frame, params: dict[str, Any], data: _FoldData) -> np.ndarray:
    """Fit the family's XGBoost pipeline on a fold's fit rows; scores of its validation rows."""
    # one thread per fit: a search runs many small fits, and on shared cores XGBoost's threads
    # wait on each other (measured 2.8 s with 1 thread vs 15 s with 2 on a loaded 2-core machine)
    pipe = xgb_pipeline(mf.feature_names, mf.categorical, {**params, "n_jobs": 1}, cfg.seed)
    pipe.fit(data.x_fit, data.y_fit)
    return np.asarray(pipe.predict_proba(data.x_valid)[:, 1], dtype=float)


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


def keep_decision(cfg: ExperimentConfig, evidence: PairedDifference) -> tuple[bool, str]:
    """Keep the tuned parameters iff the improvement's lower bound exceeds promotion.margin."""
    margin = cfg.promotion.margin
    if np.isfinite(evidence.lower) and evidence.lower > margin:
        return True, (
            f"tuned parameters kept: out-of-fold {evidence.describe()}; lower bound above the "
            f"margin {margin}"
        )
    return False, (
        f"tuned parameters not kept: out-of-fold {evidence.describe()}; lower bound not above "
        f"the margin {margin}, so the final run uses the default parameters"
    )


def search(
    cfg: ExperimentConfig,
    mf: Frame,
    state: StateDirs,
    n_trials: int | None = None,
    progress: Any = None,
) -> TuneResult:
    """Run the Optuna search over the validation folds, logging a parent run with one nested run
    per trial, and decide on evidence whether the best parameters beat the defaults."""
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = cfg.tuning.search_space or DEFAULT_SEARCH_SPACE
    base = {**DEFAULT_XGB_PARAMS, **cfg.model.params}
    trials = n_trials or cfg.tuning.n_trials
    plan = tuning_folds(cfg, mf)
    data = _fold_data(mf, plan)
    frame = mf.frame.reset_index(drop=True)
    pooled = np.concatenate([f.valid for f in plan.folds])
    y_pool = np.concatenate([d.y_valid for d in data])
    fold_of = np.concatenate([np.full(len(f.valid), i) for i, f in enumerate(plan.folds)])
    ids = frame[ID].iloc[pooled].astype(str).to_numpy() if ID in frame.columns else None
    # a customer validated at several cutoffs is one resampling unit
    groups = ids if ids is not None and len(np.unique(ids)) < len(ids) else None
    bounds = np.cumsum([0, *[len(f.valid) for f in plan.folds]])

    def evaluate(params: dict[str, Any], trial: Any = None) -> tuple[np.ndarray, list[float]]:
        oof = np.empty(len(pooled))
        aucs: list[float] = []
        for i, d in enumerate(data):
            oof[bounds[i] : bounds[i + 1]] = p = fit_predict(cfg, mf, params, d)
            aucs.append(rank_auc(d.y_valid, p))
            if trial is not None and i < len(data) - 1:
                trial.report(float(np.mean(aucs)), i)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return oof, aucs

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    predictions: dict[int, tuple[np.ndarray, list[float]]] = {}
    with tracking(state.tracking_uri):
        exp_id = ensure_experiment(state, cfg.experiment_name)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.name}-tuning"):
            mlflow.set_tags({"family": cfg.family, "kind": "tuning", "tuning.scheme": plan.scheme})
            mlflow.log_params({"tuning.scheme": plan.scheme, "tuning.n_folds": len(plan.folds)})
            default_oof, default_aucs = evaluate(base)
            default_auc = float(np.mean(default_aucs))
            mlflow.log_metric("default_valid_roc_auc", default_auc)

            def objective(trial: Any) -> float:
                params = suggest(trial, space)
                mlflow.start_run(
                    experiment_id=exp_id, run_name=f"trial-{trial.number}", nested=True
                )
                mlflow.log_params(params)
                try:
                    oof, aucs = evaluate({**base, **params}, trial)
                except optuna.TrialPruned:
                    # a pruned trial is stopped on purpose, not a failure: KILLED + tag
                    mlflow.set_tag("pruned", "true")
                    mlflow.end_run(status="KILLED")
                    raise
                except BaseException:
                    mlflow.end_run(status="FAILED")
                    raise
                auc = float(np.mean(aucs))
                predictions[trial.number] = (oof, aucs)
                mlflow.log_metrics(
                    {
                        "valid_roc_auc": auc,
                        **{f"valid_roc_auc_fold{i}": a for i, a in enumerate(aucs)},
                    }
                )
                mlflow.end_run()
                return auc

            def tick(study: Any, trial: Any) -> None:
                if progress:
                    done = [t for t in study.trials if t.value is not None]
                    best = max(t.value for t in done) if done else None
                    progress(len(study.trials), trials, best)

            study.optimize(
                objective,
                n_trials=trials,
                timeout=cfg.tuning.timeout_s,
                catch=(),
                callbacks=[tick],
            )
            pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
            best_oof, best_aucs = predictions[study.best_trial.number]
            evidence = paired_bootstrap(
                "roc_auc",
                mean_fold_auc(y_pool, fold_of),
                best_oof,
                default_oof,
                groups=groups,
                n_boot=cfg.promotion.n_boot,
                level=cfg.promotion.confidence,
                seed=cfg.seed,
            )
            kept, reason = keep_decision(cfg, evidence)
            mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
            mlflow.log_metrics(
                {
                    "best_valid_roc_auc": study.best_value,
                    "n_pruned": pruned,
                    "tuned_improvement": evidence.improvement,
                    "tuned_improvement_lower": evidence.lower,
                    "tuned_improvement_upper": evidence.upper,
                    "tuned_kept": float(kept),
                }
            )
            mlflow.set_tag("tuning.kept", str(kept).lower())
            mlflow.log_dict(
                {
                    "kept": kept,
                    "reason": reason,
                    "rule": "keep iff the paired-bootstrap lower bound of the out-of-fold AUC "
                    "improvement (best trial vs defaults, same rows) exceeds promotion.margin",
                    "margin": cfg.promotion.margin,
                    "evidence": evidence.to_dict(),
                    "resampling_unit": "customer" if groups is not None else "row",
                    "scheme": plan.scheme,
                    "note": plan.note,
                    "folds": plan.describe(),
                    "fold_auc": {"best": best_aucs, "default": default_aucs},
                    "best_params": dict(study.best_params),
                    "default_params": base,
                },
                "tuning_evidence.json",
            )
    return TuneResult(
        best_params=dict(study.best_params),
        best_valid_auc=float(study.best_value),
        default_valid_auc=default_auc,
        n_trials=len(study.trials),
        n_pruned=int(pruned),
        plan=plan,
        evidence=evidence,
        kept=kept,
        reason=reason,
        fold_aucs={"best": best_aucs, "default": default_aucs},
    )


def run_tuning(
    cfg: ExperimentConfig, state: StateDirs, n_trials: int | None = None, progress: Any = None
) -> TuneResult:
    """Search over the validation folds, then the final run through the one run path: with the
    best parameters when they beat the defaults on evidence, else with the defaults. Only this
    final run reads the test rows."""
    family = get_family(cfg.family)
    if not family.tunable:
        raise ValueError(f"family: tuning supports the binary families, not {cfg.family!r}")
    mf = family.build_frame(cfg, RunContext(state, load_dataset(cfg.dataset)))
    check_frame(cfg, mf)
    result = search(cfg, mf, state, n_trials, progress)
    # the final run lands in the same MLflow experiment as the runs it competes with
    suffix = "tuned" if result.kept else "tuning-defaults"
    final_cfg = cfg.model_copy(
        update={"name": f"{cfg.name}-{suffix}", "experiment": cfg.experiment_name}
    )
    result.tuned = run_experiment(final_cfg, state, params=result.final_params or None)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=state.tracking_uri)
    run_id = result.tuned.logged["run_id"]
    client.set_tag(run_id, "tuning.kept", str(result.kept).lower())
    client.set_tag(run_id, "tuning.reason", result.reason[:5000])
    return result
