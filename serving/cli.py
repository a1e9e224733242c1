"""The ``serving`` package's commands: serve (BentoML over HTTP) and score (batch).

Serving knows nothing of training: the root hands it ``resolve``, which turns an experiment YAML
into a ``ServedExperiment`` (registered model, family, dataset, feature set)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from features.cli import HomeOpt, console, state_of, write_snapshot_at
from features.store import StateDirs
from serving.lifecycle import STARTUP_FAILURE_ENV


@dataclass(frozen=True)
class ServedExperiment:
    """What serving needs to know of an experiment."""

    family: str
    registered_model: str
    dataset: str
    feature_set: Any  # features.definitions.FeatureSet, or None for a ready labelled table

    @property
    def feature_set_key(self) -> str:
        return self.feature_set.key if self.feature_set is not None else "churn_v1"


Resolver = Callable[[Path], ServedExperiment]


def ensure_snapshot(served: ServedExperiment, state: StateDirs) -> None:
    """Build the served snapshot at the last data date when there is none yet."""
    from features.build import latest_snapshot

    try:
        latest_snapshot(state, served.dataset, served.feature_set_key)
    except FileNotFoundError:
        from features.definitions import feature_set

        fs = served.feature_set if served.feature_set is not None else feature_set("churn_v1")
        write_snapshot_at(served.dataset, fs, None, state)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving_env(served: ServedExperiment, state: StateDirs) -> dict[str, str]:
    """The server process's environment: the state folder and the serving settings as JSON."""
    settings = {
        "home": str(state.home),
        "models": {
            served.family: {
                "registered_model": served.registered_model,
                "alias": "champion",
                "dataset": served.dataset,
                "feature_set": served.feature_set_key,
            }
        },
    }
    env = {**os.environ, "PATRON_HOME": str(state.home), "PATRON_SERVING": json.dumps(settings)}
    if state.tracking_uri_override:
        env["MLFLOW_TRACKING_URI"] = state.tracking_uri_override
    return env


def _child_dies_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """``preexec_fn`` of the server: SIGTERM to it when `patron serve` dies, even by kill -9."""
    from serving.lifecycle import die_with_parent

    die_with_parent()


def start_server(env: dict[str, str], host: str, port: int) -> subprocess.Popen[bytes]:
    """Start `bentoml serve` for the Patron service in a child process of its own group, with a
    BentoML home of its own (``own_bentoml_home``: its metrics survive another server's start).

    The group is what ``stop_server`` signals (the arbiter and its workers); the child gets
    SIGTERM from the kernel if this process dies first."""
    from serving.lifecycle import own_bentoml_home, serve_command

    return subprocess.Popen(
        serve_command(host, port),
        env=own_bentoml_home(env, port),
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
        preexec_fn=_child_dies_with_parent,  # noqa: PLW1509 - no threads yet at this point
    )


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM to the server's process group (circus's arbiter stops its workers), then SIGKILL
    to any process of the tree still alive after ``timeout_s``; returns the server's exit code."""
    import psutil

    tree = _descendants(proc.pid)  # workers sit in sessions of their own: remember them now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    _, alive = psutil.wait_procs(tree, timeout=max(1.0, timeout_s / 4))
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def supervise(proc: subprocess.Popen[bytes], failure: Path) -> int:
    """Wait for the server; SIGTERM or SIGINT here stops every process of it.

    Returns 0 after a requested stop; raises ``RuntimeError`` with the worker's one-line reason
    when it could not start, or the exit code when the server stopped on its own."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)  # the loop below exits; stop_server stops the whole tree

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while proc.poll() is None and not stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
    finally:
        stop_server(proc, timeout_s=20.0 if proc.poll() is None else 0.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure.exists():
        raise RuntimeError(failure.read_text().strip())
    if stopping:
        return 0
    raise RuntimeError(f"the server stopped on its own with exit code {proc.returncode}")


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


def settings_env(settings: Any, state: StateDirs) -> dict[str, str]:
    """The server process's environment for validated ``ServingSettings`` (the state's home)."""
    doc = settings.model_dump(mode="json")
    doc["home"] = str(state.home)
    env = {**os.environ, "PATRON_HOME": str(state.home), "PATRON_SERVING": json.dumps(doc)}
    env.pop("PATRON_SERVING_FILE", None)  # the CLI's validated copy is what the server reads
    if state.tracking_uri_override:
        env["MLFLOW_TRACKING_URI"] = state.tracking_uri_override
    return env


def ensure_snapshots(settings: Any, state: StateDirs, store_families: bool = False) -> None:
    """Build each served model's snapshot at the last data date when there is none yet (the
    feature set it recorded at training, or the one the settings name); the online store's
    families only for the job that publishes them (replicas never read their snapshots)."""
    from features.build import latest_snapshot
    from features.definitions import feature_set, feature_set_from_spec
    from serving.registry import Registry, tracking_uri_of

    registry = Registry(tracking_uri_of(settings, state))
    models = settings.models if store_families else settings.in_process().models
    for family, spec in models.items():
        try:
            version = registry.version(spec.registered_model, spec.alias)[0]
        except Exception:
            continue  # the preflight names a missing model or alias in one line
        recorded = registry.feature_set(spec.registered_model, version) or {}
        key = spec.feature_set or str(recorded.get("key") or "churn_v1")
        try:
            latest_snapshot(state, spec.dataset, key)
        except FileNotFoundError:
            fs = feature_set(key) if spec.feature_set or not recorded else None
            fs = fs or feature_set_from_spec(recorded)
            console.print(f"building the {family!r} snapshot of {key} for {spec.dataset}")
            write_snapshot_at(spec.dataset, fs, None, state)


def check_startable_state(env: dict[str, str], state: StateDirs) -> None:
    """What the server would fail on at start (aliases, models, snapshots, campaign files), as
    one line naming the cause, before any server process exists."""
    from serving.lifecycle import one_line
    from serving.settings import ServingSettings
    from serving.state import preflight

    settings = ServingSettings.model_validate(json.loads(env["PATRON_SERVING"]))
    try:
        preflight(settings, state)
    except Exception as exc:  # registry and file errors: no customer data in the message
        console.print("[red]error:[/red] ", end="")
        console.print(f"cannot start: {one_line(exc)}", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None


def _server_env(
    resolve: Resolver,
    config: Path | None,
    serving: Path | None,
    home: Path | None,
    store_families: bool = False,
) -> tuple[dict[str, str], StateDirs]:
    """The server's environment and state folder from exactly one of --config and --serving
    (--home, else the serving YAML's home, else $PATRON_HOME), the snapshots built."""
    from serving.settings import ServingSettings

    if (config is None) == (serving is None):
        raise typer.BadParameter(
            "give exactly one of --serving (a serving YAML) and --config (an experiment YAML)",
            param_hint="--serving",
        )
    if config is not None:
        state = state_of(home)
        served = resolve(config)
        ensure_snapshot(served, state)
        return serving_env(served, state), state
    assert serving is not None
    settings = ServingSettings.from_file(serving)
    state = state_of(home if home is not None or not settings.home else Path(settings.home))
    ensure_snapshots(settings, state, store_families)
    return settings_env(settings, state), state


def make_app(resolve: Resolver) -> typer.Typer:
    """The serve and score commands, reading experiments with ``resolve``."""
    app = typer.Typer()

    @app.command()
    def serve(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="experiment YAML: serve its model alone"),
        ] = None,
        serving: Annotated[
            Path | None,
            typer.Option("--serving", "-s", help="serving YAML naming every served family's model"),
        ] = None,
        host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port")] = 3000,
        allow_anonymous: Annotated[
            bool, typer.Option(help="serve without API keys (local use only)")
        ] = False,
        home: HomeOpt = None,
    ) -> None:
        """Serve champion models over HTTP (BentoML): those a serving YAML names (--serving), or
        one experiment's (--config). SIGTERM or Ctrl-C stops every process of the server.

        API keys come from $PATRON_API_KEYS and $PATRON_ADMIN_KEYS (comma-separated)."""
        from serving.settings import AuthSettings

        env, state = _server_env(resolve, config, serving, home)
        if allow_anonymous:
            env["PATRON_ALLOW_ANONYMOUS"] = "1"
        try:
            AuthSettings.from_env(env).check_startable()
        except RuntimeError as exc:
            raise typer.BadParameter(str(exc)) from exc
        check_startable_state(env, state)
        with tempfile.TemporaryDirectory(prefix="patron-serve-") as run_dir:
            failure = Path(run_dir) / "startup-failure.txt"
            env[STARTUP_FAILURE_ENV] = str(failure)
            proc = start_server(env, host, port)
            try:
                supervise(proc, failure)
            except RuntimeError as exc:  # one unwrapped line, as the CLI's other errors
                console.print("[red]error:[/red] ", end="")
                console.print(str(exc), soft_wrap=True, markup=False, highlight=False)
                raise typer.Exit(1) from None

    @app.command()
    def score(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="experiment YAML: score with its model"),
        ] = None,
        serving: Annotated[
            Path | None,
            typer.Option("--serving", "-s", help="serving YAML; --model names the family"),
        ] = None,
        model: Annotated[str | None, typer.Option(help="family to score (with --serving)")] = None,
        out: Annotated[Path, typer.Option(help="parquet file to write")] = Path("scores.parquet"),
        scores_only: Annotated[
            bool,
            typer.Option(
                "--scores-only", help="no reason columns (SHAP dominates the cost of a batch)"
            ),
        ] = False,
        home: HomeOpt = None,
    ) -> None:
        """Batch-score the whole base with the champion: the same values /score returns.

        Where follows the scored dataset's YAML: in this process, or on Spark when it says
        ``engine: {kind: spark, ...}`` (serving.spark_batch); the same file either way."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        from serving.batch import score_to_file
        from serving.settings import ServingSettings

        env, state = _server_env(resolve, config, serving, home, store_families=True)
        settings = ServingSettings.model_validate(json.loads(env["PATRON_SERVING"]))
        family = model
        if family is None:
            if len(settings.models) != 1:
                raise typer.BadParameter(
                    f"name the family to score among {sorted(settings.models)}",
                    param_hint="--model",
                )
            family = next(iter(settings.models))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
            tasks: list[Any] = []  # one line per stage: customers in process, Spark partitions

            def stage(line: str) -> None:
                if tasks and bar.tasks[-1].total is None:
                    bar.update(tasks[-1], total=1, completed=1)  # a stage without counts: done
                tasks.append(bar.add_task(line, total=None))

            def progress(done: int, total: int) -> None:
                if not tasks:
                    stage(f"scoring {family}")
                bar.update(tasks[-1], completed=done, total=total)

            path = score_to_file(
                family,
                out,
                state,
                settings,
                reasons=not scores_only,
                progress=progress,
                stage=stage,
            )
        console.print(f"scores written to [bold]{path}[/bold]")

    @app.command()
    def publish(
        serving: Annotated[
            Path, typer.Option("--serving", "-s", help="serving YAML with an online_store")
        ],
        model: Annotated[str, typer.Option(help="family to score and publish")],
        store: Annotated[
            str | None, typer.Option(help="store URL (default: the YAML's online_store.url)")
        ] = None,
        reasons: Annotated[
            bool, typer.Option(help="publish the top-3 reasons (SHAP) with each score")
        ] = True,
        home: HomeOpt = None,
    ) -> None:
        """Score the family's whole base with its champion and publish every customer's /score
        record to the online store; replicas switch to it at once (one key)."""
        from serving.online import open_store, publish_family, redacted_url
        from serving.settings import ServingSettings

        env, state = _server_env(resolve, None, serving, home, store_families=True)
        settings = ServingSettings.model_validate(json.loads(env["PATRON_SERVING"]))
        cfg = settings.online_store
        url = store or (cfg.url if cfg is not None else None)
        if url is None:
            raise typer.BadParameter(
                f"{serving} has no online_store: name a store URL", param_hint="--store"
            )
        target = open_store(
            url, cfg.prefix if cfg else "patron", cfg.keep_previous_s if cfg else 600
        )
        target.ping()
        with counting_progress(f"scoring {model}") as progress:
            pub = publish_family(state, settings, model, target, reasons=reasons, progress=progress)
        meta = pub.meta
        console.print(
            f"published {meta['customers']:,} customers of {model} ({meta['registered_model']} "
            f"v{meta['version']}, snapshot {meta['snapshot_as_of']}) as {pub.pub_id} in "
            f"{redacted_url(url)}"  # a terminal is often a shared log: no store password in it
        )

    bento = typer.Typer(help="Bentos of the service that carry their models.")

    @bento.command("build")
    def bento_build(
        serving: Annotated[
            Path, typer.Option("--serving", "-s", help="serving YAML naming the served models")
        ],
        version: Annotated[
            str | None, typer.Option(help="the Bento's version (default: generated)")
        ] = None,
        home: HomeOpt = None,
    ) -> None:
        """Import every served family's champion from MLflow into BentoML's model store
        (``bentoml.mlflow.import_model``, labelled family, alias, registered model, version) and
        build the Bento of serving/bentofile.yaml with them: run from it, the service loads
        those models, not MLflow's ($BENTOML_HOME says where the stores are)."""
        from serving.bento_models import build_bento, import_champions
        from serving.registry import Registry, tracking_uri_of
        from serving.settings import ServingSettings

        settings = ServingSettings.from_file(serving)
        state = state_of(home if home is not None or not settings.home else Path(settings.home))
        registry = Registry(tracking_uri_of(settings, state))
        try:
            models = import_champions(settings, registry)
        except Exception as exc:  # registry errors: no customer data in them
            from serving.lifecycle import one_line

            console.print("[red]error:[/red] ", end="")
            console.print(f"cannot import the models: {one_line(exc)}", markup=False)
            raise typer.Exit(1) from None
        for model in models:
            labels = model.info.labels
            console.print(
                f"model {model.tag}: {labels['registered_model']} v{labels['version']} "
                f"({labels['family']}@{labels['alias']})",
                markup=False,
            )
        built = build_bento(Path(__file__).resolve().parent.parent, models, version)
        console.print(f"built Bento [bold]{built.tag}[/bold] carrying {len(models)} model(s)")

    app.add_typer(bento, name="bento")
    return app


@contextlib.contextmanager
def counting_progress(label: str) -> Any:
    """A Rich progress bar with counts and ETA, fed by ``progress(done, total)`` calls."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
