"""Feature-build benchmark: the DuckDB path of churn_v1 against pandas and a hand-written floor.

Run ``python bench/features.py --transactions 10000000`` (``--skip-100m`` skips the out-of-core
step; ``--crm`` and ``--spark`` add rows; ``--nice -10`` shields the timings on a shared machine).
Each engine runs in a fresh subprocess (best and median of ``--repeat``, interleaved) so its peak
RSS is its own. Prints a table and writes ``bench/results/features.json`` (ratios against the
references measured in the same run). Data are generated under $PATRON_HOME or a temporary
folder (or ``--work-dir``) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
START = date(2022, 1, 1)
N_DAYS = 3 * 365
AS_OF = date(2024, 10, 31)
#: The churn_v1 features every engine computes (the core of the set).
CORE = [
    "days_since_last_order",
    "days_since_first_order",
    "orders_count_total",
    "spend_sum_total",
    "spend_mean_order",
    "orders_count_30d",
    "spend_sum_30d",
    "orders_count_90d",
    "spend_sum_90d",
    "orders_count_365d",
    "spend_sum_365d",
    "orders_count_730d",
    "spend_sum_730d",
    "returns_share",
    "categories_distinct",
    "rfm_points",
]


# --------------------------------------------------------------------------- data


def _chunk_rows(
    rng: np.random.Generator,
    n_rows: int,
    first_order: int,
    cust_cdf: np.ndarray,
    cust_start: np.ndarray,
    price: np.ndarray,
) -> tuple[dict[str, np.ndarray], int]:
    """One chunk of canonical order lines as integer-coded numpy columns."""
    n_products = price.size
    n_orders = n_rows // 4 + 16
    lines = 1 + rng.poisson(3.0, n_orders)
    while lines.sum() < n_rows:  # rare: top up so the chunk has exactly n_rows lines
        lines = np.concatenate([lines, 1 + rng.poisson(3.0, n_orders // 4 + 16)])
    ends = np.cumsum(lines)
    n_orders = int(np.searchsorted(ends, n_rows) + 1)
    lines = lines[:n_orders]
    lines[-1] -= int(ends[n_orders - 1] - n_rows)
    cust = np.searchsorted(cust_cdf, rng.random(n_orders) * cust_cdf[-1]).clip(0, cust_cdf.size - 1)
    start = cust_start[cust]
    day = start + (rng.random(n_orders) * (N_DAYS - start)).astype(np.int64)
    second = day * 86_400 + rng.integers(8 * 3600, 21 * 3600, n_orders)
    order = np.arange(first_order, first_order + n_orders)
    rep = np.repeat(np.arange(n_orders), lines)
    product = (n_products * rng.random(n_rows) ** 2.5).astype(np.int64)
    quantity = 1 + rng.poisson(1.0, n_rows)
    is_return = rng.random(n_rows) < 0.03
    # a return line belongs to its own order "<order>-R", one to fourteen days after the purchase
    second_line = second[rep] + is_return * 86_400 * rng.integers(1, 15, n_rows)
    sign = np.where(is_return, -1, 1)
    cols = {
        "cust": cust[rep],
        "sec": second_line,
        "order": order[rep],
        "product": product,
        "quantity": sign * quantity,
        "cents": sign * quantity * price[product],
        "is_return": is_return,
        "store": rng.random(n_rows) < 0.3,
    }
    return cols, n_orders


def generate_transactions(
    n_rows: int, out_dir: Path, seed: int = 0, chunk_rows: int = 5_000_000
) -> Path:
    """Write ``n_rows`` canonical transactions as parquet parts in ``out_dir``; return the glob."""
    import duckdb
    import pyarrow as pa

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_customers = max(n_rows // 20, 10)
    cust_cdf = np.cumsum(rng.gamma(0.8, 1.0, n_customers))
    cust_start = rng.integers(0, N_DAYS - 30, n_customers)
    price = np.round(100 * rng.lognormal(1.5, 0.8, 5_000)).astype(np.int64) + 50
    con = duckdb.connect()
    first_order = 0
    epoch = np.datetime64(START.isoformat(), "s")
    for part, lo in enumerate(range(0, n_rows, chunk_rows)):
        n = min(chunk_rows, n_rows - lo)
        cols, n_orders = _chunk_rows(
            np.random.default_rng([seed, part]), n, first_order, cust_cdf, cust_start, price
        )
        first_order += n_orders
        table = pa.table(
            {
                "cust": cols["cust"],
                "ts": (epoch + cols["sec"].astype("timedelta64[s]")).astype("datetime64[us]"),
                "ord": cols["order"],
                "product": cols["product"],
                "quantity": cols["quantity"].astype(np.float64),
                "amount": cols["cents"] / 100.0,
                "is_return": cols["is_return"],
                "store": cols["store"],
            }
        )
        con.register("chunk", table)
        con.execute(f"""
            COPY (
                SELECT 'C' || lpad(CAST(cust AS VARCHAR), 8, '0') AS customer_id,
                       ts,
                       'O' || CAST(ord AS VARCHAR) || CASE WHEN is_return THEN '-R' ELSE '' END
                           AS order_id,
                       'P' || lpad(CAST(product AS VARCHAR), 5, '0') AS product_id,
                       'cat_' || lpad(CAST(product % 20 AS VARCHAR), 2, '0') AS category,
                       quantity, amount, is_return,
                       CASE WHEN store THEN 'store' ELSE 'web' END AS channel
                FROM chunk
            ) TO '{out_dir / f"part-{part:04d}.parquet"}' (FORMAT parquet)""")
        con.unregister("chunk")
    con.close()
    return out_dir / "*.parquet"


# --------------------------------------------------------------------------- engines


def floor_sql(source: str, as_of: date) -> str:
    """The churn_v1 core as one hand-written DuckDB query: returns folded into the order pass."""
    d = f"DATE '{as_of.isoformat()}'"
    windows = ",\n               ".join(
        f"count(amt) FILTER (WHERE d < {w}) AS orders_count_{w}d, "
        f"coalesce(sum(amt) FILTER (WHERE d < {w}), 0.0) AS spend_sum_{w}d"
        for w in (30, 90, 365, 730)
    )
    return f"""
    WITH l AS (
        SELECT customer_id, order_id, category, amount,
               coalesce(is_return, FALSE) OR amount < 0 AS r,
               date_diff('day', CAST(ts AS DATE), {d}) AS d
        FROM {source} WHERE CAST(ts AS DATE) <= {d}
    ),
    o AS (
        SELECT customer_id, max(d) FILTER (WHERE NOT r) AS d,
               sum(amount) FILTER (WHERE NOT r) AS amt, sum(amount) FILTER (WHERE r) AS ret
        FROM l GROUP BY customer_id, order_id
    ),
    c AS (SELECT customer_id, count(DISTINCT category) AS cats FROM l WHERE NOT r
          GROUP BY customer_id),
    f AS (
        SELECT customer_id, min(d) AS days_since_last_order, max(d) AS days_since_first_order,
               count(amt) AS orders_count_total, sum(amt) AS spend_sum_total,
               avg(amt) AS spend_mean_order,
               {windows},
               coalesce(-sum(ret) / NULLIF(sum(amt), 0.0), 0.0) AS returns_share
        FROM o GROUP BY customer_id HAVING count(amt) > 0
    )
    SELECT f.*, coalesce(c.cats, 0) AS categories_distinct,
           (CASE WHEN days_since_last_order < 91 THEN 20 WHEN days_since_last_order < 182 THEN 10
                 WHEN days_since_last_order < 365 THEN 3 ELSE 1 END)
           + least(4.0 * orders_count_730d, 20.0)
           + least(greatest(0.1 * spend_sum_730d, 0.0), 20.0) AS rfm_points
    FROM f LEFT JOIN c ON f.customer_id = c.customer_id
    ORDER BY f.customer_id"""


def pandas_features(files: list[str], as_of: date) -> Any:
    """The churn_v1 core in plain pandas (groupby on factorized keys): the reference."""
    import pandas as pd

    cols = ["customer_id", "ts", "order_id", "category", "amount", "is_return"]
    df = pd.concat([pd.read_parquet(f, columns=cols) for f in files], ignore_index=True)
    day = df["ts"].to_numpy().astype("datetime64[D]").astype(np.int64)
    days_ago = np.datetime64(as_of.isoformat(), "D").astype(np.int64) - day
    seen = days_ago >= 0
    df = df.loc[seen]
    cust, ids = pd.factorize(df["customer_id"])
    lines = pd.DataFrame(
        {
            "cust": cust,
            "order": pd.factorize(df["order_id"])[0],
            "cat": pd.factorize(df["category"], use_na_sentinel=True)[0],
            "amount": df["amount"].to_numpy(),
            "ret": df["is_return"].fillna(False).to_numpy(bool) | (df["amount"].to_numpy() < 0),
            "d": days_ago[seen],
        }
    )
    buys = lines[~lines["ret"]]
    orders = buys.groupby(["cust", "order"], sort=False).agg(d=("d", "max"), amt=("amount", "sum"))
    orders = orders.reset_index()
    g = orders.groupby("cust", sort=False)
    out = g.agg(
        days_since_last_order=("d", "min"),
        days_since_first_order=("d", "max"),
        orders_count_total=("d", "size"),
        spend_sum_total=("amt", "sum"),
        spend_mean_order=("amt", "mean"),
    )
    for w in (30, 90, 365, 730):
        inside = orders["d"] < w
        win = pd.DataFrame(
            {
                "cust": orders["cust"],
                "n": inside.astype(np.int64),
                "m": orders["amt"].where(inside, 0.0),
            }
        ).groupby("cust", sort=False)
        sums = win.sum()
        out[f"orders_count_{w}d"] = sums["n"]
        out[f"spend_sum_{w}d"] = sums["m"]
    amounts = pd.DataFrame(
        {
            "cust": lines["cust"],
            "ret": lines["amount"].where(lines["ret"], 0.0),
            "buy": lines["amount"].where(~lines["ret"], 0.0),
        }
    )
    per = amounts.groupby("cust", sort=False).sum().reindex(out.index)
    share = -per["ret"] / per["buy"].where(per["buy"] != 0)
    out["returns_share"] = share.fillna(0.0)
    cats = buys.loc[buys["cat"] >= 0, ["cust", "cat"]].drop_duplicates()
    out["categories_distinct"] = cats.groupby("cust").size().reindex(out.index, fill_value=0)
    rec = out["days_since_last_order"].to_numpy()
    r = np.select([rec < 91, rec < 182, rec < 365], [20.0, 10.0, 3.0], 1.0)
    out["rfm_points"] = (
        r
        + np.minimum(4.0 * out["orders_count_730d"], 20.0)
        + np.minimum(np.maximum(0.1 * out["spend_sum_730d"], 0.0), 20.0)
    )
    out.insert(0, "customer_id", ids[out.index.to_numpy()])
    return out.sort_values("customer_id").reset_index(drop=True)


def _rss_mb() -> float:
    """Peak RSS of this process image in MB (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _ChildrenRss:
    """Samples the summed RSS of this process's children (Spark's JVM) in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        import threading

        self.every, self.peak_mb = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(self.every)

    def __enter__(self) -> _ChildrenRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(engine: str, data: str, as_of: date, out: Path, memory_limit: str | None) -> dict:
    """Run one engine in this (fresh) process; return its time and peak RSS."""
    import glob

    import duckdb

    sys.path.insert(0, str(ROOT))
    from features.definitions import feature_set
    from features.engine import features_sql

    files = sorted(glob.glob(data))
    source = "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    rss_imports = _rss_mb()
    extra_rss = 0.0
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{out.parent / 'duckdb_tmp'}'")
        con.execute("SET preserve_insertion_order = false")
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    if engine == "pandas":
        frame = pandas_features(files, as_of)
    elif engine == "floor":
        frame = con.execute(floor_sql(source, as_of)).df()
    elif engine in ("duckdb", "duckdb_crm_v1"):
        fs = feature_set("churn_v1" if engine == "duckdb" else "crm_v1")
        frame = con.execute(features_sql(source, as_of, fs)).df()
    elif engine == "duckdb_copy":  # out-of-core: the snapshot goes straight to parquet
        sql = features_sql(source, as_of, feature_set("churn_v1"))
        con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
        frame = None
    elif engine == "spark":  # peak RSS = this process + the JVM (sampled)
        from features.spark import compute_features_spark, local_spark_session

        with _ChildrenRss() as jvm:
            spark = local_spark_session("local[2]", "patron-bench")
            t0, cpu0 = time.perf_counter(), _cpu_seconds()  # without the JVM start
            # to pandas, as the in-process engines return theirs (the same work measured)
            fs = feature_set("churn_v1")
            frame = compute_features_spark(spark, files, as_of, fs).toPandas()
            seconds = time.perf_counter() - t0
            spark.stop()
        extra_rss = jvm.peak_mb
    else:
        raise ValueError(f"unknown engine {engine!r}")
    if engine != "spark":
        seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0  # this process only (not Spark's JVM)
    rows = (
        len(frame)
        if frame is not None
        else con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    )
    if frame is not None:
        frame.to_parquet(out)
    return {
        "engine": engine,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": _rss_mb() + extra_rss,
        "rss_after_imports_mb": rss_imports,
        "rows": int(rows),
    }


# --------------------------------------------------------------------------- driver


def run_engine(
    engine: str, data: str, as_of: date, out: Path, memory_limit: str | None = None, nice: int = 0
) -> dict:
    """Run ``worker`` in a fresh subprocess (its own peak RSS); also time the whole process."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        engine,
        "--data",
        data,
        "--as-of",
        as_of.isoformat(),
        "--out",
        str(out),
    ]
    if memory_limit:
        cmd += ["--memory-limit", memory_limit]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    result["load_average_after"] = os.getloadavg()[0]
    return result


def generate_in_subprocess(n_rows: int, out_dir: Path, seed: int) -> str:
    """Generate data in a child process, so this driver stays small (children inherit nothing)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--generate",
        str(n_rows),
        "--out",
        str(out_dir),
        "--seed",
        str(seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"data generation failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def compare(paths: dict[str, Path]) -> dict[str, float]:
    """Largest relative difference of each engine's core features from the DuckDB path's."""
    import pandas as pd

    ref = pd.read_parquet(paths["duckdb"])[["customer_id", *CORE]]
    out = {}
    for name, path in paths.items():
        other = pd.read_parquet(path)[["customer_id", *CORE]]
        if other["customer_id"].tolist() != ref["customer_id"].tolist():
            raise AssertionError(f"{name}: different customers than the DuckDB path")
        worst = 0.0
        for col in CORE:
            a = ref[col].to_numpy(np.float64)
            b = other[col].to_numpy(np.float64)
            if not np.allclose(a, b, rtol=1e-9, atol=1e-9):
                raise AssertionError(f"{name}: {col} differs from the DuckDB path")
            worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))))
        out[name] = worst
    return out


def _best(runs: list[dict]) -> dict:
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "all_seconds": [round(r["seconds"], 3) for r in runs],
        "median_seconds": float(np.median([r["seconds"] for r in runs])),
        "min_cpu_seconds": min(r["cpu_seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    """Benchmark entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--big-transactions", type=int, default=100_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per engine")
    parser.add_argument("--skip-100m", action="store_true", help="skip the out-of-core step")
    parser.add_argument("--memory-limit", default="6GB", help="DuckDB limit of the big step")
    parser.add_argument("--spark", action="store_true", help="also time Spark local[2]")
    parser.add_argument("--crm", action="store_true", help="also time crm_v1 on DuckDB")
    parser.add_argument("--work-dir", type=Path, default=None, help="data folder (deleted after)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "features.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the engine processes; on a shared machine a negative "
        "value (root only) shields the timings from other load",
    )
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--as-of", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        print(generate_transactions(args.generate, args.out, seed=args.seed))
        return 0
    if args.worker:
        print(
            json.dumps(
                worker(
                    args.worker,
                    args.data,
                    date.fromisoformat(args.as_of),
                    args.out,
                    args.memory_limit if args.worker == "duckdb_copy" else None,
                )
            )
        )
        return 0

    base = args.work_dir or Path(os.environ.get("PATRON_HOME") or tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="patron-bench-features-", dir=base))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    import duckdb
    import pandas as pd

    n = args.transactions
    load_start = os.getloadavg()[0]
    print(f"generating {n:,} transactions in {work} ...", flush=True)
    t0 = time.perf_counter()
    data = generate_in_subprocess(n, work / "tx", args.seed)
    gen_seconds = time.perf_counter() - t0
    engines = ["duckdb", "pandas", "floor"] + (["duckdb_crm_v1"] if args.crm else [])
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    outs = {e: work / f"{e}.parquet" for e in engines}
    for i in range(args.repeat):  # interleaved, so load from elsewhere hits every engine alike
        for e in engines:
            runs[e].append(run_engine(e, data, AS_OF, outs[e], nice=args.nice))
            print(
                f"  run {i + 1}/{args.repeat} {e:14s} {runs[e][-1]['seconds']:7.2f} s "
                f"{runs[e][-1]['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
    if args.spark:
        runs["spark"] = [run_engine("spark", data, AS_OF, work / "spark.parquet", nice=args.nice)]
        outs["spark"] = work / "spark.parquet"
    best = {e: _best(r) for e, r in runs.items()}
    diffs = compare({e: outs[e] for e in ("duckdb", "pandas", "floor", "spark") if e in outs})
    t_duck, t_pd, t_floor = (best[e]["seconds"] for e in ("duckdb", "pandas", "floor"))
    median = {e: b["median_seconds"] for e, b in best.items()}
    result: dict[str, Any] = {
        "transactions": n,
        "customers": best["duckdb"]["rows"],
        "as_of": AS_OF.isoformat(),
        "feature_set": "churn_v1",
        "generate_seconds": gen_seconds,
        "speedup_vs_pandas": t_pd / t_duck,
        "ratio_to_floor": t_duck / t_floor,
        "speedup_vs_pandas_median": median["pandas"] / median["duckdb"],
        "ratio_to_floor_median": median["duckdb"] / median["floor"],
        "raw_seconds": {e: b["seconds"] for e, b in best.items()},
        "cpu_speedup_vs_pandas": (
            best["pandas"]["min_cpu_seconds"] / best["duckdb"]["min_cpu_seconds"]
        ),
        "load_average_1min_at_start": load_start,
        "nice": args.nice,
        "max_rel_diff_vs_duckdb": diffs,
        "engines": best,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "pandas": pd.__version__,
        },
        "goals": {
            "speedup_vs_pandas": ">= 4",
            "ratio_to_floor": "<= 1.5",
            "peak_rss_mb_100m": "< 8192",
        },
    }
    shutil.rmtree(work / "tx")
    if not args.skip_100m:
        big = args.big_transactions
        print(f"generating {big:,} transactions ...", flush=True)
        t0 = time.perf_counter()
        big_data = generate_in_subprocess(big, work / "tx_big", args.seed + 1)
        big_gen = time.perf_counter() - t0
        print(f"  {big_gen:.0f} s; building the snapshot out of core ...", flush=True)
        snap = run_engine(
            "duckdb_copy",
            big_data,
            AS_OF,
            work / "snapshot_big.parquet",
            memory_limit=args.memory_limit,
            nice=args.nice,
        )
        result.update(
            {
                "transactions_100m": big,
                "peak_rss_mb_100m": snap["peak_rss_mb"],
                "seconds_100m": snap["seconds"],
                "customers_100m": snap["rows"],
                "memory_limit_100m": args.memory_limit,
                "generate_seconds_100m": big_gen,
            }
        )
        shutil.rmtree(work / "tx_big")
    _print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


def _print_table(r: dict[str, Any]) -> None:
    print(
        f"\nchurn_v1 core ({len(CORE)} features), {r['transactions']:,} transactions -> "
        f"{r['customers']:,} customers, best of {len(r['engines']['duckdb']['all_seconds'])}"
    )
    print(
        f"{'engine':16s} {'best s':>7s} {'median s':>9s} {'CPU s':>7s} {'peak RSS MB':>12s} "
        f"{'max rel diff':>13s}"
    )
    for name, e in r["engines"].items():
        diff = r["max_rel_diff_vs_duckdb"].get(name)
        print(
            f"{name:16s} {e['seconds']:7.2f} {e['median_seconds']:9.2f} "
            f"{e['min_cpu_seconds']:7.2f} {e['peak_rss_mb']:12.0f} "
            f"{'' if diff is None else f'{diff:13.1e}'}"
        )
    print(
        f"speed-up vs pandas {r['speedup_vs_pandas']:.2f} (goal >= 4; medians "
        f"{r['speedup_vs_pandas_median']:.2f}, CPU time {r['cpu_speedup_vs_pandas']:.2f}); "
        f"ratio to floor {r['ratio_to_floor']:.2f} (goal <= 1.5; medians "
        f"{r['ratio_to_floor_median']:.2f}); load average at start "
        f"{r['load_average_1min_at_start']:.1f}"
    )
    if "peak_rss_mb_100m" in r:
        print(
            f"{r['transactions_100m']:,} transactions out of core (memory_limit "
            f"{r['memory_limit_100m']}): {r['seconds_100m']:.1f} s, peak RSS "
            f"{r['peak_rss_mb_100m']:.0f} MB (goal < 8192), {r['customers_100m']:,} customers"
        )


if __name__ == "__main__":
    sys.exit(main())
