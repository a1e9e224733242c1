"""The composition root of the ``patron`` command: it mounts each package's commands and wires
them together (serving reads experiments through a resolver given here); ``demo`` runs them all."""

from __future__ import annotations

import json
import os
import secrets
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer

from features.cli import HomeOpt, console, state_of
from features.cli import app as features_app

app = typer.Typer(help="Patron: CRM modelling — features, models, scoring.", no_args_is_help=True)


def served_experiment(config: Path):  # -> serving.cli.ServedExperiment
    """What serving needs of an experiment YAML (the family says which feature set it serves)."""
    from features.sources import load_dataset
    from serving.cli import ServedExperiment
    from training.config import load_experiment
    from training.families import get_family

    cfg = load_experiment(config)
    return ServedExperiment(
        family=cfg.family,
        registered_model=cfg.registered_model,
        dataset=load_dataset(cfg.dataset).name,
        feature_set=get_family(cfg.family).served_feature_set(cfg),
    )


def _version(value: bool) -> None:
    if value:
        try:
            console.print(f"patron {version('patron')}")
        except PackageNotFoundError:
            console.print("patron (not installed)")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """Patron: CRM modelling — features, models, scoring."""


def mount() -> typer.Typer:
    """Mount every package's commands on the root app (once; later calls return it as it is)."""
    if app.registered_groups:
        return app
    from experiments.cli import app as experiments_app
    from serving.cli import make_app
    from training.cli import app as training_app

    app.add_typer(features_app)
    app.add_typer(training_app)
    app.add_typer(make_app(served_experiment))
    app.add_typer(experiments_app)
    app.command()(demo)
    return app


def demo(
    customers: Annotated[int | None, typer.Option(help="synthetic customers")] = None,
    config: Annotated[Path, typer.Option(help="experiment YAML")] = Path(
        "experiments/churn/synthetic.yaml"
    ),
    home: HomeOpt = None,
) -> None:
    """The whole pipeline: generate, ingest, features, train, register, serve, score, stop."""
    import httpx

    from features.cli import _generate, _ingest, write_snapshot_at
    from features.sources import load_dataset
    from serving.cli import _free_port, serving_env, start_server, stop_server, wait_ready
    from training.cli import train_config
    from training.config import load_experiment

    state = state_of(home)
    cfg = load_experiment(config)
    dataset = load_dataset(cfg.dataset)
    console.rule(f"Patron demo — state folder {state.home}")
    if dataset.synthetic is not None:
        console.rule("1. generate")
        _generate(dataset, state, customers)
    console.rule("2. ingest")
    _ingest(dataset, state)
    console.rule("3. features + 4. train + register")
    train_config(config, state)
    served = served_experiment(config)
    snapshot = write_snapshot_at(served.dataset, served.feature_set, None, state)
    console.print(f"feature snapshot for serving: {snapshot}")
    console.rule("5. serve")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    key = secrets.token_urlsafe(24)  # a throwaway key: the service never runs without one
    env = {**serving_env(served, state), "PATRON_API_KEYS": key, "PATRON_ADMIN_KEYS": key}
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
        stop_server(proc)
    console.rule("6. plan a multi-offer, multi-channel campaign")
    plan_demo_campaign(state)
    console.rule("done")
    console.print(f"MLflow store: {state.tracking_uri}")
    console.print(
        f"open the MLflow UI: [bold].venv/bin/mlflow ui --backend-store-uri {state.tracking_uri} "
        "--port 5000[/bold] and browse http://127.0.0.1:5000"
    )


DEMO_ARMS_CUSTOMERS = 40_000
DEMO_CAMPAIGN = Path("experiments/campaigns/arms_demo.yaml")


def plan_demo_campaign(state: Any) -> None:
    """Learn per-(offer, channel) uplift from the randomised multi-arm campaigns of the
    ``synthetic_arms`` data and plan ``experiments/campaigns/arms_demo.yaml`` with it."""
    from experiments.cli import print_plan
    from experiments.planning import ARM_PARAMS, fit_arms, plan_with_arms
    from features.cli import _generate, _ingest
    from features.sources import load_dataset
    from models.decisions import load_campaign

    dataset = load_dataset("synthetic_arms")
    assert dataset.synthetic is not None
    _generate(dataset, state, DEMO_ARMS_CUSTOMERS)
    _ingest(dataset, state)
    learn_from = [c["campaign_id"] for c in dataset.synthetic["campaigns"]]
    with console.status(f"learning per-arm uplift from {', '.join(learn_from)}"):
        model = fit_arms(state, dataset.name, learn_from, params=ARM_PARAMS)
    arms = ", ".join(f"{o}/{c}" for o, c in model.arms)
    console.print(f"arm model on {model.contacts:,} randomised contacts; arms: {arms}")
    console.print(
        f"patron campaign plan --campaign {DEMO_CAMPAIGN} --dataset {dataset.name} "
        + " ".join(f"--learn-from {c}" for c in learn_from)
    )
    plan, day = plan_with_arms(state, dataset.name, load_campaign(DEMO_CAMPAIGN), model)
    print_plan(plan, day)


def main() -> None:
    """The `patron` entry point: bad configs and inputs end in one clear line, not a traceback.

    Set PATRON_DEBUG=1 to see the traceback."""
    import duckdb
    from pydantic import ValidationError

    from features.readers import error_line

    try:
        mount()()
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("PATRON_DEBUG"):
            raise
        # one unaltered line: no wrapping at the terminal width, no markup read in the message
        console.print("[red]error:[/red] ", end="")
        console.print(str(exc), soft_wrap=True, markup=False, highlight=False)
        raise SystemExit(1) from None
    except (duckdb.Error, OSError) as exc:
        if os.environ.get("PATRON_DEBUG"):
            raise
        # an error reading or writing data the steps did not anticipate: the database's or the
        # system's message (without DuckDB's query excerpt) on one line, and where to look next
        kind = "DuckDB" if isinstance(exc, duckdb.Error) else type(exc).__name__
        console.print("[red]error:[/red] ", end="")
        console.print(
            f"{kind}: {error_line(exc)} (PATRON_DEBUG=1 shows the traceback)",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
