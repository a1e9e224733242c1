"""The composition root of the ``patron`` command: it mounts each package's commands and wires
them together (serving reads experiments through a resolver given here); ``demo`` runs them all."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

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
    customers: Annotated[
        int | None, typer.Option(help="synthetic customers (default: the dataset YAML's, 20,000)")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """The whole story on synthetic data: generate, ingest, features; train churn, propensity,
    next-best offer, uplift and CLV against their baselines; serve them all; score with reasons,
    a next-best offer and a campaign plan over HTTP; stop."""
    from patron.demo import print_closing, run_demo

    state = state_of(home)
    print_closing(state, run_demo(state, customers, served_experiment))


def main() -> None:
    """The `patron` entry point: bad configs and inputs end in one clear line, not a traceback.

    Set PATRON_DEBUG=1 to see the traceback."""
    import duckdb
    from pydantic import ValidationError

    from features.readers import error_line

    # MLflow draws a progress bar per model it loads from the local store (a few milliseconds
    # each): dozens of bars between a command's own lines; PATRON's own bars count the work
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
