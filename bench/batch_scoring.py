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

``--engine spark [--master local[2]]`` times the Spark job instead (``serving.spark_batch``): the
inflated base is written as a snapshot, and Spark scores it file to file (read, score, percentiles
and deciles, segments, one Parquet file) on a session started once (its start reported beside);
``serving.batch.score_base`` does the same file in process, and the floor is the same as above,
all in one run (scores only ``--repeat`` times interleaved; reasons once each, on
``--reasons-customers``). Ratios: Spark scores-only / floor predict (median of pairs), Spark with
reasons / (floor predict + contribs), Spark / in process. The load average is recorded at start
and end (the machine may be shared); the JSON goes to ``bench/results/batch_scoring_spark.json``.
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


def floors(
    python_model: Any, base: Any, threads: int
) -> tuple[np.ndarray, Callable[[], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(model inputs of the base's rows, floor predict of them, floor pred_contribs of given
    inputs): ``DMatrix`` + the booster's own ``predict`` with ``threads`` threads, on the inputs
    after the model's own preprocessing (not timed)."""
    import pandas as pd
    import xgboost as xgb

    from serving.kinds import _last_step

    pre, final = _last_step(python_model.pipeline)
    raw = base.features[python_model.feature_names]
    x = pre.transform(raw) if pre is not None else raw
    inputs = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    input_names = list(x.columns) if isinstance(x, pd.DataFrame) else None
    del raw, x
    booster = final.get_booster()

    def matrix(rows: np.ndarray) -> Any:
        booster.set_param("nthread", threads)
        return xgb.DMatrix(rows, feature_names=input_names, missing=np.nan, nthread=threads)

    def floor_predict() -> np.ndarray:
        return booster.predict(matrix(inputs))

    def floor_contribs(rows: np.ndarray) -> np.ndarray:
        return booster.predict(matrix(rows), pred_contribs=True)

    return inputs, floor_predict, floor_contribs


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pandas as pd

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

    inputs, floor_predict, floor_contribs_of = floors(python_model, base, threads)
    booster = _last_step(python_model.pipeline)[1].get_booster()

    def floor_contribs() -> np.ndarray:
        return floor_contribs_of(inputs)

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


# --------------------------------------------------------------------------- Spark

BENCH_DATASET = "bench_inflated"


def write_snapshot_of(state: Any, base: Any, dataset: str, source: Path) -> None:
    """A base as the latest snapshot of a dataset of its own (the feature-set spec beside it)."""
    import shutil

    from features.build import SPEC_FILE

    folder = state.snapshots(dataset, base.feature_set)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"as_of={base.as_of.isoformat()}.parquet"
    base.features.reset_index().to_parquet(path, index=False)
    if (source.parent / SPEC_FILE).exists():
        shutil.copy(source.parent / SPEC_FILE, folder / SPEC_FILE)


def run_spark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The Spark job (``serving.spark_batch``) on the inflated base, file to file, against the
    same floor and the in-process job (``score_base``, file to file) in the same run."""
    import pandas as pd
    import pyspark

    from features.engine import EngineConfig
    from features.spark import local_spark_session
    from features.store import StateDirs
    from serving.batch import load_scorer, score_base
    from serving.spark_batch import score_base_spark

    load_at_start = os.getloadavg()
    state, settings = prepare(args.home, args.train_customers, work)
    meta, python_model, small = load_scorer(settings, state, "churn")
    names = python_model.feature_names
    base = inflate(small, names, args.customers, args.seed)
    n = base.size
    k = min(args.reasons_customers or n, n)
    # the inflated base (and its first k customers, for the reasons) as snapshots of datasets
    # of their own, in a state of their own (the registry stays the trained one's)
    bench = StateDirs.resolve(work / "bench-home", tracking_uri=state.tracking_uri)
    write_snapshot_of(bench, base, BENCH_DATASET, small.snapshot_path)
    explained = dataclasses.replace(base, features=base.features.iloc[:k], segments=None)
    write_snapshot_of(bench, explained, f"{BENCH_DATASET}_reasons", small.snapshot_path)
    del small, explained

    def served(dataset: str) -> Any:
        spec = settings.models["churn"].model_copy(update={"dataset": dataset})
        return settings.model_copy(update={"models": {"churn": spec}})

    on_base, on_explained = served(BENCH_DATASET), served(f"{BENCH_DATASET}_reasons")
    threads = args.threads or os.cpu_count() or 1
    inputs, floor_predict, floor_contribs = floors(python_model, base, threads)
    del base
    print(f"base: {n:,} customers x {len(names)} features; Spark {args.master}", flush=True)

    t0 = time.perf_counter()
    session = local_spark_session(args.master, "patron-batch-bench", {})
    session.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - t0
    engine = EngineConfig(kind="spark", master=args.master)
    out_spark, out_local = work / "spark.parquet", work / "local.parquet"
    stages: dict[str, float] = {}

    def spark_job(settings_: Any, reasons: bool) -> Callable[[], Any]:
        def job() -> Any:
            marks: list[tuple[str, float]] = []
            path = score_base_spark(
                bench,
                settings_,
                out_spark,
                engine,
                reasons=reasons,
                stage=lambda line: marks.append((line, time.perf_counter())),
            )
            marks.append(("end", time.perf_counter()))
            for (line, at), (_, end) in zip(marks, marks[1:], strict=False):
                key = line.split(":")[0].split(" on ")[0]
                stages[f"{'reasons' if reasons else 'scores'}: {key}"] = round(end - at, 3)
            return path

        return job

    def local_job(settings_: Any, reasons: bool) -> Callable[[], Any]:
        return lambda: score_base(bench, settings_, out_local, reasons=reasons)

    times: dict[str, list[float]] = {
        "floor_predict": [],
        "inprocess_scores": [],
        "spark_scores": [],
    }
    try:
        # the first run starts the Python workers (they import pandas, scikit-learn, XGBoost,
        # MLflow and unpickle the model): reported apart, the timed runs find them started
        cold_s, _, _ = timed(spark_job(on_base, False))
        print(f"  spark_scores       cold : {cold_s:7.2f} s", flush=True)
        for i in range(args.repeat):
            for key, fn in (
                ("floor_predict", floor_predict),
                ("inprocess_scores", local_job(on_base, False)),
                ("spark_scores", spark_job(on_base, False)),
            ):
                seconds, _, out = timed(fn)
                times[key].append(seconds)
                print(f"  {key:<18} run {i + 1}: {seconds:7.2f} s", flush=True)
                del out
        local, remote = pd.read_parquet(out_local), pd.read_parquet(out_spark)
        agree = bool(
            local["customer_id"].equals(remote["customer_id"])
            and np.allclose(local["score"], remote["score"], rtol=1e-12, atol=0)
            and local["decile"].equals(remote["decile"])
            and local["percentile"].equals(remote["percentile"])
            and local["segment_rfm_code"].equals(remote["segment_rfm_code"])
        )
        del local, remote
        contribs_s, _, out = timed(lambda: floor_contribs(inputs[:k]))
        del out
        print(f"  floor_contribs     : {contribs_s:7.2f} s ({k:,} customers)", flush=True)
        local_reasons_s, _, _ = timed(local_job(on_explained, True))
        print(f"  inprocess + reasons: {local_reasons_s:7.2f} s", flush=True)
        spark_reasons_s, _, _ = timed(spark_job(on_explained, True))
        print(f"  spark + reasons    : {spark_reasons_s:7.2f} s", flush=True)
    finally:
        session.stop()

    predict_s = min(times["floor_predict"])
    spark_s = min(times["spark_scores"])
    local_s = min(times["inprocess_scores"])
    paired = [sp / f for f, sp in zip(times["floor_predict"], times["spark_scores"], strict=True)]
    floor_reasons_s = predict_s * k / n + contribs_s
    return {
        "engine": f"spark ({args.master})",
        "customers": n,
        "customers_explained": k,
        "spark_customers_per_s": {
            "scores_only": round(n / spark_s),
            "scores_reasons": round(k / spark_reasons_s),
        },
        "ratio_spark_scores_to_floor": round(float(np.median(paired)), 3),
        "ratio_spark_scores_best_to_best": round(spark_s / predict_s, 3),
        "ratio_spark_scores_paired_runs": [round(r, 3) for r in paired],
        "ratio_spark_scores_reasons_to_floor": round(spark_reasons_s / floor_reasons_s, 3),
        "ratio_spark_to_inprocess": {
            "scores_only_best": round(spark_s / local_s, 3),
            "scores_reasons": round(spark_reasons_s / local_reasons_s, 3),
        },
        "spark_file_equals_inprocess_file": agree,
        "seconds": {
            "spark_session_start": round(session_s, 3),
            "spark_scores_first_run_cold": round(cold_s, 3),
            "floor_predict": round(predict_s, 3),
            "floor_contribs": round(contribs_s, 3),
            "inprocess_scores_file_to_file": round(local_s, 3),
            "spark_scores_file_to_file": round(spark_s, 3),
            "inprocess_scores_reasons_file_to_file": round(local_reasons_s, 3),
            "spark_scores_reasons_file_to_file": round(spark_reasons_s, 3),
            "spark_stages_last_run": stages,
            "all_runs": {key: [round(v, 3) for v in vs] for key, vs in times.items()},
        },
        "what_is_timed": (
            "floor: DMatrix + booster.predict (and pred_contribs) on the model inputs in memory, "
            f"{threads} threads; in-process: serving.batch.score_base, snapshot file to scores "
            "file; Spark: serving.spark_batch.score_base_spark, snapshot file to scores file on "
            "a session already started (its start and a first, cold run are reported beside: "
            "the Python workers import the model's packages once); segments without order gaps "
            "(the inflated customers have no transactions)"
        ),
        "model": {
            "features": len(names),
            "inputs": inputs.shape[1],
            "trees": _booster_rounds(python_model),
            "score_map": getattr(getattr(python_model.estimator, "map_", None), "method", None),
        },
        "threads": threads,
        "repeat": args.repeat,
        "train_customers": args.train_customers if args.home is None else None,
        "load_average_1m_5m_15m_at_start": [round(v, 2) for v in load_at_start],
        "load_average_1m_5m_15m_at_end": [round(v, 2) for v in os.getloadavg()],
        "shared_machine": "yes: a CI run and other work shared the 2 cores (see the load)",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "command": " ".join(["python", "bench/batch_scoring.py", *sys.argv[1:]]),
    }


def _booster_rounds(python_model: Any) -> int:
    from serving.kinds import _last_step

    return int(_last_step(python_model.pipeline)[1].get_booster().num_boosted_rounds())


def print_spark(result: dict[str, Any]) -> None:
    s = result["seconds"]
    rows = [
        ("phase", "seconds", "ratio to floor"),
        ("floor: booster.predict", f"{s['floor_predict']:.2f}", "1"),
        ("floor: pred_contribs", f"{s['floor_contribs']:.2f}", ""),
        ("in process, file to file, scores", f"{s['inprocess_scores_file_to_file']:.2f}", ""),
        (
            "Spark, file to file, scores",
            f"{s['spark_scores_file_to_file']:.2f}",
            f"{result['ratio_spark_scores_to_floor']:.2f}",
        ),
        (
            "in process, + reasons",
            f"{s['inprocess_scores_reasons_file_to_file']:.2f}",
            "",
        ),
        (
            "Spark, + reasons",
            f"{s['spark_scores_reasons_file_to_file']:.2f}",
            f"{result['ratio_spark_scores_reasons_to_floor']:.2f} (of predict + contribs)",
        ),
        ("Spark session start (not in the above)", f"{s['spark_session_start']:.2f}", ""),
        ("Spark first run, cold workers", f"{s['spark_scores_first_run_cold']:.2f}", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(
        f"\n{result['customers']:,} customers ({result['customers_explained']:,} explained), "
        f"{result['engine']}"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(
        f"\nSpark: {result['spark_customers_per_s']} customers/s; same file as in process: "
        f"{result['spark_file_equals_inprocess_file']}; load average "
        f"{result['load_average_1m_5m_15m_at_end'][0]:.1f}"
    )


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
        "--engine",
        choices=("inprocess", "spark"),
        default="inprocess",
        help="spark: the Spark job (serving.spark_batch) file to file, beside the in-process one",
    )
    parser.add_argument("--master", default="local[2]", help="Spark master (--engine spark)")
    parser.add_argument("--json", type=Path, default=None, help="default: bench/results/...")
    args = parser.parse_args(argv)
    name = "batch_scoring_spark.json" if args.engine == "spark" else "batch_scoring.json"
    args.json = args.json or ROOT / "bench" / "results" / name
    job = run_spark if args.engine == "spark" else run
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        result = job(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="patron-batch-bench-") as tmp:
            result = job(args, Path(tmp))
    if args.engine == "spark":
        print_spark(result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")
        return 0
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
