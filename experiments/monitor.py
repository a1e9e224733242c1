"""Drift monitoring: feature and score PSI, KS, decile stability between two feature snapshots."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.catalog import Catalog
from features.definitions import context_feature_names
from features.store import StateDirs, atomic_path

EPSILON = 1e-4  # share given to an empty bin so that log(a / e) stays finite
N_DECILES = 10


class PSIThresholds(BaseModel):
    """PSI bands: below ``moderate`` is stable, above ``significant`` is a significant shift."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    moderate: float = Field(0.1, ge=0.0)
    significant: float = Field(0.25, ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> PSIThresholds:
        if self.significant < self.moderate:
            raise ValueError("the significant threshold must not be below the moderate one")
        return self

    def flag(self, value: float) -> str:
        """``stable``, ``moderate`` or ``significant`` (``n/a`` for a missing value)."""
        if value is None or not np.isfinite(value):
            return "n/a"
        if value > self.significant:
            return "significant"
        if value >= self.moderate:
            return "moderate"
        return "stable"


def _bin_edges(reference: np.ndarray, bins: int) -> tuple[np.ndarray, bool]:
    """Interior cut points at the reference's quantiles; flag a constant reference."""
    finite = reference[~np.isnan(reference)]
    if finite.size == 0:
        return np.array([]), False
    if np.all(finite == finite[0]):
        return np.array([finite[0]]), True
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.quantile(finite, qs)), False


def _bin_shares(values: np.ndarray, edges: np.ndarray, constant: bool) -> np.ndarray:
    """Share of values per bin, with NaN counted in a last bin of its own."""
    is_nan = np.isnan(values)
    finite = values[~is_nan]
    if constant:
        # a constant reference: below, equal to and above its single value
        idx = np.where(finite < edges[0], 0, np.where(finite == edges[0], 1, 2))
        n_bins = 3
    else:
        idx = np.searchsorted(edges, finite, side="right")
        n_bins = len(edges) + 1
    counts = np.bincount(idx, minlength=n_bins).astype(float)
    counts = np.append(counts, float(is_nan.sum()))
    return counts / max(len(values), 1)


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _category_shares(expected: pd.Series, actual: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Shares per category seen on either side, missing values as a category of their own."""
    e = expected.astype(object).where(expected.notna(), "<missing>").astype(str)
    a = actual.astype(object).where(actual.notna(), "<missing>").astype(str)
    cats = sorted(set(e) | set(a))
    pe = e.value_counts(normalize=True).reindex(cats, fill_value=0.0).to_numpy()
    pa = a.value_counts(normalize=True).reindex(cats, fill_value=0.0).to_numpy()
    return pe, pa


def psi(expected: Any, actual: Any, bins: int = 10) -> float:
    """Population stability index of ``actual`` against the reference ``expected``.

    Numbers: bins are the reference's quantiles (ties merged), missing values form a bin of their
    own, a constant reference is split into below / equal / above. Anything else (strings,
    booleans, categories): one bin per value. Empty bins get a share of ``EPSILON``, so a value
    the reference never saw counts instead of dividing by zero.
    """
    e_raw = pd.Series(np.asarray(expected, dtype=object).ravel()).infer_objects()
    a_raw = pd.Series(np.asarray(actual, dtype=object).ravel()).infer_objects()
    if e_raw.empty or a_raw.empty:
        return float("nan")
    if _is_numeric(e_raw) and _is_numeric(a_raw):
        e = e_raw.to_numpy(dtype=float, na_value=np.nan)
        a = a_raw.to_numpy(dtype=float, na_value=np.nan)
        edges, constant = _bin_edges(e, bins)
        pe, pa = _bin_shares(e, edges, constant), _bin_shares(a, edges, constant)
    else:
        pe, pa = _category_shares(e_raw, a_raw)
    pe, pa = np.maximum(pe, EPSILON), np.maximum(pa, EPSILON)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def _edge_text(x: float) -> str:
    """A bin edge, short: 12, 1,250, 0.37, 3.1e-05."""
    if x == int(x) and abs(x) < 1e12:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def bin_shares(expected: Any, actual: Any, bins: int = 10) -> pd.DataFrame:
    """The bins ``psi`` uses, in words, with both sides' shares and each bin's part of the PSI
    (the parts add up to the PSI): what a distribution chart of the drift page draws."""
    e_raw = pd.Series(np.asarray(expected, dtype=object).ravel()).infer_objects()
    a_raw = pd.Series(np.asarray(actual, dtype=object).ravel()).infer_objects()
    if e_raw.empty or a_raw.empty:
        return pd.DataFrame(columns=["bin", "reference_share", "current_share", "psi_part"])
    if _is_numeric(e_raw) and _is_numeric(a_raw):
        e = e_raw.to_numpy(dtype=float, na_value=np.nan)
        a = a_raw.to_numpy(dtype=float, na_value=np.nan)
        edges, constant = _bin_edges(e, bins)
        pe, pa = _bin_shares(e, edges, constant), _bin_shares(a, edges, constant)
        if constant:
            c = _edge_text(float(edges[0]))
            labels = [f"< {c}", f"= {c}", f"> {c}"]
        elif len(edges) == 0:
            labels = ["any value"]  # a reference without a value: one bin besides missing
        else:
            t = [_edge_text(float(x)) for x in edges]
            labels = [f"< {t[0]}"] + [f"{lo} to < {hi}" for lo, hi in pairwise(t)]
            labels.append(f"≥ {t[-1]}")
        labels.append("missing")
        pe_full, pa_full = pe, pa
    else:
        e_s = e_raw.astype(object).where(e_raw.notna(), "<missing>").astype(str)
        a_s = a_raw.astype(object).where(a_raw.notna(), "<missing>").astype(str)
        labels = sorted(set(e_s) | set(a_s))
        pe_full, pa_full = _category_shares(e_raw, a_raw)
        labels = ["missing" if x == "<missing>" else x for x in labels]
    pe_c, pa_c = np.maximum(pe_full, EPSILON), np.maximum(pa_full, EPSILON)
    frame = pd.DataFrame(
        {
            "bin": labels,
            "reference_share": pe_full,
            "current_share": pa_full,
            "psi_part": (pa_c - pe_c) * np.log(pa_c / pe_c),
        }
    )
    # an empty missing bin on both sides says nothing
    empty = (frame["bin"] == "missing") & (frame["reference_share"] == 0)
    return frame[~(empty & (frame["current_share"] == 0))].reset_index(drop=True)


def feature_distributions(
    reference_snapshot: pd.DataFrame,
    current_snapshot: pd.DataFrame,
    features: Sequence[str],
    bins: int = 10,
) -> dict[str, pd.DataFrame]:
    """``bin_shares`` of each feature: the distributions behind the PSI per feature."""
    return {
        name: bin_shares(reference_snapshot[name], current_snapshot[name], bins)
        for name in features
    }


def score_quantiles(ref_scores: Any, cur_scores: Any, points: int = 201) -> pd.DataFrame:
    """Both sides' score quantiles at ``points`` levels: the empirical distribution functions a
    chart draws (their largest vertical gap is the KS statistic)."""
    ref = np.asarray(ref_scores, dtype=float)
    cur = np.asarray(cur_scores, dtype=float)
    levels = np.linspace(0.0, 1.0, points)
    return pd.DataFrame(
        {
            "level": levels,
            "reference": np.quantile(ref[~np.isnan(ref)], levels),
            "current": np.quantile(cur[~np.isnan(cur)], levels),
        }
    )


def feature_psi(
    reference_snapshot: pd.DataFrame,
    current_snapshot: pd.DataFrame,
    features: Sequence[str],
    thresholds: PSIThresholds | None = None,
    bins: int = 10,
) -> pd.DataFrame:
    """PSI and flag per feature, with means and missing shares, most shifted first."""
    thresholds = thresholds or PSIThresholds()
    missing = [f for f in features if f not in reference_snapshot or f not in current_snapshot]
    if missing:
        raise ValueError(f"snapshots lack feature columns {missing}")
    rows = []
    for name in features:
        ref, cur = reference_snapshot[name], current_snapshot[name]
        value = psi(ref, cur, bins=bins)
        numeric = _is_numeric(ref) and _is_numeric(cur)
        rows.append(
            {
                "feature": name,
                "psi": value,
                "flag": thresholds.flag(value),
                "reference_mean": float(ref.mean()) if numeric else np.nan,
                "current_mean": float(cur.mean()) if numeric else np.nan,
                "reference_missing": float(ref.isna().mean()),
                "current_missing": float(cur.isna().mean()),
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ScoreShift:
    """How the score distribution moved: PSI, mean shift and the KS statistic."""

    psi: float
    flag: str
    reference_mean: float
    current_mean: float
    mean_shift: float
    ks_statistic: float
    ks_pvalue: float
    n_reference: int
    n_current: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_shift(
    ref_scores: Any, cur_scores: Any, thresholds: PSIThresholds | None = None, bins: int = 10
) -> ScoreShift:
    """PSI of the scores (reference deciles), mean shift (current − reference) and two-sample KS."""
    from scipy.stats import ks_2samp

    thresholds = thresholds or PSIThresholds()
    ref = np.asarray(ref_scores, dtype=float)
    cur = np.asarray(cur_scores, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref.size == 0 or cur.size == 0:
        raise ValueError("score_shift needs scores on both sides")
    value = psi(ref, cur, bins=bins)
    ks = ks_2samp(ref, cur)
    return ScoreShift(
        psi=value,
        flag=thresholds.flag(value),
        reference_mean=float(ref.mean()),
        current_mean=float(cur.mean()),
        mean_shift=float(cur.mean() - ref.mean()),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        n_reference=int(ref.size),
        n_current=int(cur.size),
    )


def score_deciles(scores: pd.Series, n_bins: int = N_DECILES) -> pd.Series:
    """Decile per customer, 1 = highest scores; tied scores always share a decile."""
    ranks = scores.rank(ascending=False, method="min")
    scaled = ranks * n_bins / len(scores)
    ceiled = pd.Series(np.ceil(scaled.to_numpy()), index=scaled.index, name=scaled.name)
    return ceiled.clip(1, n_bins).astype(int)


@dataclass(frozen=True)
class DecileStability:
    """Customers scored in both runs: who changed decile, and the decile transition matrix."""

    change_share: float
    n_common: int
    mean_abs_move: float
    transitions: pd.DataFrame  # rows: decile in run a, columns: decile in run b, counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "change_share": self.change_share,
            "n_common": self.n_common,
            "mean_abs_move": self.mean_abs_move,
            "transitions": self.transitions.to_numpy().tolist(),
        }


def decile_stability(
    scores_a: pd.Series, scores_b: pd.Series, n_bins: int = N_DECILES
) -> DecileStability:
    """Deciles within each run's own population, compared on the customers present in both.

    ``scores_a`` and ``scores_b`` are indexed by customer id.
    """
    for s in (scores_a, scores_b):
        if s.index.has_duplicates:
            raise ValueError("scores must be indexed by unique customer ids")
    dec_a = score_deciles(scores_a.dropna(), n_bins)
    dec_b = score_deciles(scores_b.dropna(), n_bins)
    common = dec_a.index.intersection(dec_b.index)
    labels = list(range(1, n_bins + 1))
    a, b = dec_a.loc[common], dec_b.loc[common]
    transitions = pd.crosstab(
        pd.Categorical(a, categories=labels), pd.Categorical(b, categories=labels), dropna=False
    )
    transitions.index.name, transitions.columns.name = "decile_a", "decile_b"
    n = len(common)
    moved = a.to_numpy() != b.to_numpy()
    return DecileStability(
        change_share=float(moved.mean()) if n else float("nan"),
        n_common=int(n),
        mean_abs_move=float(np.abs(a.to_numpy() - b.to_numpy()).mean()) if n else float("nan"),
        transitions=transitions.astype(int),
    )


@dataclass
class MonitorReport:
    """Everything one monitoring pass measured, and where it was recorded."""

    registered_model: str
    model_version: str
    model_run_id: str
    dataset: str
    feature_set: str
    reference_as_of: date
    current_as_of: date
    thresholds: PSIThresholds
    features: pd.DataFrame
    score: ScoreShift
    stability: DecileStability
    breached: dict[str, list[str]] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    monitor_path: Path | None = None
    # for the HTML page (not in monitor.json): per-feature and score bins, score quantiles
    distributions: dict[str, pd.DataFrame] = field(default_factory=dict)
    score_bins: pd.DataFrame | None = None
    score_quantiles: pd.DataFrame | None = None
    html_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``monitor.json`` holds)."""
        return {
            "registered_model": self.registered_model,
            "model_version": self.model_version,
            "model_run_id": self.model_run_id,
            "dataset": self.dataset,
            "feature_set": self.feature_set,
            "reference_as_of": self.reference_as_of.isoformat(),
            "current_as_of": self.current_as_of.isoformat(),
            "thresholds": self.thresholds.model_dump(),
            "features": _records(self.features),
            "score": self.score.to_dict(),
            "decile_stability": self.stability.to_dict(),
            "breached": self.breached,
            "mlflow_run_id": self.mlflow_run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _records(frame: pd.DataFrame) -> list[dict[Hashable, Any]]:
    """Rows as plain dicts with NaN as None (valid JSON)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [dict(r) for r in clean.to_dict(orient="records")]


def _load_snapshot(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"no feature snapshot at {path}; run `patron features` first")
    frame = pd.read_parquet(path)
    frame["customer_id"] = frame["customer_id"].astype(str)
    return frame


def _breaches(features: pd.DataFrame, score: ScoreShift) -> dict[str, list[str]]:
    """Features (and ``score``) per breached band."""
    out: dict[str, list[str]] = {"significant": [], "moderate": []}
    for name, flag in zip(features["feature"], features["flag"], strict=True):
        if flag in out:
            out[flag].append(str(name))
    if score.flag in out:
        out[score.flag].append("score")
    return out


def _monitor_experiment(client: Any, name: str, state: StateDirs, tracking_uri: str) -> str:
    """The monitoring experiment's id; on a local store, created with an absolute artifact root."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return str(client.create_experiment(name))  # the server decides where artifacts go
    location = (state.artifact_root / name).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _log_report(report: MonitorReport, client: Any, experiment_id: str) -> str:
    """One MLflow run: PSI per feature, score PSI, decile change; tables as artifacts."""
    from mlflow.entities import Metric, Param

    tags = {
        "mlflow.runName": f"monitor {report.current_as_of} vs {report.reference_as_of}",
        "registered_model": report.registered_model,
        "model_version": report.model_version,
        "dataset": report.dataset,
        "feature_set": report.feature_set,
        "drift": "significant"
        if report.breached["significant"]
        else ("moderate" if report.breached["moderate"] else "none"),
        "psi_significant": ",".join(report.breached["significant"]),
        "psi_moderate": ",".join(report.breached["moderate"]),
    }
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = {
        f"psi_{f}": float(v)
        for f, v in zip(report.features["feature"], report.features["psi"], strict=True)
    }
    metrics.update(
        score_psi=report.score.psi,
        score_mean_shift=report.score.mean_shift,
        score_ks=report.score.ks_statistic,
        decile_change_share=report.stability.change_share,
        decile_mean_abs_move=report.stability.mean_abs_move,
    )
    params = {
        "reference_as_of": report.reference_as_of.isoformat(),
        "current_as_of": report.current_as_of.isoformat(),
        "model_run_id": report.model_run_id,
        "psi_moderate": report.thresholds.moderate,
        "psi_significant": report.thresholds.significant,
    }
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if np.isfinite(v)],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[],
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        report.features.to_csv(tmp_path / "feature_psi.csv", index=False)
        report.stability.transitions.to_csv(tmp_path / "decile_transitions.csv")
        (tmp_path / "monitor.json").write_text(json.dumps(report.to_dict(), indent=2))
        for name in ("feature_psi.csv", "decile_transitions.csv", "monitor.json"):
            client.log_artifact(run_id, str(tmp_path / name), artifact_path="monitor")
    client.set_terminated(run_id)
    return run_id


def run_monitor(
    state: StateDirs,
    dataset: str,
    feature_set: str,
    reference_as_of: date,
    current_as_of: date,
    registered_model: str,
    tracking_uri: str | None = None,
    thresholds: PSIThresholds | None = None,
    alias: str = "champion",
    html_path: Path | None = None,
) -> MonitorReport:
    """Compare two snapshots through the champion model; log to MLflow and write monitor.json
    (and the drift page to ``html_path`` when given)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from models.pyfunc import ScoringModel
    from training.run import tracking

    thresholds = thresholds or PSIThresholds()
    tracking_uri = tracking_uri or state.tracking_uri
    catalog = Catalog(state, dataset)
    reference = _load_snapshot(catalog.snapshot_path(feature_set, reference_as_of))
    current_path = catalog.snapshot_path(feature_set, current_as_of)
    current = _load_snapshot(current_path)

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = client.get_model_version_by_alias(registered_model, alias)
    # the fluent loader reads the URIs of the block only: the process's MLflow settings (and
    # the MLFLOW_TRACKING_URI MLflow exports) are put back after it, not left pointing here
    with tracking(tracking_uri):
        wrapper: Any = mlflow.pyfunc.load_model(
            f"models:/{registered_model}@{alias}"
        ).unwrap_python_model()
    if not isinstance(wrapper, ScoringModel):
        raise TypeError(f"{registered_model}@{alias} is not a Patron scoring model")
    # the cutoff's season differs between any two snapshot dates by design: not drift
    names = [n for n in wrapper.feature_names if n not in context_feature_names()]
    ref_scores = pd.Series(wrapper.score(reference), index=reference["customer_id"])
    cur_scores = pd.Series(wrapper.score(current), index=current["customer_id"])

    features = feature_psi(reference, current, names, thresholds)
    score = score_shift(ref_scores.to_numpy(), cur_scores.to_numpy(), thresholds)
    report = MonitorReport(
        registered_model=registered_model,
        model_version=str(mv.version),
        model_run_id=str(mv.run_id),
        dataset=dataset,
        feature_set=feature_set,
        reference_as_of=reference_as_of,
        current_as_of=current_as_of,
        thresholds=thresholds,
        features=features,
        score=score,
        stability=decile_stability(ref_scores, cur_scores),
        distributions=feature_distributions(reference, current, names),
        score_bins=bin_shares(ref_scores.to_numpy(), cur_scores.to_numpy()),
        score_quantiles=score_quantiles(ref_scores.to_numpy(), cur_scores.to_numpy()),
    )
    report.breached = _breaches(features, score)
    experiment_id = _monitor_experiment(client, f"monitor-{registered_model}", state, tracking_uri)
    report.mlflow_run_id = _log_report(report, client, experiment_id)
    out = current_path.parent / "monitor.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2))
    report.monitor_path = out
    if html_path is not None:
        from experiments.monitor_page import write_monitor_page

        report.html_path = write_monitor_page(report, Path(html_path))
    return report
