"""The value x risk grid's churn risk: BG/NBD's 1 - P(alive) against a trained churn model's
probability, graded against what happened and against the generator's truth.

Run ``python bench/value_risk.py`` (about 3 minutes on 2 cores; ``--customers`` changes the
synthetic base, 20 000 by default as in the dataset config; ``--keep`` keeps the scratch state).
In a fresh temporary state folder it runs what a user would: ``patron generate`` / ``ingest`` /
``train -c experiments/churn/synthetic.yaml`` (the champion is registered), then the value job of
``experiments/value/synthetic.yaml`` at the churn model's test cutoff twice: with the default risk
(BG/NBD) and with ``risk: {model: churn-synthetic}``. The cutoff is the test cutoff, so the churn
model never saw the label window it is graded on. Both risks of the same customers (those active in
the year before the cutoff, the churn label's population) are graded on:

* ROC AUC against the realised label (no order in the 90 days after the cutoff), with a paired
  bootstrap 90 % interval of the difference (model - BG/NBD);
* Spearman rank correlation with the generator's true churn probability at the cutoff;
* the let-go decision: customers whose worthwhile retention spend differs in sign of "a contact
  pays", i.e. how many customers the risk source moves in or out of the let-go group.

Prints a table and writes ``bench/results/value_risk.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
PATRON = str(Path(sys.executable).with_name("patron"))


def run(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run([PATRON, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"patron {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr}")


def paired_auc_ci(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 400, seed: int = 0
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) on the same rows, with a paired bootstrap 90 % interval."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        diffs.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    point = roc_auc_score(y, a) - roc_auc_score(y, b)
    return float(point), float(np.quantile(diffs, 0.05)), float(np.quantile(diffs, 0.95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "value_risk.json")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="value-risk-"))
    env = {**os.environ, "PATRON_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    try:
        churn = yaml.safe_load((ROOT / "experiments" / "churn" / "synthetic.yaml").read_text())
        as_of = str(churn["cutoffs"]["test"])
        horizon, lookback = int(churn["horizon_days"]), int(churn["lookback_days"])
        run("generate", "--dataset", "synthetic", "--customers", str(args.customers), env=env)
        run("ingest", "--dataset", "synthetic", env=env)
        run("train", "--config", "experiments/churn/synthetic.yaml", env=env)
        job = yaml.safe_load((ROOT / "experiments" / "value" / "synthetic.yaml").read_text())
        job["dataset"] = "synthetic"
        results: dict[str, pd.DataFrame] = {}
        for source, risk in (("bgnbd", None), ("model", {"model": churn["registered_model"]})):
            config = home / f"value_{source}.yaml"
            config.write_text(yaml.safe_dump({**job, **({"risk": risk} if risk else {})}))
            run("value", "-c", str(config), "--as-of", as_of, "--no-segment-report", env=env)
            folder = home / "value" / "synthetic" / f"as_of={as_of}"
            results[source] = pd.read_parquet(folder / "customer_value.parquet")
        truth = pd.read_parquet(home / "synthetic" / "synthetic" / "truth_churn.parquet")
        truth = truth[pd.to_datetime(truth["as_of"]) == pd.Timestamp(as_of)]
        tx = pd.read_parquet(
            home / "data" / "synthetic" / "transactions.parquet",
            columns=["customer_id", "ts"],
        )
        tx["day"] = pd.to_datetime(tx["ts"]).dt.normalize()
        cut = pd.Timestamp(as_of)
        active = tx[(tx["day"] > cut - pd.Timedelta(days=lookback)) & (tx["day"] <= cut)]
        after = tx[(tx["day"] > cut) & (tx["day"] <= cut + pd.Timedelta(days=horizon))]
        rows = results["bgnbd"][["customer_id", "churn_risk", "let_go"]].merge(
            results["model"][["customer_id", "churn_risk", "let_go"]],
            on="customer_id",
            suffixes=("_bgnbd", "_model"),
        )
        rows = rows[rows["customer_id"].isin(set(active["customer_id"].astype(str)))]
        rows["label"] = (~rows["customer_id"].isin(set(after["customer_id"].astype(str)))).astype(
            int
        )
        rows = rows.merge(truth[["customer_id", "p_churn"]], on="customer_id", how="left")
        y = rows["label"].to_numpy()
        a, b = rows["churn_risk_model"].to_numpy(), rows["churn_risk_bgnbd"].to_numpy()
        diff, lo, hi = paired_auc_ci(y, a, b)
        known = rows["p_churn"].notna()
        out: dict[str, Any] = {
            "machine": platform.platform(),
            "customers": args.customers,
            "as_of": as_of,
            "graded_customers": int(len(rows)),
            "churn_rate": float(y.mean()),
            "auc_model": float(roc_auc_score(y, a)),
            "auc_bgnbd": float(roc_auc_score(y, b)),
            "auc_diff": diff,
            "auc_diff_ci90": [lo, hi],
            "spearman_truth_model": float(spearmanr(a[known], rows.loc[known, "p_churn"])[0]),
            "spearman_truth_bgnbd": float(spearmanr(b[known], rows.loc[known, "p_churn"])[0]),
            "let_go_bgnbd": int(rows["let_go_bgnbd"].sum()),
            "let_go_model": int(rows["let_go_model"].sum()),
            "let_go_changed": int((rows["let_go_bgnbd"] != rows["let_go_model"]).sum()),
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(f"value x risk grid on synthetic ({args.customers:,} customers), cutoff {as_of}")
    print(f"graded: {out['graded_customers']:,} customers active in the year before the cutoff")
    print(f"{'risk source':<26}{'ROC AUC (realised)':>20}{'Spearman (truth)':>18}{'let go':>9}")
    for name, key in (("BG/NBD 1 - P(alive)", "bgnbd"), ("churn model P(churn)", "model")):
        print(
            f"{name:<26}{out[f'auc_{key}']:>20.4f}{out[f'spearman_truth_{key}']:>18.4f}"
            f"{out[f'let_go_{key}']:>9,}"
        )
    print(
        f"AUC model - BG/NBD: {diff:+.4f} [90 % CI {lo:+.4f}, {hi:+.4f}] (paired bootstrap); "
        f"let-go decision changed for {out['let_go_changed']:,} customers"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
