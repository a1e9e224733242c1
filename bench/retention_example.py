"""The retention example of issue 11, recomputed the right way: churn is not a response.

Run ``python bench/retention_example.py`` (about 4 minutes on 2 shared cores, most of it training;
``--customers`` changes the synthetic base, 20 000 by default as in the dataset config; ``--keep``
keeps the scratch state folder). In a fresh temporary state folder
the script runs the ``patron`` commands a user would (``generate``, ``ingest``, ``train`` for
``experiments/churn/synthetic.yaml`` and ``experiments/uplift/synthetic.yaml`` — the uplift of the
retention offer RET_01, learned from the past retention campaigns' control groups — and
``features`` for the two served snapshots), serves both models from one ``bentoml serve`` on a
free loopback port, and sends the same campaign (300 contacts, email, 0.5 per contact, 40 per
conversion, the default 10 % control group) several ways:

a. ``POST /target`` with the churn model and no ranking: the old docs' call, now a 400;
b. ``POST /target`` with the churn model and ``ranking: {basis: non_causal_score, reason}``:
   ranked by value at risk, ``expected_responses`` null, labelled non-causal; the sum of P(churn)
   over its contacted is what the old call reported as "expected responses";
c. ``POST /target`` with the uplift model of RET_01: incremental responses and profit;
d. ``POST /campaigns/plan`` with the same offer and channel, uplift basis (the planner's answer;
   its contacts budget counts the control group, so it is given what c selected);
e. ``POST /campaigns/plan`` with the churn model, non-causal basis (budget: what b selected).

Each call's contacted are then scored by both models (``POST /score``): the predicted incremental
responses of the churn-ranked list, and the overlap of the lists.

Beside them, the uplift model's own out-of-time figures from its MLflow run (test campaign
CMP_2024_06_RET): Qini, observed uplift at the top k, and, from the synthetic truth, the mean true
uplift at the top k and — from the logged test predictions — predicted against true incremental
responses among the model's top contacts. Prints a table and writes
``bench/results/retention_example.json``. The server is stopped (terminate, then kill) whatever
happens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USER_KEY = "retention-example-user-key"
ADMIN_KEY = "retention-example-admin-key"
CHURN_CONFIG = "experiments/churn/synthetic.yaml"
UPLIFT_CONFIG = "experiments/uplift/synthetic.yaml"
#: served by the alias every training run sets on the version it registered (champion moves
#: only when earned; the example is about these two runs)
ALIAS = "challenger"
OFFER = "RET_01"
CAMPAIGN_ID = "retention-example"
CONTACTS = 300
CHANNEL = "email"
COST_PER_CONTACT = 0.5
VALUE_PER_CONVERSION = 40.0
CONTROL_FRACTION = 0.1  # /target's default, said explicitly so the planner gets the same
NON_CAUSAL = {
    "basis": "non_causal_score",
    "reason": "retention example of issue 11: ranking by churn on purpose, to compare",
}


# --------------------------------------------------------------------------- set-up


def child_env(home: Path) -> dict[str, str]:
    """The environment of every child process: this state folder and nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env["PATRON_HOME"] = str(home)
    return env


def patron(args: list[str], home: Path, log_path: Path) -> float:
    """Run one ``patron`` command against ``home``; its seconds (its output goes to the log)."""
    exe = Path(sys.executable).with_name("patron")
    cmd = [str(exe), *args, "--home", str(home)]
    print(f"  patron {' '.join(args)}", flush=True)
    t = time.perf_counter()
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        done = subprocess.run(
            cmd, env=child_env(home), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"patron {' '.join(args)} exited with {done.returncode}:\n{tail}")
    return time.perf_counter() - t


def prepare(home: Path, customers: int, log_path: Path) -> dict[str, float]:
    """Generate, ingest, train both models and write the served snapshots; seconds per step."""
    steps = {
        "generate": ["generate", "--customers", str(customers)],
        "ingest": ["ingest"],
        "train_churn": ["train", "-c", CHURN_CONFIG],
        "train_uplift": ["train", "-c", UPLIFT_CONFIG],
        # the served snapshots at the last data date (training wrote them at its cutoffs only)
        "features_churn": ["features", "--feature-set", "churn_v1+context_v1"],
        "features_uplift": ["features", "--feature-set", "churn_v1"],
    }
    return {name: round(patron(args, home, log_path), 1) for name, args in steps.items()}


def trained_version(client: Any, registered_model: str) -> dict[str, Any]:
    """The version the alias points at, its run's metrics and whether it is also champion."""
    from mlflow.exceptions import MlflowException

    mv = client.get_model_version_by_alias(registered_model, ALIAS)
    try:
        champion = client.get_model_version_by_alias(registered_model, "champion").version
    except MlflowException:
        champion = None
    run = client.get_run(mv.run_id)
    return {
        "registered_model": registered_model,
        "version": str(mv.version),
        "is_champion": champion == mv.version,
        "run_id": mv.run_id,
        "metrics": dict(run.data.metrics),
        "params": dict(run.data.params),
    }


def uplift_test_figures(tracking_uri: str, run: dict[str, Any], contacts: int) -> dict[str, Any]:
    """The uplift run's out-of-time figures, and predicted vs true incremental responses among
    the model's top ``contacts`` of the test campaign (from the logged test predictions)."""
    import mlflow
    import numpy as np
    import pandas as pd

    m = run["metrics"]
    top_k = [float(k) for k in run["params"].get("top_k", "0.1,0.2,0.3").split(",")]
    out: dict[str, Any] = {
        "test_campaigns": run["params"].get("test_campaigns"),
        "train_campaigns": run["params"].get("train_campaigns"),
        "learner": run["params"].get("learner"),
        "qini": m.get("test_qini"),
        "qini_response_model": m.get("baseline_qini"),
        "qini_random": m.get("random_qini"),
        "qini_true_uplift": m.get("truth_qini"),
        "corr_true_uplift": m.get("test_corr_true_uplift"),
        "spearman_true_uplift": m.get("test_spearman_true_uplift"),
        "mean_true_uplift": m.get("truth_mean_true_uplift"),
        "top_k": {},
    }
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one small file, no bar
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run["run_id"],
            artifact_path="evaluation/test_predictions.parquet",
            dst_path=tmp,
            tracking_uri=tracking_uri,
        )
        preds = pd.read_parquet(path)
    n = len(preds)
    out["test_contacts"] = n
    out["test_treated"] = int(preds["treatment"].sum()) if "treatment" in preds else None
    order = np.argsort(-preds["uplift"].to_numpy(), kind="mergesort")
    has_truth = "true_uplift" in preds and preds["true_uplift"].notna().all()
    for k in top_k:
        key = f"{round(100 * k)}pct"
        size = math.ceil(k * n)
        top = preds.iloc[order[:size]]
        row = {
            "contacts": size,
            "observed_uplift": m.get(f"test_uplift_at_{key}"),
            "mean_predicted_uplift": float(top["uplift"].mean()),
            "mean_true_uplift": m.get(f"test_true_uplift_at_{key}"),
            "mean_true_uplift_best_possible": m.get(f"truth_true_uplift_at_{key}"),
        }
        out["top_k"][key] = row
    top = preds.iloc[order[: min(contacts, n)]]
    out[f"top_{contacts}"] = {
        "contacts": len(top),
        "predicted_incremental_responses": float(top["uplift"].sum()),
        "true_incremental_responses": float(top["true_uplift"].sum()) if has_truth else None,
        "true_incremental_responses_random": (
            float(preds["true_uplift"].mean() * len(top)) if has_truth else None
        ),
    }
    return out


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving_settings(home: Path, churn: str, uplift: str) -> dict[str, Any]:
    """$PATRON_SERVING: both models by alias; each scores the snapshot of the feature set it
    recorded; no polling (nothing moves during the run)."""
    return {
        "home": str(home),
        "models": {
            "churn": {"registered_model": churn, "alias": ALIAS, "dataset": "synthetic"},
            "uplift": {"registered_model": uplift, "alias": ALIAS, "dataset": "synthetic"},
        },
        "reload_interval_s": 0,
    }


def start_server(home: Path, settings: dict[str, Any], log_path: Path) -> tuple[Any, int]:
    """``bentoml serve`` of the Patron service on a free loopback port, one worker."""
    from serving.settings import AuthSettings

    env = child_env(home)
    env.update(
        PATRON_SERVING=json.dumps(settings),
        PATRON_API_KEYS=USER_KEY,
        PATRON_ADMIN_KEYS=ADMIN_KEY,
        BENTOML_CONFIG_OPTIONS="services.patron.workers=1",
    )
    AuthSettings.from_env(env).check_startable()
    port = free_port()
    from serving.lifecycle import own_bentoml_home, serve_command

    log = open(log_path, "ab")  # noqa: SIM115 - the child holds it; closed when it exits
    try:
        proc = subprocess.Popen(
            serve_command("127.0.0.1", port),
            env=own_bentoml_home(env, port),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers go with it on a kill
        )
    finally:
        log.close()
    return proc, port


def wait_ready(proc: Any, port: int, log_path: Path, timeout_s: float = 180.0) -> float:
    """Seconds until /readyz answers 200; raises if the server exits or time runs out."""
    import httpx

    t = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                return time.perf_counter() - t
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server not ready in {timeout_s:.0f} s")


def stop_server(proc: Any) -> int | None:
    """Terminate, wait, kill if it must; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group start_server made for this server
            proc.wait(timeout=10)
    return proc.returncode


# --------------------------------------------------------------------------- the calls


def target_body(model: str, ranking: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "campaign_id": CAMPAIGN_ID,
        "channel": CHANNEL,
        "model": model,
        "offer_id": OFFER,
        "budget": {"max_contacts": CONTACTS},
        "cost_per_contact": COST_PER_CONTACT,
        "value_per_conversion": VALUE_PER_CONVERSION,
        "control_fraction": CONTROL_FRACTION,
        "include_customers": True,
    }
    if ranking is not None:
        body["ranking"] = ranking
    return body


def plan_body(model: str, selected: int, ranking: dict[str, str] | None = None) -> dict[str, Any]:
    """The same campaign for the planner: one offer, one channel. The planner's contacts budget
    counts the selected, control included (what is contacted always fits), so it is set to what
    /target selected for its 300 contacts; the groups come from the same hash of the two ids."""
    offer: dict[str, Any] = {
        "id": OFFER.lower(),  # planner ids are lower-case names; the data's id beside
        "catalog_id": OFFER,
        "kind": "retention",
        "value": VALUE_PER_CONVERSION,
        "model": model,
    }
    campaign: dict[str, Any] = {
        "campaign_id": CAMPAIGN_ID,
        "offers": [offer],
        "channels": [{"name": CHANNEL, "cost_per_contact": COST_PER_CONTACT}],
        "budget": {"contacts": selected},
        "test_cell_fraction": 0.0,
        "control_fraction": CONTROL_FRACTION,
    }
    if ranking is not None:
        campaign["ranking"] = ranking
    return {"campaign": campaign, "selected_only": True, "max_rows": max(selected, 1)}


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    import httpx

    t = time.perf_counter()
    r = httpx.post(
        f"http://127.0.0.1:{port}{path}",
        json=body,
        headers={"Authorization": f"Bearer {USER_KEY}"},
        timeout=120,
    )
    return r.status_code, r.json(), time.perf_counter() - t


def target_record(answer: dict[str, Any]) -> dict[str, Any]:
    """What a /target answer says; the contacted ids (dropped before writing)."""
    s = answer["summary"]
    return {
        "registered_model": answer["registered_model"],
        "version": answer["version"],
        "score_kind": answer["score_kind"],
        "basis": answer["basis"],
        "warning": answer["warning"],
        "as_of": answer["as_of"],
        "summary": {k: v for k, v in s.items() if k != "excluded"},
        "excluded": s["excluded"],
        "contacted_ids": {c["customer_id"] for c in answer["customers"] if c["group"] != "control"},
    }


def plan_record(answer: dict[str, Any]) -> dict[str, Any]:
    """What a plan says (solver details and constraints left out); the contacted ids."""
    s = answer["summary"]
    return {
        "inputs": answer["inputs"],
        "summary": {k: v for k, v in s.items() if k not in ("solver", "constraints")},
        "solver_method": s["solver"].get("method"),
        "excluded": answer["excluded"],
        "check": answer["check"],
        "contacted_ids": {
            r["customer_id"] for r in answer["customers"] if r["group"] in ("test", "rollout")
        },
    }


def call_all(port: int) -> dict[str, dict[str, Any]]:
    """The five calls in order (the plans' budgets are what /target selected), then each
    targeted list scored by the other model with POST /score."""
    out: dict[str, dict[str, Any]] = {}

    def call(name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer, seconds = post(port, path, body)
        record: dict[str, Any] = {"request": {"path": path, "body": body}, "status": status}
        if status == 200:
            record.update(target_record(answer) if path == "/target" else plan_record(answer))
        else:
            record["error"] = answer
        record["seconds"] = round(seconds, 3)
        out[name] = record
        return record

    def selected(r: dict[str, Any]) -> int:
        return int(r["summary"]["selected"]) if r["status"] == 200 else CONTACTS

    call("a_target_churn", "/target", target_body("churn"))
    b = call("b_target_churn_non_causal", "/target", target_body("churn", NON_CAUSAL))
    c = call("c_target_uplift", "/target", target_body("uplift"))
    call("d_plan_uplift", "/campaigns/plan", plan_body("uplift", selected(c)))
    call("e_plan_churn_non_causal", "/campaigns/plan", plan_body("churn", selected(b), NON_CAUSAL))
    for r in out.values():
        if "contacted_ids" in r:
            for model in ("uplift", "churn"):
                r[f"sum_{model}_score_contacted"] = score_sum(port, model, r["contacted_ids"])
    return out


def score_sum(port: int, model: str, ids: set[str]) -> float | None:
    """Sum of a served model's scores over ``ids`` (POST /score); None when it fails."""
    if not ids:
        return 0.0
    status, answer, _ = post(
        port, "/score", {"customer_ids": sorted(ids), "model": model, "reasons": False}
    )
    if status != 200 or answer["unknown"]:
        return None
    return float(sum(s["score"] for s in answer["scores"]))


def overlaps(calls: dict[str, dict[str, Any]]) -> dict[str, int | None]:
    """Customers contacted by both of two calls; pops the id sets."""
    ids = {name: r.pop("contacted_ids", None) for name, r in calls.items()}
    pairs = {
        "b_and_c": ("b_target_churn_non_causal", "c_target_uplift"),
        "c_and_d": ("c_target_uplift", "d_plan_uplift"),
        "b_and_e": ("b_target_churn_non_causal", "e_plan_churn_non_causal"),
    }
    return {
        key: None if ids[x] is None or ids[y] is None else len(ids[x] & ids[y])
        for key, (x, y) in pairs.items()
    }


# --------------------------------------------------------------------------- report


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def call_row(label: str, r: dict[str, Any]) -> tuple[str, ...]:
    """call, status, contacted, expected responses, expected profit, basis."""
    if r["status"] != 200:
        refused = f"refused, field {r['error'].get('field')}"
        return (label, str(r["status"]), "-", "-", "-", refused)
    s = r["summary"]
    if "score_kind" in r:  # /target
        responses, profit = s["expected_responses"], s["expected_profit"]
        basis = f"{r['basis']} [{r['score_kind']}]"
    else:  # /campaigns/plan
        responses = s["expected_incremental_responses_contacted"]
        profit = s["expected_incremental_profit_contacted"]
        if profit is None:
            profit = s["non_causal_ranking_value_contacted"]
        basis = f"{s['basis']} [{r['inputs'][0]['estimate']}]"
    return (label, str(r["status"]), str(s["contacted"]), fmt(responses), fmt(profit), basis)


def table(calls: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    labels = {
        "a_target_churn": "a. /target churn, no ranking (old docs)",
        "b_target_churn_non_causal": "b. /target churn, non_causal_score",
        "c_target_uplift": f"c. /target uplift ({OFFER})",
        "d_plan_uplift": f"d. /campaigns/plan uplift ({OFFER}, {CHANNEL})",
        "e_plan_churn_non_causal": "e. /campaigns/plan churn, non_causal_score",
    }
    header = ("call", "status", "contacted", "expected responses", "expected profit", "basis")
    return [header, *(call_row(label, calls[name]) for name, label in labels.items())]


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_report(result: dict[str, Any]) -> None:
    calls = result["calls"]
    print()
    print_table(table(calls))
    a, b, c = calls["a_target_churn"], calls["b_target_churn_non_causal"], calls["c_target_uplift"]
    if a["status"] != 200:
        print(f"\na. {a['status']}: {a['error'].get('error')}")
    if b["status"] == 200:
        print(f"b. warning: {b['warning']}")
    print("\nthe contacted of each call, scored by both models (POST /score):")
    print("  call  sum P(churn)  sum predicted uplift (incremental responses)")
    for name, r in calls.items():
        if r["status"] == 200:
            print(
                f"  {name[0]}.    {fmt(r['sum_churn_score_contacted']):>12}  "
                f"{fmt(r['sum_uplift_score_contacted']):>12}"
            )
    print(
        "  (b's sum P(churn) is what the old call reported as expected responses; its sum of "
        "predicted uplift is what ranking by churn would bring)"
    )
    print(f"contacted by both: {result['contacted_by_both']}")
    if c["status"] == 200:
        print(f"c. as of {c['as_of']}; excluded {c['excluded']}")

    t = result["uplift_test_period"]
    print(
        f"\nuplift model (run {result['models']['uplift']['run_id'][:8]}), test campaign "
        f"{t['test_campaigns']}, {t['test_contacts']:,} contacts, out of time:"
    )
    print(
        f"  Qini {fmt(t['qini'], 4)} (response model {fmt(t['qini_response_model'], 4)}, random "
        f"{fmt(t['qini_random'], 4)}, ranking by the true uplift {fmt(t['qini_true_uplift'], 4)})"
    )
    print("  top k   contacts  observed uplift  mean predicted  mean true  best possible")
    for key, r in t["top_k"].items():
        print(
            f"  {key:>6}  {r['contacts']:>8,}  {fmt(r['observed_uplift'], 4):>15}  "
            f"{fmt(r['mean_predicted_uplift'], 4):>14}  {fmt(r['mean_true_uplift'], 4):>9}  "
            f"{fmt(r['mean_true_uplift_best_possible'], 4):>13}"
        )
    top = t[f"top_{CONTACTS}"]
    print(
        f"  its top {top['contacts']} by predicted uplift: predicted "
        f"{fmt(top['predicted_incremental_responses'])} incremental responses, true "
        f"{fmt(top['true_incremental_responses'])} (any {top['contacts']} at random: "
        f"{fmt(top['true_incremental_responses_random'])})"
    )
    d = result["details"]
    print(f"\nwall {d['wall_seconds']:.0f} s; steps (s) {d['seconds']}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000, help="synthetic customers")
    parser.add_argument("--keep", action="store_true", help="keep the scratch state folder")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "results" / "retention_example.json"
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="patron-bench-retention-"))
    home = work / "home"
    log_path = work / "commands.log"
    proc = None
    try:
        print(f"fresh state folder {home}; command output in {log_path}", flush=True)
        timings = prepare(home, args.customers, log_path)

        from mlflow.tracking import MlflowClient

        from features.store import StateDirs
        from training.config import load_experiment

        state = StateDirs(home.resolve())  # its own SQLite store, whatever the environment says
        client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
        churn_name = load_experiment(ROOT / CHURN_CONFIG).registered_model
        uplift_name = load_experiment(ROOT / UPLIFT_CONFIG).registered_model
        churn_run = trained_version(client, churn_name)
        uplift_run = trained_version(client, uplift_name)
        uplift_test = uplift_test_figures(state.tracking_uri, uplift_run, CONTACTS)

        settings = serving_settings(home, churn_name, uplift_name)
        print("  bentoml serve serving.service:Patron (churn + uplift)", flush=True)
        proc, port = start_server(home, settings, work / "server.log")
        timings["server_ready"] = round(wait_ready(proc, port, work / "server.log"), 1)
        t = time.perf_counter()
        calls = call_all(port)
        timings["calls"] = round(time.perf_counter() - t, 1)
    finally:
        exit_code = stop_server(proc) if proc is not None else None
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    churn_metrics = churn_run.pop("metrics")
    churn_run["test_metrics"] = {
        k: v for k, v in churn_metrics.items() if k in ("test_roc_auc", "test_pr_auc", "test_brier")
    }
    uplift_run.pop("metrics")
    for run in (churn_run, uplift_run):
        run.pop("params")
    result = {
        "campaign": {
            "offer_id": OFFER,
            "channel": CHANNEL,
            "max_contacts": CONTACTS,
            "cost_per_contact": COST_PER_CONTACT,
            "value_per_conversion": VALUE_PER_CONVERSION,
            "control_fraction": CONTROL_FRACTION,
        },
        "calls": calls,
        "contacted_by_both": overlaps(calls),
        "models": {"churn": churn_run, "uplift": uplift_run},
        "uplift_test_period": uplift_test,
        "details": {
            "customers": args.customers,
            "commands": [
                f"patron generate --customers {args.customers}",
                "patron ingest",
                f"patron train -c {CHURN_CONFIG}",
                f"patron train -c {UPLIFT_CONFIG}",
                "patron features --feature-set churn_v1+context_v1",
                "patron features --feature-set churn_v1",
                f"bentoml serve serving.service:Patron (churn + uplift by alias {ALIAS})",
            ],
            "seconds": timings,
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "server_exit_code": exit_code,
            "load_average_1m_at_end": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    print_report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
