"""The ``patron`` command: thin Typer commands over plain functions."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Patron: CRM modelling — features, models, scoring.", no_args_is_help=True)
console = Console()

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="state folder (default $PATRON_HOME or ~/.patron)")
]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="dataset name (experiments/datasets) or YAML path")
]


def _state(home: Path | None):
    from features.store import StateDirs

    return StateDirs.resolve(home)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )


@app.command()
def generate(
    dataset: DatasetOpt = "synthetic",
    customers: Annotated[int | None, typer.Option(help="override n_customers")] = None,
    seed: Annotated[int | None, typer.Option(help="override the seed")] = None,
    home: HomeOpt = None,
) -> None:
    """Generate the synthetic data of a dataset config that has a `synthetic` block."""
    from features.sources import load_dataset

    state = _state(home)
    cfg = load_dataset(dataset)
    out = _generate(cfg, state, customers, seed)
    console.print(f"synthetic data written to [bold]{out}[/bold]")


def _generate(cfg: Any, state: Any, customers: int | None = None, seed: int | None = None) -> Path:
    from features.synthetic import SyntheticConfig
    from features.synthetic import generate as generate_data

    if cfg.synthetic is None:
        raise typer.BadParameter(
            f"dataset {cfg.name!r} has no `synthetic` block", param_hint="--dataset"
        )
    params = dict(cfg.synthetic)
    if customers is not None:
        params["n_customers"] = customers
    if seed is not None:
        params["seed"] = seed
    syn = SyntheticConfig.model_validate(params)
    out = state.synthetic(cfg.name)
    with _progress() as progress:
        task = progress.add_task(f"generating {syn.n_customers:,} customers", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, total=total, completed=done)

        counts = generate_data(syn, out, progress=tick)
    console.print(", ".join(f"{k}: {v:,}" for k, v in counts.items()))
    return out


def _ingest(cfg: Any, state: Any) -> Any:
    from features.sources import ingest as ingest_dataset

    with _progress() as progress:
        task = progress.add_task(f"ingesting {cfg.name}", total=len(cfg.tables))

        def step(table: str) -> None:
            progress.update(task, description=f"ingesting {cfg.name}.{table}", advance=0)

        report = ingest_dataset(cfg, state, progress=step)
        progress.update(task, completed=len(cfg.tables))
    table = Table(title=f"ingest {cfg.name}")
    for col in ("table", "read", "accepted", "quarantined", "reason", "rows"):
        table.add_column(
            col, justify="right" if col in ("read", "accepted", "quarantined", "rows") else "left"
        )
    for name, t in report.tables.items():
        reasons = list(t.quarantined_by_reason.items()) or [("", 0)]
        for i, (reason, n) in enumerate(reasons):
            first = i == 0
            table.add_row(
                name if first else "",
                f"{t.read:,}" if first else "",
                f"{t.accepted:,}" if first else "",
                f"{t.quarantined:,}" if first else "",
                reason,
                f"{n:,}" if reason else "",
            )
    console.print(table)
    console.print(
        "read = accepted + quarantined holds for every table; quarantined rows are in "
        f"{state.quarantine(cfg.name)}"
    )
    return report


@app.command()
def ingest(dataset: DatasetOpt = "synthetic", home: HomeOpt = None) -> None:
    """Validate a dataset's raw files into canonical tables; rejected rows go to quarantine."""
    from features.sources import load_dataset

    _ingest(load_dataset(dataset), _state(home))


def _snapshot(dataset_name: str, feature_set_name: str, as_of: date | None, state: Any) -> Path:
    from features.build import data_date_range, transactions_source, write_snapshot
    from features.definitions import feature_set
    from features.sources import connect

    con = connect(state)
    try:
        if as_of is None:
            as_of = data_date_range(con, transactions_source(state, dataset_name))[1]
        return write_snapshot(con, state, dataset_name, feature_set(feature_set_name), as_of)
    finally:
        con.close()


@app.command()
def features(
    dataset: DatasetOpt = "synthetic",
    feature_set: Annotated[str, typer.Option(help="feature set to build")] = "churn_v1",
    as_of: Annotated[
        str | None, typer.Option(help="cutoff date YYYY-MM-DD (default: last data date)")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Write the point-in-time feature snapshot of a dataset at a cutoff."""
    from features.sources import load_dataset

    state = _state(home)
    cfg = load_dataset(dataset)
    cutoff = _date(as_of, "--as-of")
    path = _snapshot(cfg.name, feature_set, cutoff, state)
    console.print(f"snapshot written to [bold]{path}[/bold]")


def print_result(cfg: Any, result: Any) -> None:
    """The out-of-time metrics of model and baseline as a table."""
    where = (
        f"out-of-time test at {cfg.cutoffs.test}" if cfg.cutoffs else f"{cfg.split.kind} test split"
    )
    table = Table(title=f"{cfg.name}: {where} ({int(result.metrics['n']):,} customers)")
    table.add_column("metric")
    table.add_column("XGBoost", justify="right")
    table.add_column(f"{result.baseline_name} baseline", justify="right")
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile"):
        table.add_row(key, f"{result.metrics[key]:.4f}", f"{result.baseline_metrics[key]:.4f}")
    console.print(table)
    calib = result.calibration
    how = f"{calib.method} ({calib.rule})" if calib else "none"
    console.print(f"grade [bold]{result.grade}[/bold] against the baseline; calibration: {how}")


def _dispatch(cfg: Any) -> Any:
    """The training job of the experiment's family."""
    if cfg.family == "clv":
        from training.clv import run_clv_training

        return run_clv_training
    if cfg.family == "nbo":
        from training.nbo import run_nbo_training

        return run_nbo_training
    if cfg.family == "uplift":
        from training.uplift import run_uplift_training

        return run_uplift_training
    from training.train import run_training

    return run_training


def print_metrics(title: str, result: Any) -> None:
    """Model and baseline metrics side by side (any family)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"{result.baseline_name} baseline", justify="right")
    for key, value in result.metrics.items():
        if key in result.baseline_metrics and key != "n":
            table.add_row(key, f"{value:.4f}", f"{result.baseline_metrics[key]:.4f}")
    console.print(table)
    console.print(f"grade [bold]{result.grade}[/bold] against the baseline")


def _train(config: Path, state: Any) -> tuple[Any, dict[str, Any]]:
    from training.config import load_experiment

    cfg = load_experiment(config)
    job = _dispatch(cfg)
    with _progress() as progress:
        task = progress.add_task(f"training {cfg.name}", total=3)

        def step(stage: str) -> None:
            progress.update(task, description=f"training {cfg.name}: {stage}", advance=1)

        result, logged = job(cfg, state, progress=step)
    if cfg.family in ("churn", "propensity", "labelled"):
        print_result(cfg, result)
    else:
        print_metrics(f"{cfg.name}: out-of-time test", result)
    verdict = "promoted to champion" if logged["champion"] else "not promoted"
    console.print(
        f"registered [bold]{logged['registered_model']}[/bold] version {logged['version']} "
        f"as challenger, {verdict}: {logged['decision']['reason']}; MLflow run {logged['run_id']}"
    )
    return cfg, logged


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML")],
    home: HomeOpt = None,
) -> None:
    """Train on stacked cutoffs, test out of time, log to MLflow, register, maybe promote."""
    _train(config, _state(home))


@app.command()
def tune(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML")],
    trials: Annotated[int | None, typer.Option(help="override tuning.n_trials")] = None,
    home: HomeOpt = None,
) -> None:
    """Optuna search on the validation cutoff (nested MLflow runs), then the final tuned fit."""
    from training.config import load_experiment
    from training.tune import run_tuning

    state = _state(home)
    cfg = load_experiment(config)
    with _progress() as progress:
        task = progress.add_task(f"tuning {cfg.name}", total=trials or cfg.tuning.n_trials)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = run_tuning(cfg, state, trials, progress=tick)
    console.print(
        f"{result.n_trials} trials ({result.n_pruned} pruned): validation ROC AUC "
        f"{result.best_valid_auc:.4f} tuned vs {result.default_valid_auc:.4f} with the config's "
        f"parameters; best {result.best_params}"
    )
    print_result(cfg, result.tuned)
    logged = result.tuned_logged or {}
    console.print(
        f"registered {logged.get('registered_model')} version {logged.get('version')}: "
        f"{(logged.get('decision') or {}).get('reason')}"
    )


report_app = typer.Typer(help="HTML reports for analysts.", no_args_is_help=True)
customers_app = typer.Typer(
    help="Customer records: duplicates and households.", no_args_is_help=True
)
app.add_typer(report_app, name="report")
app.add_typer(customers_app, name="customers")


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=name) from exc


@app.command()
def segments(
    dataset: DatasetOpt = "synthetic",
    as_of: Annotated[str | None, typer.Option(help="cutoff YYYY-MM-DD (default: last)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder")] = None,
    home: HomeOpt = None,
) -> None:
    """Per-customer segments (RFM, Pareto ABC, pyramid, lifecycle, clusters) and a summary."""
    from features.segments_report import run_segments
    from features.sources import load_dataset

    state = _state(home)
    result = run_segments(state, load_dataset(dataset).name, _date(as_of, "--as-of"), None, out)
    import pandas as pd

    frame = pd.read_csv(result["summary"])
    table = Table(title=f"segments of {dataset} at {result['as_of']}")
    for col in frame.columns:
        table.add_column(str(col))
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(f"written: {result['segments']}, chart {result['chart']}")


@report_app.command("segments")
def report_segments(
    dataset: DatasetOpt = "synthetic",
    as_of: Annotated[str | None, typer.Option(help="cutoff YYYY-MM-DD (default: last)")] = None,
    previous_as_of: Annotated[
        str | None, typer.Option(help="earlier cutoff for the lifecycle flow (default: -90 days)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write")] = None,
    home: HomeOpt = None,
) -> None:
    """An HTML page: segment sizes and revenue, Pareto curve, RFM heat map, lifecycle flow."""
    from features.segments_report import run_segments_report
    from features.sources import load_dataset

    path = run_segments_report(
        _state(home),
        load_dataset(dataset).name,
        _date(as_of, "--as-of"),
        _date(previous_as_of, "--previous-as-of"),
        None,
        out,
    )
    console.print(f"segment report written to [bold]{path}[/bold]")


@customers_app.command("link")
def customers_link(dataset: DatasetOpt = "synthetic", home: HomeOpt = None) -> None:
    """Standardise customer records; write a reviewable duplicate merge map and households."""
    import pandas as pd

    from features.build import write_customer_links
    from features.sources import load_dataset

    paths = write_customer_links(_state(home), load_dataset(dataset).name)
    merge_map = pd.read_parquet(paths["merge_map"])
    households = pd.read_parquet(paths["households"])
    merged = int((merge_map["customer_id"] != merge_map["master_id"]).sum())
    multi = int((households["household_size"] > 1).sum())
    console.print(
        f"{len(merge_map):,} customer records: {merged:,} duplicates mapped to a master id; "
        f"{households['household_id'].nunique():,} households ({multi:,} customers share one)"
    )
    console.print(f"merge map: {paths['merge_map']}\nhouseholds: {paths['households']}")


@app.command()
def compare(
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="MLflow experiment (repeatable)")
    ] = None,
    run: Annotated[
        list[str] | None, typer.Option("--run", "-r", help="run id (repeatable)")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE tag filter (repeatable)")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="also write an HTML page")] = None,
    home: HomeOpt = None,
) -> None:
    """Runs side by side: params, data window, metrics against the champion, AUC difference CI."""
    from experiments.compare import run_compare

    tags: dict[str, str] = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    try:
        run_compare(
            experiment or None,
            run or None,
            tags or None,
            html,
            _state(home).tracking_uri,
            console=console,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if html:
        console.print(f"HTML comparison written to [bold]{html}[/bold]")


@app.command()
def monitor(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML of the model")],
    reference: Annotated[str, typer.Option(help="reference snapshot date (e.g. training)")],
    current: Annotated[
        str | None, typer.Option(help="current snapshot date (default: last)")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Drift between two snapshots: PSI per feature, score shift, score-decile stability."""
    from experiments.monitor import run_monitor
    from features.build import data_date_range, transactions_source
    from features.sources import connect, load_dataset
    from training.config import load_experiment

    state = _state(home)
    cfg = load_experiment(config)
    dataset = load_dataset(cfg.dataset).name
    ref = _date(reference, "--reference")
    cur = _date(current, "--current")
    if cur is None:
        con = connect(state)
        try:
            cur = data_date_range(con, transactions_source(state, dataset))[1]
        finally:
            con.close()
    for as_of in (ref, cur):
        path = state.snapshots(dataset, cfg.feature_set) / f"as_of={as_of.isoformat()}.parquet"
        if not path.exists():
            _snapshot(dataset, cfg.feature_set, as_of, state)
    report = run_monitor(
        state, dataset, cfg.feature_set, ref, cur, cfg.registered_model, state.tracking_uri
    )
    table = Table(title=f"feature drift {ref} -> {cur} (PSI)")
    for col in ("feature", "psi", "flag"):
        table.add_column(col)
    for row in report.features.itertuples(index=False):
        table.add_row(str(row.feature), f"{row.psi:.4f}", str(row.flag))
    console.print(table)
    console.print(
        f"score PSI {report.score.psi:.4f} ({report.score.flag}), mean shift "
        f"{report.score.mean_shift:+.4f}; {report.stability.change_share:.1%} of "
        f"{report.stability.n_common:,} customers changed score decile"
    )


campaign_app = typer.Typer(help="Campaign read-outs.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("evaluate")
def campaign_evaluate(
    dataset: DatasetOpt = "synthetic",
    campaign: Annotated[
        list[str] | None, typer.Option("--campaign", help="campaign id (repeatable; default all)")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="also write an HTML report")] = None,
    window_days: Annotated[int, typer.Option(help="response / revenue window after a send")] = 30,
    home: HomeOpt = None,
) -> None:
    """Per campaign and offer: treatment vs control, uplift CI and p-value, ROI, negatives."""
    from experiments.campaigns import run_campaign_evaluate

    table = run_campaign_evaluate(
        _state(home), dataset, campaign or None, html, window_days=window_days
    )
    out = Table(title=f"campaigns of {dataset} (uplift: 95 % Newcombe interval)")
    cols = [
        "campaign_id",
        "offer_id",
        "contacts",
        "control",
        "response_rate_treatment",
        "response_rate_control",
        "uplift",
        "uplift_ci_low",
        "uplift_ci_high",
        "p_value",
        "incremental_revenue",
        "roi",
        "declined",
    ]
    cols = [c for c in cols if c in table.columns]
    for col in cols:
        out.add_column(col)
    for row in table[cols].itertuples(index=False):
        out.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(out)
    if html:
        console.print(f"campaign report written to [bold]{html}[/bold]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving_env(cfg: Any, state: Any) -> dict[str, str]:
    from features.sources import load_dataset

    dataset = load_dataset(cfg.dataset).name
    settings = {
        "home": str(state.home),
        "models": {
            cfg.family: {
                "registered_model": cfg.registered_model,
                "alias": "champion",
                "dataset": dataset,
                "feature_set": cfg.feature_set,
            }
        },
    }
    return {**os.environ, "PATRON_HOME": str(state.home), "PATRON_SERVING": json.dumps(settings)}


def start_server(env: dict[str, str], host: str, port: int) -> subprocess.Popen[bytes]:
    """Start `bentoml serve` for the Patron service in a child process."""
    bentoml = Path(sys.executable).with_name("bentoml")
    cmd = [str(bentoml), "serve", "serving.service:Patron", "--host", host, "--port", str(port)]
    return subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parent.parent)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    """Poll /readyz until the server answers 200, or fail if the process dies or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the server at {url} was not ready within {timeout_s:.0f} s")


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML of the model")],
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 3000,
    allow_anonymous: Annotated[
        bool, typer.Option(help="serve without API keys (local use only)")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Serve the experiment's champion model over HTTP (BentoML); Ctrl-C stops it.

    API keys come from $PATRON_API_KEYS and $PATRON_ADMIN_KEYS (comma-separated)."""
    from features.build import latest_snapshot
    from features.sources import load_dataset
    from training.config import load_experiment

    state = _state(home)
    cfg = load_experiment(config)
    dataset = load_dataset(cfg.dataset).name
    try:
        latest_snapshot(state, dataset, cfg.feature_set)
    except FileNotFoundError:
        _snapshot(dataset, cfg.feature_set, None, state)
    from serving.settings import AuthSettings

    env = _serving_env(cfg, state)
    if allow_anonymous:
        env["PATRON_ALLOW_ANONYMOUS"] = "1"
    try:
        AuthSettings.from_env(env).check_startable()
    except RuntimeError as exc:
        raise typer.BadParameter(str(exc)) from exc
    proc = start_server(env, host, port)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)


@app.command()
def score(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML of the model")],
    out: Annotated[Path, typer.Option(help="parquet file to write")] = Path("scores.parquet"),
    home: HomeOpt = None,
) -> None:
    """Batch-score the whole base with the champion: the same values /score returns."""
    from features.build import latest_snapshot
    from features.sources import load_dataset
    from serving.batch import score_to_file
    from serving.settings import ServingSettings
    from training.config import load_experiment

    state = _state(home)
    cfg = load_experiment(config)
    dataset = load_dataset(cfg.dataset).name
    try:
        latest_snapshot(state, dataset, cfg.feature_set)
    except FileNotFoundError:
        _snapshot(dataset, cfg.feature_set, None, state)
    settings = ServingSettings.model_validate(
        json.loads(_serving_env(cfg, state)["PATRON_SERVING"])
    )
    path = score_to_file(cfg.family, out, state, settings)
    console.print(f"scores written to [bold]{path}[/bold]")


@app.command()
def demo(
    customers: Annotated[int | None, typer.Option(help="synthetic customers")] = None,
    config: Annotated[Path, typer.Option(help="experiment YAML")] = Path(
        "experiments/churn/synthetic.yaml"
    ),
    home: HomeOpt = None,
) -> None:
    """The whole pipeline: generate, ingest, features, train, register, serve, score, stop."""
    import httpx

    from features.sources import load_dataset
    from training.config import load_experiment

    state = _state(home)
    cfg = load_experiment(config)
    dataset = load_dataset(cfg.dataset)
    console.rule(f"Patron demo — state folder {state.home}")
    if dataset.synthetic is not None:
        console.rule("1. generate")
        _generate(dataset, state, customers)
    console.rule("2. ingest")
    _ingest(dataset, state)
    console.rule("3. features + 4. train + register")
    _train(config, state)
    snapshot = _snapshot(dataset.name, cfg.feature_set, None, state)
    console.print(f"feature snapshot for serving: {snapshot}")
    console.rule("5. serve")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    key = secrets.token_urlsafe(24)  # a throwaway key: the service never runs without one
    env = {**_serving_env(cfg, state), "PATRON_API_KEYS": key, "PATRON_ADMIN_KEYS": key}
    proc = start_server(env, "127.0.0.1", port)
    try:
        wait_ready(url, proc)
        import pandas as pd

        ids = pd.read_parquet(snapshot, columns=["customer_id"])["customer_id"].head(3).tolist()
        body = {"customer_ids": [*ids, "NO-SUCH-CUSTOMER"], "model": cfg.family}
        console.print(f"POST {url}/score {json.dumps(body)}")
        response = httpx.post(
            f"{url}/score", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        console.print_json(response.text)
        response.raise_for_status()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    console.rule("done")
    console.print(f"MLflow store: {state.tracking_uri}")
    console.print(
        f"open the MLflow UI: [bold].venv/bin/mlflow ui --backend-store-uri {state.tracking_uri} "
        "--port 5000[/bold] and browse http://127.0.0.1:5000"
    )


def main() -> None:
    """The `patron` entry point: bad configs and inputs end in one clear line, not a traceback.

    Set PATRON_DEBUG=1 to see the traceback."""
    from pydantic import ValidationError

    try:
        app()
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("PATRON_DEBUG"):
            raise
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
