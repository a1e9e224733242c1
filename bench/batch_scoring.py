"""Batch-scoring benchmark: Patron's batch job against the booster's own predict and pred_contribs.

Run ``python bench/batch_scoring.py`` (200 000 customers: a few minutes, mostly SHAP) or
``--customers 1000000``. A churn model is trained on a small synthetic base (``--train-customers``,
in a temporary folder; or ``--home`` with a trained churn champion and its snapshot) and its
snapshot is inflated to ``--customers`` rows: rows drawn with replacement, float features jittered,
new customer ids, segments carried with the rows. Tree traversal and TreeSHAP cost do not depend
on the values, so the inflated rows time like real ones.

Timed on the same rows with the same booster and thread count (``--threads``, default every core):

* floor predict: ``DMatrix`` of the model inputs (after the model's own preprocessing) +
  ``booster.predict``; floor contribs: the same DMatrix + ``booster.predict(pred_contribs=True)``;
* Patron scores only: ``serving.batch.score_frame(reasons=False)``, the batch job's whole work
  between the loaded base and the parquet file: model inputs, preprocessing, calibrated
  probability, percentiles, deciles, segments, the frame;
* Patron scores + reasons: ``score_frame(reasons=True)`` (top-3 SHAP reasons in chunks);
* writing the parquet file, reported beside (the floor writes nothing).

Ratios: scores-only / floor predict (the median over interleaved pairs, each Patron run against
the floor run just before it, so both saw the same load; best against best is reported beside);
scores + reasons / (floor predict + floor contribs). Goal: both <= 1.3.
``--reasons-customers N`` times both reason phases on the first N customers only (the same rows
on both sides; the predict floor is prorated to them) when SHAP on the whole base would
take too long on a busy machine. Scores are timed ``--repeat`` times interleaved with the floor
(best of each); reasons once each (they take minutes). Peak RSS is the process's high-water mark
during each phase (reset before it through /proc/self/clear_refs). Prints a table and writes
``bench/results/batch_scoring.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAME = "batch-scoring-bench"
GOAL = 1.3


# --------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0); False when impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    kib = _status_kib("VmHWM")
    return None if kib is None else round(kib / 1024, 1)


def rss_mb() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def timed(fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, peak RSS MB during the call, result)."""
    reset_peak()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, peak_mb(), out


# --------------------------------------------------------------------------- set-up


def prepare(home: Path | None, train_customers: int, work: Path) -> tuple[Any, Any]:
    """(state, ServingSettings) serving a trained churn model over its snapshot."""
    from features.sources import ingest, load_dataset
    from features.store import StateDirs
    from serving.settings import ServingSettings
    from tests.serving.conftest import ensure_snapshot, register_copy, serving_settings
    from training.config import load_experiment

    cfg = load_experiment(ROOT / "experiments" / "churn" / "synthetic.yaml")
    dataset = load_dataset(cfg.dataset)
    if home is not None:
        from mlflow.tracking import MlflowClient

        state = StateDirs.resolve(home)
        client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
        model_uri = str(client.get_model_version_by_alias(cfg.registered_model, "champion").source)
    else:
        from features.synthetic import SyntheticConfig, generate
        from training.run import run_experiment

        state = StateDirs.resolve(work / "home")
        os.environ["PATRON_HOME"] = str(state.home)
        syn = SyntheticConfig.model_validate({**dataset.synthetic, "n_customers": train_customers})
        print(f"set-up: {train_customers:,} customers generated, ingested, trained ...", flush=True)
        generate(syn, state.synthetic(dataset.name))
        ingest(dataset, state)
        model_uri = run_experiment(cfg, state).logged["model_uri"]
    ensure_snapshot(state, dataset.name, cfg.feature_set)
    register_copy(state, model_uri, NAME, ("champion",))
    pipeline = {"state": state, "cfg": cfg, "dataset": dataset}
    settings = ServingSettings.model_validate(serving_settings(pipeline, NAME, reload_interval_s=0))
    return state, settings


def inflate(base: Any, model_features: list[str], n: int, seed: int) -> Any:
    """The base with ``n`` customers: rows drawn with replacement, float features jittered."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = rng.integers(0, base.size, n)
    features = base.features.iloc[rows].copy()
    for col in model_features:
        if features[col].dtype.kind == "f":
            features[col] = features[col].to_numpy() * rng.lognormal(0.0, 0.05, n)
    ids = pd.Index([f"B{i:09d}" for i in range(n)], dtype=object, name="customer_id")
    features.index = ids
    segments = None
    if base.segments is not None:
        segments = base.segments.iloc[rows].copy()
        segments.index = ids
    return dataclasses.replace(
        base,
        features=features,
        segments=segments,
        consent={ch: flags[rows] for ch, flags in base.consent.items()},
        id_hash=base.id_hash[rows],
    )


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pandas as pd
    import xgboost as xgb

    from serving.batch import load_scorer, score_frame
    from serving.kinds import _last_step

    state, settings = prepare(args.home, args.train_customers, work)
    meta, python_model, small = load_scorer(settings, state, "churn")
    names = python_model.feature_names
    base = inflate(small, names, args.customers, args.seed)
    del small
    threads = args.threads or os.cpu_count() or 1
    n = base.size
    print(f"base: {n:,} customers x {len(names)} features; {threads} threads", flush=True)

    # the floor's inputs: the model's own preprocessing of the same rows (not timed)
    pre, final = _last_step(python_model.pipeline)
    raw = base.features[names]
    x = pre.transform(raw) if pre is not None else raw
    inputs = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    input_names = list(x.columns) if isinstance(x, pd.DataFrame) else None
    del raw, x
    booster = final.get_booster()

    def floor_predict() -> np.ndarray:
        booster.set_param("nthread", threads)
        matrix = xgb.DMatrix(inputs, feature_names=input_names, missing=np.nan, nthread=threads)
        return booster.predict(matrix)

    def floor_contribs() -> np.ndarray:
        booster.set_param("nthread", threads)
        matrix = xgb.DMatrix(inputs, feature_names=input_names, missing=np.nan, nthread=threads)
        return booster.predict(matrix, pred_contribs=True)

    def patron(reasons: bool) -> Callable[[], pd.DataFrame]:
        return lambda: score_frame(meta, python_model, base, reasons=reasons, threads=threads)

    times: dict[str, list[float]] = {"floor_predict": [], "patron_scores": []}
    peaks: dict[str, float | None] = {}
    rss_before = rss_mb()
    frame = None
    for i in range(args.repeat):
        for key, fn in (("floor_predict", floor_predict), ("patron_scores", patron(False))):
            seconds, peak, out = timed(fn)
            times[key].append(seconds)
            peaks[key] = max(peaks.get(key) or 0.0, peak or 0.0) or None
            if key == "patron_scores":
                frame = out
            print(f"  {key:<16} run {i + 1}: {seconds:7.2f} s", flush=True)
            del out
    assert frame is not None
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        write_s, write_peak, _ = timed(partial(frame.to_parquet, Path(tmp) / "s.parquet"))
    del frame
    if args.reasons_customers and args.reasons_customers < n:
        # reasons timed on the first rows only (both sides: the same rows)
        k = args.reasons_customers
        base = dataclasses.replace(
            base,
            features=base.features.iloc[:k],
            segments=base.segments.iloc[:k] if base.segments is not None else None,
        )
        inputs = inputs[:k]
    n_reasons = base.size
    contribs_s, peaks["floor_contribs"], out = timed(floor_contribs)
    del out
    print(f"  floor_contribs   : {contribs_s:7.2f} s", flush=True)
    reasons_s, peaks["patron_scores_reasons"], frame = timed(patron(True))
    print(f"  patron + reasons : {reasons_s:7.2f} s", flush=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        write_reasons_s, _, _ = timed(partial(frame.to_parquet, Path(tmp) / "s.parquet"))
    assert list(frame.columns)[-1] == "reason_3_contribution" and len(frame) == n_reasons
    del frame

    predict_s = min(times["floor_predict"])
    scores_s = min(times["patron_scores"])
    # best against best; and each run against the floor run just before it (same load)
    ratio_best = scores_s / predict_s
    paired = [p / f for f, p in zip(times["floor_predict"], times["patron_scores"], strict=True)]
    ratio_scores = float(np.median(paired))
    # the floor of scores + reasons: predict and pred_contribs of the rows explained
    predict_reasons_s = predict_s * n_reasons / n
    ratio_reasons = reasons_s / (predict_reasons_s + contribs_s)
    return {
        "customers": n,
        "customers_explained": n_reasons,
        "ratio_scores_to_floor": round(ratio_scores, 3),
        "ratio_scores_reasons_to_floor": round(ratio_reasons, 3),
        "ratio_scores_best_to_best": round(ratio_best, 3),
        "ratio_scores_paired_runs": [round(r, 3) for r in paired],
        "goal": f"<= {GOAL} for both",
        "met": {
            "scores": ratio_scores <= GOAL,
            "scores_reasons": ratio_reasons <= GOAL,
        },
        "seconds": {
            "floor_predict": round(predict_s, 3),
            "floor_contribs": round(contribs_s, 3),
            "patron_scores": round(scores_s, 3),
            "patron_scores_reasons": round(reasons_s, 3),
            "write_parquet_scores": round(write_s, 3),
            "write_parquet_scores_reasons": round(write_reasons_s, 3),
            "all_runs": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
        },
        "peak_rss_mb": {
            "before_phases": rss_before,
            **peaks,
            "write_parquet_scores": write_peak,
        },
        "model": {
            "features": len(names),
            "inputs": inputs.shape[1],
            "trees": booster.num_boosted_rounds(),
            "score_map": getattr(getattr(python_model.estimator, "map_", None), "method", None),
        },
        "threads": threads,
        "repeat": args.repeat,
        "train_customers": args.train_customers if args.home is None else None,
        "load_average_1m_at_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "command": " ".join(["python", "bench/batch_scoring.py", *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000, help="customers scored")
    parser.add_argument("--train-customers", type=int, default=3000, help="synthetic training base")
    parser.add_argument("--home", type=Path, help="state folder with a trained churn champion")
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved runs of scores only")
    parser.add_argument(
        "--reasons-customers",
        type=int,
        default=None,
        help="time the reason phases on the first N customers only (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="set-up folder")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "results" / "batch_scoring.json"
    )
    args = parser.parse_args(argv)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="patron-batch-bench-") as tmp:
            result = run(args, Path(tmp))
    s, p = result["seconds"], result["peak_rss_mb"]
    rows = [
        ("phase", "seconds", "ratio to floor", "peak RSS MB"),
        ("floor: booster.predict", f"{s['floor_predict']:.2f}", "1", str(p["floor_predict"])),
        ("floor: pred_contribs", f"{s['floor_contribs']:.2f}", "", str(p["floor_contribs"])),
        (
            "Patron scores only",
            f"{s['patron_scores']:.2f}",
            f"{result['ratio_scores_to_floor']:.2f}",
            str(p["patron_scores"]),
        ),
        (
            "Patron scores + reasons",
            f"{s['patron_scores_reasons']:.2f}",
            f"{result['ratio_scores_reasons_to_floor']:.2f} (of predict + contribs)",
            str(p["patron_scores_reasons"]),
        ),
        (
            "write parquet (scores / + reasons)",
            f"{s['write_parquet_scores']:.2f} / {s['write_parquet_scores_reasons']:.2f}",
            "not in the ratios",
            str(p["write_parquet_scores"]),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(
        f"{result['customers']:,} customers ({result['customers_explained']:,} explained), "
        f"{result['threads']} threads"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(
        f"\ngoal <= {GOAL}: {result['met']}  (load average {result['load_average_1m_at_end']:.1f})"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
