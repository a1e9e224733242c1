"""The ``training`` package's commands: train and tune (any registered family)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from features.cli import HomeOpt, console, progress_bar, state_of

app = typer.Typer()


def print_result(cfg: Any, trained: Any) -> None:
    """The family's headline test metrics of model and baseline side by side, and the grade."""
    from training.families import get_family

    family = get_family(cfg.family)
    n = trained.metrics.get("n") or trained.metrics.get("n_pairs") or len(trained.test_predictions)
    table = Table(title=f"{cfg.name}: {cfg.test_label} ({int(n):,} test rows)")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"{trained.baseline_name} baseline", justify="right")
    keys = [k for k in family.headline_metrics if k in trained.metrics] or [
        k for k in trained.metrics if k in trained.baseline_metrics and k != "n"
    ]
    for key in keys:
        base = trained.baseline_metrics.get(key)
        table.add_row(key, f"{trained.metrics[key]:.4f}", "" if base is None else f"{base:.4f}")
    console.print(table)
    console.print(f"grade [bold]{trained.grade}[/bold] against the baseline")
    for line in family.notes(cfg, trained):
        console.print(line)


def print_logged(logged: dict[str, Any]) -> None:
    verdict = "promoted to champion" if logged["champion"] else "not promoted"
    console.print(
        f"registered [bold]{logged['registered_model']}[/bold] version {logged['version']} "
        f"as challenger, {verdict}: {logged['decision']['reason']}; MLflow run {logged['run_id']}"
    )


def train_config(config: Path, state: Any) -> tuple[Any, Any]:
    """Load an experiment, run it with a progress bar, print the result; (config, the run's
    ``RunOutput``: what was trained and what was logged and registered)."""
    from training.config import load_experiment
    from training.run import run_experiment

    cfg = load_experiment(config)
    with progress_bar() as progress:
        task = progress.add_task(f"training {cfg.name}", total=3)
        cutoffs = progress.add_task("features per cutoff", total=None, visible=False)

        def step(stage: str) -> None:
            progress.update(task, description=f"training {cfg.name}: {stage}", advance=1)

        def cutoff(done: int, total: int) -> None:
            progress.update(cutoffs, completed=done, total=total, visible=True)

        out = run_experiment(cfg, state, progress=step, on_cutoff=cutoff)
    print_result(cfg, out.trained)
    print_logged(out.logged)
    return cfg, out


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML")],
    home: HomeOpt = None,
) -> None:
    """Train on stacked cutoffs, test out of time, log to MLflow, register, maybe promote."""
    train_config(config, state_of(home))


@app.command()
def tune(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML")],
    trials: Annotated[int | None, typer.Option(help="override tuning.n_trials")] = None,
    home: HomeOpt = None,
) -> None:
    """Optuna search over out-of-time validation folds (nested MLflow runs); the tuned parameters
    are kept only on evidence; then the final run, the only one that reads the test rows."""
    from training.config import load_experiment
    from training.tune import run_tuning

    state = state_of(home)
    cfg = load_experiment(config)
    with progress_bar() as progress:
        task = progress.add_task(f"tuning {cfg.name}", total=trials or cfg.tuning.n_trials)

        def tick(done: int, total: int, best: float | None = None) -> None:
            label = f"tuning {cfg.name}"
            if best is not None:
                label += f" (best validation ROC AUC so far {best:.4f})"
            progress.update(task, completed=done, total=total, description=label)

        result = run_tuning(cfg, state, trials, progress=tick)
    if result.plan is not None:
        console.print(f"validation: {result.plan.note}")
    console.print(
        f"{result.n_trials} trials ({result.n_pruned} pruned): mean validation ROC AUC "
        f"{result.best_valid_auc:.4f} best trial vs {result.default_valid_auc:.4f} with the "
        f"config's parameters; best {result.best_params}"
    )
    console.print(result.reason)
    if result.tuned is not None:
        print_result(cfg, result.tuned.trained)
        print_logged(result.tuned.logged)
