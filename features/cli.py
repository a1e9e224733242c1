"""CLI support shared by every package's commands (console, options, state, progress, dates),
and the ``features`` package's own commands: generate, ingest, features, segments, reports,
customer links. The root (``patron.cli``) mounts them."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from features.store import StateDirs

console = Console()
app = typer.Typer()
report_app = typer.Typer(help="HTML reports for analysts.", no_args_is_help=True)
customers_app = typer.Typer(
    help="Customer records: duplicates and households.", no_args_is_help=True
)
app.add_typer(report_app, name="report")
app.add_typer(customers_app, name="customers")

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="state folder (default $PATRON_HOME or ~/.patron)")
]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="dataset name (experiments/datasets) or YAML path")
]


def state_of(home: Path | None) -> StateDirs:
    """The state folder (and MLflow store) of a command, resolved once at the edge."""
    return StateDirs.resolve(home)


def progress_bar(units: Literal["count", "bytes"] = "count") -> Progress:
    """A progress display with counts (when the work has a total: items, or bytes read as
    ``12.3/40.0 MB``) and elapsed and remaining time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if units == "bytes" else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@overload
def parse_date(value: str, name: str) -> date: ...
@overload
def parse_date(value: str | None, name: str) -> date | None: ...
def parse_date(value: str | None, name: str) -> date | None:
    """A YYYY-MM-DD option value; a clear error naming the option otherwise."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=name) from exc


def check_as_of(as_of: date, dates: tuple[date, date], name: str, dataset: str) -> date:
    """``as_of`` when it lies within the data's first..last transaction date; a ValueError
    naming the option and the range otherwise. A cutoff after the last date would count the days
    without data as days without orders (everyone looks lapsed), one before the first has no
    customers: both are refused, not computed."""
    first, last = dates
    span = f"the data of {dataset!r} runs {first} .. {last}"
    if as_of > last:
        raise ValueError(
            f"{name} {as_of} is after the last data date: {span}; features at a later cutoff "
            f"would count the days without data as days without orders (use {last} or earlier)"
        )
    if as_of < first:
        raise ValueError(
            f"{name} {as_of} is before the first data date: {span}; no customer has an order "
            f"yet (use {first} or later)"
        )
    return as_of


def data_dates(state: StateDirs, dataset: str) -> tuple[date, date]:
    """First and last transaction date of a dataset's ingested transactions."""
    from features.build import data_date_range, transactions_source
    from features.sources import connect

    con = connect(state)
    try:
        return data_date_range(con, transactions_source(state, dataset))
    finally:
        con.close()


def resolve_as_of(state: StateDirs, dataset: str, value: str | None, name: str) -> date:
    """A cutoff option: parsed, checked against the data's date range; default the last date."""
    as_of = parse_date(value, name)
    dates = data_dates(state, dataset)
    return dates[1] if as_of is None else check_as_of(as_of, dates, name, dataset)


def write_snapshot_at(
    dataset_name: str, fs: Any, as_of: date | None, state: StateDirs, name: str = "--as-of"
) -> Path:
    """Write the snapshot of feature set ``fs`` at ``as_of`` (default: the last data date); a
    cutoff outside the data is refused (``check_as_of``) before anything is written."""
    from features.build import data_date_range, transactions_source, write_snapshot
    from features.sources import connect

    con = connect(state)
    try:
        dates = data_date_range(con, transactions_source(state, dataset_name))
        as_of = dates[1] if as_of is None else check_as_of(as_of, dates, name, dataset_name)
        return write_snapshot(con, state, dataset_name, fs, as_of)
    finally:
        con.close()


def write_features_at(
    cfg: Any,
    fs: Any,
    as_of: date | None,
    state: StateDirs,
    churn: tuple[int, int] | None = None,
    name: str = "--as-of",
) -> tuple[date, list[Path]]:
    """Write the snapshot of feature set ``fs`` (and, given ``(horizon_days, lookback_days)``,
    the churn labels) at ``as_of`` (default: the last data date) on the dataset's engine
    (``cfg.engine``: DuckDB in process, or Spark); a cutoff outside the data is refused."""
    from features.build import (
        data_date_range,
        transactions_source,
        write_churn_labels,
        write_snapshot,
    )

    def cutoff(dates: tuple[date, date]) -> date:
        return dates[1] if as_of is None else check_as_of(as_of, dates, name, cfg.name)

    if cfg.engine.kind == "spark":
        from features.spark import (
            data_dates_spark,
            require_spark,
            spark_session,
            write_churn_labels_spark,
            write_snapshot_spark,
        )

        require_spark(cfg.where())
        with spark_session(cfg.engine) as spark:
            at = cutoff(data_dates_spark(spark, state, cfg.name))
            paths = [write_snapshot_spark(spark, state, cfg.name, fs, at)]
            if churn is not None:
                paths.append(write_churn_labels_spark(spark, state, cfg.name, at, *churn))
            return at, paths
    from features.sources import connect

    con = connect(state)
    try:
        at = cutoff(data_date_range(con, transactions_source(state, cfg.name)))
        paths = [write_snapshot(con, state, cfg.name, fs, at)]
        if churn is not None:
            paths.append(write_churn_labels(con, state, cfg.name, at, *churn))
        return at, paths
    finally:
        con.close()


@app.command()
def generate(
    dataset: DatasetOpt = "synthetic",
    customers: Annotated[int | None, typer.Option(help="override n_customers")] = None,
    seed: Annotated[int | None, typer.Option(help="override the seed")] = None,
    home: HomeOpt = None,
) -> None:
    """Generate the synthetic data of a dataset config that has a `synthetic` block."""
    from features.sources import load_dataset

    state = state_of(home)
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
    with progress_bar() as progress:
        task = progress.add_task(f"generating {syn.n_customers:,} customers", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, total=total, completed=done)

        counts = generate_data(syn, out, progress=tick)
    console.print(", ".join(f"{k}: {v:,}" for k, v in counts.items()))
    return out


def _ingest(cfg: Any, state: Any) -> Any:
    """Ingest and print the counts; a table that quarantined too much raises ``QuarantineError``
    (a ValueError: one line and exit 1 at the root) after the counts are printed."""
    from features.sources import IngestStep, QuarantineError
    from features.sources import ingest as ingest_dataset

    failed: QuarantineError | None = None
    engine = cfg.engine.describe()
    with progress_bar(units="bytes") as progress:
        task = progress.add_task(f"ingesting {cfg.name} on {engine}", total=None)

        def step(at: IngestStep) -> None:
            # rows are counted as each table ends; within one, the bytes read give the ETA
            rows = f" ({at.rows_read:,} rows read)" if at.rows_read else ""
            progress.update(
                task,
                description=f"ingesting {cfg.name}.{at.table}{rows}",
                total=at.bytes_total,
                completed=at.bytes_done,
            )

        try:
            report = ingest_dataset(cfg, state, progress=step)
        except QuarantineError as exc:
            failed, report = exc, exc.report
    table = Table(title=f"ingest {cfg.name} ({engine})")
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
    if report.identity is not None:
        console.print(identity_line(report.identity))
    if failed is not None:
        bad = [name for name, t in report.tables.items() if t.failed]
        console.print(
            f"not written (too many rows quarantined): {', '.join(bad)}; "
            f"report: {state.data(cfg.name) / 'ingest_report.json'}"
        )
        raise failed
    return report


@app.command()
def ingest(dataset: DatasetOpt = "synthetic", home: HomeOpt = None) -> None:
    """Validate a dataset's raw files into canonical tables; rejected rows go to quarantine."""
    from features.sources import load_dataset

    _ingest(load_dataset(dataset), state_of(home))


@app.command("check-dataset")
def check_dataset(
    dataset: DatasetOpt,
    rows: Annotated[int, typer.Option(min=1, help="rows read from each source file")] = 1000,
    table: Annotated[
        list[str] | None, typer.Option("--table", help="only this table (repeatable)")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Dry run of a dataset config on each file's first rows: per column its source, type, what
    the raw text looks like, nulls, invalid values and examples. Writes nothing."""
    from features.checks import check_dataset as run_check
    from features.sources import load_dataset

    cfg = load_dataset(dataset)
    checks = run_check(cfg, state_of(home), rows, table)
    for t in checks:
        for source in t.sources:
            print_source_check(t.table, source)
        accepted = t.rows - sum(t.quarantined_by_reason.values())
        reasons = ", ".join(f"{r} {n:,}" for r, n in t.quarantined_by_reason.items())
        console.print(
            Text(
                f"{t.table}: {t.rows:,} rows read, {accepted:,} would be accepted"
                + (f"; quarantined: {reasons}" if reasons else "")
            )
        )
    failures = [t.failure for t in checks if t.failure]
    if failures:
        raise ValueError("; ".join(failures))
    console.print(
        Text(
            f"{cfg.where()}: every table reads (first {rows:,} rows of each source); "
            "nothing written"
        )
    )


def print_source_check(table_name: str, source: Any) -> None:
    """One source's columns in the sample as a table (a ``features.checks.SourceCheck``)."""
    from features.checks import NOT_IN_FILE

    grid = Table(
        title=f"{table_name} · {source.key} · {source.label} · first {source.rows:,} rows",
        title_justify="left",
    )
    for col in ("column", "source", "type", "raw looks like", "null", "invalid", "examples"):
        grid.add_column(col, justify="right" if col in ("null", "invalid") else "left")
    absent = [c.column for c in source.columns if c.source == NOT_IN_FILE]
    for c in source.columns:
        if c.source == NOT_IN_FILE:
            continue
        style = "red" if c.invalid_share > 0 else ("dim" if not c.canonical else None)
        grid.add_row(
            Text(c.column),
            Text(c.source),
            c.dtype,
            c.looks_like or "—",
            f"{c.null_share:.0%}",
            f"{c.invalid_share:.0%}" if c.invalid_share else "",
            Text(", ".join(c.examples)),
            style=style,
        )
    console.print(grid)
    if absent:
        console.print(Text(f"not in the file (NULL): {', '.join(absent)}"))


@app.command()
def features(
    dataset: DatasetOpt = "synthetic",
    feature_set: Annotated[str, typer.Option(help="feature set to build")] = "churn_v1",
    as_of: Annotated[
        str | None, typer.Option(help="cutoff date YYYY-MM-DD (default: last data date)")
    ] = None,
    churn_labels: Annotated[
        bool, typer.Option("--churn-labels", help="also write the churn labels at the cutoff")
    ] = False,
    horizon_days: Annotated[int, typer.Option(min=1, help="churn label horizon")] = 90,
    lookback_days: Annotated[int, typer.Option(min=1, help="churn label lookback")] = 365,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            help="a customers column of prospects_v1 (repeat for several; default age_band): "
            "the first-purchase experiment's attributes"
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Write the point-in-time feature snapshot of a dataset at a cutoff (and its churn labels),
    on the dataset's engine (``engine:`` in its YAML: duckdb or spark). ``prospects_v1`` is
    written over the prospects (people with no order by the cutoff)."""
    from features.definitions import feature_set as released
    from features.sources import load_dataset

    state = state_of(home)
    cfg = load_dataset(dataset)
    cutoff = parse_date(as_of, "--as-of")  # checked against the data by write_features_at
    fs = released(feature_set, attributes=attribute or None)
    churn = (horizon_days, lookback_days) if churn_labels else None
    engine = cfg.engine.describe()
    with progress_bar() as progress:
        progress.add_task(f"features {fs.name} of {cfg.name} on {engine}", total=None)
        at, paths = write_features_at(cfg, fs, cutoff, state, churn)
    console.print(f"features {fs.name} at {at} computed on {engine}")
    console.print(f"snapshot written to [bold]{paths[0]}[/bold]")
    if churn is not None:
        console.print(f"churn labels written to [bold]{paths[1]}[/bold]")


SegmentsConfigOpt = Annotated[
    Path | None,
    typer.Option(help="YAML with a segments: mapping (features.segments.SegmentsConfig)"),
]


@app.command()
def segments(
    dataset: DatasetOpt = "synthetic",
    as_of: Annotated[str | None, typer.Option(help="cutoff YYYY-MM-DD (default: last)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder")] = None,
    config: SegmentsConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Per-customer segments (RFM, Pareto ABC, pyramid, lifecycle, clusters, demographic and
    needs segments) and a summary."""
    from features.segments_report import load_segments_config, run_segments
    from features.sources import load_dataset

    state = state_of(home)
    name = load_dataset(dataset).name
    cfg = load_segments_config(config)
    result = run_segments(state, name, resolve_as_of(state, name, as_of, "--as-of"), cfg, out)
    import pandas as pd

    frame = pd.read_csv(result["summary"])
    table = Table(title=f"segments of {dataset} at {result['as_of']}")
    for col in frame.columns:
        table.add_column(str(col))
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    for scheme in ("demographics", "needs"):
        skipped = result[f"{scheme}_skipped"]
        console.print(
            f"{scheme}: skipped, {skipped}"
            if skipped
            else f"{scheme}: k = {result[f'{scheme}_k']}",
            markup=False,
        )
    from features.segments_report import journey_note

    console.print(f"journey stages: {journey_note(result['journey'])}", markup=False)
    console.print(f"written: {result['segments']}, chart {result['chart']}")


@report_app.command("segments")
def report_segments(
    dataset: DatasetOpt = "synthetic",
    as_of: Annotated[str | None, typer.Option(help="cutoff YYYY-MM-DD (default: last)")] = None,
    previous_as_of: Annotated[
        str | None, typer.Option(help="earlier cutoff for the lifecycle flow (default: -90 days)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write")] = None,
    config: SegmentsConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """An HTML page: segment sizes and revenue, Pareto curve, RFM heat map, lifecycle flow,
    clusters, demographic and needs segments."""
    from features.segments_report import load_segments_config, run_segments_report
    from features.sources import load_dataset

    state = state_of(home)
    name = load_dataset(dataset).name
    previous = parse_date(previous_as_of, "--previous-as-of")
    if previous is not None:
        check_as_of(previous, data_dates(state, name), "--previous-as-of", name)
    cfg = load_segments_config(config)
    path = run_segments_report(
        state, name, resolve_as_of(state, name, as_of, "--as-of"), previous, cfg, out
    )
    console.print(f"segment report written to [bold]{path}[/bold]")


def identity_line(identity: dict[str, Any]) -> str:
    """What the dataset's ``identity`` option did at ingest, in one line (counts only)."""
    if "skipped" in identity:
        return f"duplicates not resolved: {identity['skipped']}"
    rules = ", ".join(f"{r} {n:,}" for r, n in identity["merged_by_rule"].items()) or "none"
    return (
        f"duplicates resolved ({identity['merge_map']} merge map): {identity['records']:,} "
        f"records -> {identity['persons']:,} persons ({identity['merged_records']:,} merged: "
        f"{rules}); re-keyed {', '.join(identity['tables'])}; map: identity_map.parquet"
    )


@customers_app.command("link")
def customers_link(dataset: DatasetOpt = "synthetic", home: HomeOpt = None) -> None:
    """Standardise customer records; write a reviewable duplicate merge map and households."""
    import pandas as pd

    from features.build import write_customer_links
    from features.sources import load_dataset

    paths = write_customer_links(state_of(home), load_dataset(dataset).name)
    merge_map = pd.read_parquet(paths["merge_map"])
    households = pd.read_parquet(paths["households"])
    merged = int((merge_map["customer_id"] != merge_map["master_id"]).sum())
    multi = int((households["household_size"] > 1).sum())
    console.print(
        f"{len(merge_map):,} customer records: {merged:,} duplicates mapped to a master id; "
        f"{households['household_id'].nunique():,} households ({multi:,} customers share one)"
    )
    console.print(f"merge map: {paths['merge_map']}\nhouseholds: {paths['households']}")
