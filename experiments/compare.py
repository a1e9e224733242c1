"""Side-by-side comparison of MLflow runs: params, data window, metrics, paired AUC bootstrap."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow.entities import Run
    from rich.console import Console

PREDICTIONS_ARTIFACT = "evaluation/test_predictions.parquet"
METRIC_ORDER = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile", "positive_rate", "n")
# logged metrics whose difference to the champion is meaningful (not the data's own properties)
DELTA_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile")
KEY_PARAMS = ("xgb.n_estimators", "xgb.max_depth", "xgb.learning_rate")
WINDOW_PARAMS = ("train_cutoffs", "test_cutoff")
_BOOT_CHUNK_CELLS = 2_000_000  # resampled row indices held in memory per chunk


@dataclass
class ComparisonResult:
    """The comparison table (one row per run, champion first) and what the charts need."""

    table: pd.DataFrame
    champion_run_id: str | None
    champion_reason: str
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # run id -> display name
    param_columns: list[str] = field(default_factory=list)
    metric_columns: list[str] = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0
    tracking_uri: str | None = None
    test_split: str = "test rows"  # which rows the metrics are on, in words (split_heading)


# ---------------------------------------------------------------- selection


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _quote(value: str) -> str:
    """An MLflow filter string literal."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"tag value {value!r} mixes both quote characters")


def tag_filter_string(tag_filter: Mapping[str, str] | str | None) -> str:
    """``{"family": "churn"}`` → ``tags.`family` = 'churn'``; a string passes through."""
    if tag_filter is None:
        return ""
    if isinstance(tag_filter, str):
        return tag_filter
    return " AND ".join(f"tags.`{k}` = {_quote(str(v))}" for k, v in tag_filter.items())


def _experiment_ids(client: Any, experiment: str | Sequence[str] | None) -> list[str]:
    """Experiment ids from names or ids; all experiments when ``experiment`` is None."""
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments()]
    wanted = [experiment] if isinstance(experiment, str) else list(experiment)
    ids = []
    for key in wanted:
        exp = client.get_experiment_by_name(key)
        if exp is None and key.isdigit():
            try:
                exp = client.get_experiment(key)
            except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing id
                exp = None
        if exp is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ValueError(f"no MLflow experiment {key!r}; known: {', '.join(known) or 'none'}")
        ids.append(exp.experiment_id)
    return ids


def select_runs(
    tracking_uri: str | None,
    experiment: str | Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    tag_filter: Mapping[str, str] | str | None = None,
    max_runs: int = 100,
) -> list[Run]:
    """Runs to compare: the given ids in order, else finished runs with test metrics, newest first.

    ``experiment`` is a name or id (or several); ``tag_filter`` a ``{tag: value}`` mapping or an
    MLflow filter string such as ``"tags.family = 'churn' and metrics.test_roc_auc > 0.7"``.
    """
    client = _client(tracking_uri)
    if run_ids:
        return [client.get_run(rid) for rid in run_ids]
    runs = client.search_runs(
        experiment_ids=_experiment_ids(client, experiment),
        filter_string=tag_filter_string(tag_filter),
        max_results=max_runs,
        order_by=["attributes.start_time DESC"],
    )
    return [
        r
        for r in runs
        if r.info.status == "FINISHED" and any(k.startswith("test_") for k in r.data.metrics)
    ]


# ---------------------------------------------------------------- paired bootstrap


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one scorer under each row of ``weights`` (b × n), ties counted half."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(score, kind="mergesort")
    s_sorted, y_sorted, w_sorted = score[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos = np.add.reduceat(w_sorted * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w_sorted * (1.0 - y_sorted), starts, axis=1)
    return _auc_from_counts(pos, neg)


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per row from positive / negative weights per distinct score, ascending."""
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _cell_codes(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, int]:
    """Per row: 2 × (rank of its distinct score) + label; and the number of distinct scores."""
    uniques, group = np.unique(score, return_inverse=True)
    return 2 * group.astype(np.int64) + y.astype(np.int64), len(uniques)


def _boot_auc(codes: np.ndarray, n_groups: int, idx: np.ndarray) -> np.ndarray:
    """AUC of each resample (rows of ``idx``) by counting drawn rows per (score, label) cell."""
    b = idx.shape[0]
    cells = 2 * n_groups
    keys = codes[idx] + (np.arange(b, dtype=np.int64) * cells)[:, None]
    counts = np.bincount(keys.ravel(), minlength=b * cells).reshape(b, n_groups, 2)
    return _auc_from_counts(counts[:, :, 1].astype(float), counts[:, :, 0].astype(float))


def paired_auc_bootstrap(
    y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """AUC(b) − AUC(a) on the same rows and its percentile bootstrap 95 % interval.

    Each resample draws row indices with replacement, the same rows for both scorers, so the
    interval reflects the pairing; chunks of resamples bound the memory.
    """
    y = np.asarray(y).astype(int)
    score_a, score_b = np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    n = len(y)
    ones = np.ones((1, n))
    diff = float(weighted_auc(y, score_b, ones)[0] - weighted_auc(y, score_a, ones)[0])
    codes_a, groups_a = _cell_codes(y, score_a)
    codes_b, groups_b = _cell_codes(y, score_b)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_CELLS // max(n, 1))
    diffs = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        diffs.append(_boot_auc(codes_b, groups_b, idx) - _boot_auc(codes_a, groups_a, idx))
    boot = np.concatenate(diffs) if diffs else np.array([np.nan])
    if np.all(np.isnan(boot)):
        return diff, float("nan"), float("nan")
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def pair_predictions(champion: pd.DataFrame, other: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Test rows both runs scored (joined on customer_id and label) and a note on the overlap."""
    for name, frame in (("champion", champion), ("run", other)):
        if frame["customer_id"].duplicated().any():
            return frame.iloc[0:0], f"n/a: the {name}'s test rows repeat customer ids"
    left = champion[["customer_id", "label", "score"]].astype({"customer_id": str})
    right = other[["customer_id", "label", "score"]].astype({"customer_id": str})
    joined = left.merge(right, on=["customer_id", "label"], suffixes=("_champion", "_run"))
    shared_ids = len(set(left["customer_id"]) & set(right["customer_id"]))
    if joined.empty:
        return joined, "n/a: no test rows in common with the champion"
    if len(joined) == len(left) == len(right):
        return joined, "same test rows"
    note = (
        f"intersection: {len(joined):,} rows of {len(left):,} (champion) and {len(right):,} (run)"
    )
    if shared_ids > len(joined):
        note += f"; {shared_ids - len(joined):,} shared customers with different labels left out"
    return joined, note


# ---------------------------------------------------------------- comparison


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No per-file download progress bar while comparing (one per run clutters the terminal)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_predictions(client: Any, run_id: str) -> pd.DataFrame | None:
    """A run's out-of-time test predictions, or None when it logged none."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        try:
            path = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        frame = pd.read_parquet(path)
    if not {"customer_id", "label", "score"} <= set(frame.columns):
        return None
    return frame


def find_champion(client: Any, runs: Sequence[Run]) -> tuple[str | None, str]:
    """The run behind a registered model's ``champion`` alias, else the best test ROC AUC."""
    from mlflow.exceptions import MlflowException

    ids = [r.info.run_id for r in runs]
    names: list[str] = []
    for rid in ids:
        try:
            versions = client.search_model_versions(f"run_id = '{rid}'")
        except MlflowException:
            versions = []
        names += [v.name for v in versions if v.name not in names]
    for name in names:
        try:
            mv = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            continue
        if mv.run_id in ids:
            return mv.run_id, f"registry alias {name}@champion (version {mv.version})"
    scored = [
        (r.data.metrics["test_roc_auc"], r.info.run_id)
        for r in runs
        if "test_roc_auc" in r.data.metrics
    ]
    if not scored:
        return None, "no champion: no run has test_roc_auc"
    best = max(scored)[1]
    why = (
        f"the champion of {', '.join(names)} is not among these runs"
        if names
        else "none of these runs has a registered model"
    )
    return best, f"best test_roc_auc ({why})"


def _window(params: Mapping[str, str]) -> str:
    train = [c for c in params.get("train_cutoffs", "").split(",") if c]
    test = params.get("test_cutoff", "")
    if not train and not test:
        return ""
    many = len(train) > 2
    span = f"{train[0]}…{train[-1]} ({len(train)} cutoffs)" if many else ", ".join(train)
    return f"{span} → {test}"


def split_heading(runs: Sequence[Run]) -> str:
    """Which rows the runs' test metrics are on, in words: the split each run logged
    (``test_split``: a test cutoff, or a labelled table's random / stratified / date split), else
    its test cutoff; "test splits differ: …" when the runs do not share one."""

    def one(run: Run) -> str:
        tags, params = run.data.tags, run.data.params
        logged = tags.get("test_split")
        if logged:
            return str(logged)
        cutoff = params.get("test_cutoff") or tags.get("test_cutoff")
        return f"test cutoff {cutoff}" if cutoff else "test split"

    splits = list(dict.fromkeys(one(r) for r in runs))
    if len(splits) == 1:
        return splits[0]
    shown = ", ".join(splits[:3]) + (f" and {len(splits) - 3} more" if len(splits) > 3 else "")
    return f"test splits differ: {shown}"


def _label(run: Run) -> str:
    name = run.info.run_name or run.data.tags.get("mlflow.runName") or ""
    return f"{name} ({run.info.run_id[:8]})" if name else run.info.run_id[:8]


def _metric_columns(runs: Sequence[Run]) -> list[str]:
    keys = {k for r in runs for k in r.data.metrics if k.startswith(("test_", "baseline_"))}
    ordered = [f"{p}_{m}" for p in ("test", "baseline") for m in METRIC_ORDER if f"{p}_{m}" in keys]
    return ordered + sorted(keys - set(ordered))


def _param_columns(runs: Sequence[Run]) -> list[str]:
    """Key params that exist, plus every param that differs between the runs."""
    keys = sorted({k for r in runs for k in r.data.params} - set(WINDOW_PARAMS))
    varying = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    return [k for k in KEY_PARAMS if k in keys] + [k for k in varying if k not in KEY_PARAMS]


def compare_runs(
    runs: Sequence[Run],
    champion_run_id: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    tracking_uri: str | None = None,
) -> ComparisonResult:
    """One row per run: params, data window, metrics, Δ to the champion and the paired AUC CI."""
    if not runs:
        raise ValueError("no runs to compare (check the experiment name, run ids or tag filter)")
    client = _client(tracking_uri)
    by_id = {r.info.run_id: r for r in runs}
    if champion_run_id is not None:
        if champion_run_id not in by_id:
            raise ValueError(f"champion run {champion_run_id} is not among the compared runs")
        reason = "chosen by the caller"
    else:
        champion_run_id, reason = find_champion(client, runs)
    predictions = {rid: p for rid in by_id if (p := load_predictions(client, rid)) is not None}
    return build_comparison(runs, predictions, champion_run_id, reason, n_boot, seed, tracking_uri)


def build_comparison(
    runs: Sequence[Run],
    predictions: Mapping[str, pd.DataFrame],
    champion_run_id: str | None,
    reason: str,
    n_boot: int = 1000,
    seed: int = 0,
    tracking_uri: str | None = None,
) -> ComparisonResult:
    """The comparison of runs already fetched, with their test predictions (no store access)."""
    by_id = {r.info.run_id: r for r in runs}
    predictions = dict(predictions)
    notes = [f"champion: {reason}"]
    missing = [_label(by_id[rid]) for rid in by_id if rid not in predictions]
    if missing:
        notes.append(f"no test predictions logged (no curves, no paired CI): {', '.join(missing)}")

    metric_cols = _metric_columns(runs)
    param_cols = _param_columns(runs)
    champ = by_id.get(champion_run_id) if champion_run_id else None
    champ_preds = predictions.get(champion_run_id) if champion_run_id else None
    rows = []
    for run in runs:
        rid, m, params = run.info.run_id, run.data.metrics, run.data.params
        row: dict[str, Any] = {
            "run_id": rid,
            "run_name": run.info.run_name or "",
            "champion": rid == champion_run_id,
            "experiment_id": run.info.experiment_id,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "family": run.data.tags.get("family", ""),
            "dataset": run.data.tags.get("dataset", ""),
            "feature_set": params.get("feature_set") or run.data.tags.get("feature_set", ""),
            "train_cutoffs": params.get("train_cutoffs", ""),
            "test_cutoff": params.get("test_cutoff", ""),
            "data_window": _window(params),
        }
        row.update({f"param.{k}": params.get(k) for k in param_cols})
        row.update({k: m.get(k, np.nan) for k in metric_cols})
        for name in DELTA_METRICS:
            key = f"test_{name}"
            if key in metric_cols:
                own = m.get(key, np.nan)
                ref = champ.data.metrics.get(key, np.nan) if champ is not None else np.nan
                row[f"delta_{key}"] = own - ref
        row.update(_paired(rid, champion_run_id, champ_preds, predictions.get(rid), n_boot, seed))
        rows.append(row)
    table = pd.DataFrame(rows)
    auc = table["test_roc_auc"] if "test_roc_auc" in table else pd.Series(np.nan, index=table.index)
    table = (
        table.assign(_auc=auc.fillna(-np.inf))
        .sort_values(["champion", "_auc"], ascending=[False, False], kind="stable")
        .drop(columns="_auc")
        .reset_index(drop=True)
    )
    return ComparisonResult(
        table=table,
        champion_run_id=champion_run_id,
        champion_reason=reason,
        notes=notes,
        predictions=predictions,
        labels={rid: _label(r) for rid, r in by_id.items()},
        param_columns=[f"param.{k}" for k in param_cols],
        metric_columns=metric_cols,
        n_boot=n_boot,
        seed=seed,
        tracking_uri=tracking_uri,
        test_split=split_heading(runs),
    )


def _paired(
    rid: str,
    champion_run_id: str | None,
    champ_preds: pd.DataFrame | None,
    preds: pd.DataFrame | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The paired ROC-AUC difference to the champion with its bootstrap interval, or n/a."""
    out: dict[str, Any] = {
        "auc_diff": np.nan,
        "auc_diff_lo": np.nan,
        "auc_diff_hi": np.nan,
        "paired_rows": 0,
    }
    if champion_run_id is None:
        return {**out, "paired_note": "n/a: no champion"}
    if rid == champion_run_id:
        return {
            **out,
            "paired_rows": len(preds) if preds is not None else 0,
            "paired_note": "champion",
        }
    if champ_preds is None or preds is None:
        who = "champion" if champ_preds is None else "run"
        return {**out, "paired_note": f"n/a: the {who} logged no test predictions"}
    joined, note = pair_predictions(champ_preds, preds)
    if joined.empty:
        return {**out, "paired_note": note}
    y = joined["label"].to_numpy(dtype=float)
    if len(np.unique(y)) < 2:
        return {
            **out,
            "paired_rows": len(joined),
            "paired_note": "n/a: the common test rows hold one class only",
        }
    diff, lo, hi = paired_auc_bootstrap(
        y, joined["score_champion"].to_numpy(), joined["score_run"].to_numpy(), n_boot, seed
    )
    return {
        "auc_diff": diff,
        "auc_diff_lo": lo,
        "auc_diff_hi": hi,
        "paired_rows": len(joined),
        "paired_note": note,
    }


# ---------------------------------------------------------------- terminal


def _fmt(value: Any, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def auc_interval_text(row: Mapping[str, Any] | pd.Series) -> str:
    """``+0.0123 [−0.0040, +0.0290]`` or the reason it is not available."""
    if row["champion"]:
        return "champion"
    if np.isnan(row["auc_diff"]):
        return str(row["paired_note"])
    return f"{row['auc_diff']:+.4f} [{row['auc_diff_lo']:+.4f}, {row['auc_diff_hi']:+.4f}]"


def print_comparison(result: ComparisonResult, console: Console | None = None) -> None:
    """The comparison as a Rich table, champion first, with the notes below it."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = result.table
    table = Table(title=f"Run comparison ({result.test_split})", show_lines=False)
    table.add_column("run", overflow="fold")
    table.add_column("window (train → test)", overflow="fold")
    table.add_column("feature set")
    for col in result.param_columns:
        table.add_column(col.removeprefix("param.xgb.").removeprefix("param."), justify="right")
    metrics = [
        m for m in ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile") if f"test_{m}" in t
    ]
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("Δ AUC vs champion [95 % CI]", justify="right", overflow="fold")
    for _, row in t.iterrows():
        mark = "★ " if row["champion"] else ""
        table.add_row(
            mark + result.labels.get(row["run_id"], row["run_id"]),
            row["data_window"],
            row["feature_set"],
            *[_fmt(row[c]) for c in result.param_columns],
            *[_fmt(row[f"test_{m}"]) for m in metrics],
            auc_interval_text(row),
            style="bold" if row["champion"] else None,
        )
    console.print(table)
    for note in result.notes:
        console.print(f"[dim]{note}[/dim]")
    paired = [str(n) for n in t["paired_note"] if n not in ("champion", "same test rows")]
    for note in dict.fromkeys(paired):
        console.print(f"[dim]paired bootstrap: {note}[/dim]")
    console.print(
        f"[dim]paired bootstrap: {result.n_boot} resamples of the common test rows, "
        f"seed {result.seed}[/dim]"
    )


def run_compare(
    experiment: str | Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    tag_filter: Mapping[str, str] | str | None = None,
    html_path: Path | None = None,
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    console: Console | None = None,
) -> ComparisonResult:
    """Select, compare, print the table; write the HTML report when ``html_path`` is given."""
    from features.store import StateDirs

    tracking_uri = tracking_uri or StateDirs.resolve().tracking_uri
    runs = select_runs(tracking_uri, experiment, run_ids, tag_filter)
    result = compare_runs(runs, n_boot=n_boot, seed=seed, tracking_uri=tracking_uri)
    print_comparison(result, console)
    if html_path is not None:
        from experiments.compare_report import write_html

        path = write_html(result, Path(html_path))
        (console or _console()).print(f"HTML report written to [bold]{path}[/bold]")
    return result


def _console() -> Console:
    from rich.console import Console

    return Console()


def _parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--tag expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m experiments.compare`` until ``patron compare`` wraps :func:`run_compare`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", "-e", action="append", help="experiment name or id")
    parser.add_argument("--run", "-r", action="append", dest="run_ids", help="run id")
    parser.add_argument("--tag", "-t", action="append", default=[], help="tag filter KEY=VALUE")
    parser.add_argument("--html", type=Path, help="write a self-contained HTML report here")
    parser.add_argument("--tracking-uri", help="default: the state folder's SQLite store")
    args = parser.parse_args(argv)
    try:
        run_compare(
            args.experiment,
            args.run_ids,
            _parse_tags(args.tag) or None,
            args.html,
            args.tracking_uri,
        )
    except ValueError as exc:  # nothing selected, unknown experiment: say so, no traceback
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
