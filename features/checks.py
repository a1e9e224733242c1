"""The dry run of a dataset config (``patron check-dataset``): each source's first rows classified
as ``ingest`` would, and per canonical column its source, type, what the raw text looks like, its
null and invalid shares and a few examples. Nothing is written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from features.contracts import TABLES
from features.readers import SAMPLE_BYTES
from features.sources import (
    ARM,
    FALSE_TEXT,
    TRUE_TEXT,
    ColumnMap,
    DatasetConfig,
    SourceRead,
    TableSource,
    arm_source,
    classify,
    connect,
    count_rows,
    quarantine_failure,
    work_folder,
)
from features.sql import quote_ident, sql_literal
from features.store import StateDirs

#: The source of an optional canonical column a file does not have (it is NULL).
NOT_IN_FILE = "(not in the file)"


@dataclass(frozen=True)
class ColumnCheck:
    """One output column of a source in the sample."""

    column: str
    source: str  # how it is read: the raw column, the expression, "(not in the file)"
    dtype: str  # the type it is cast to (the contract's, or a passthrough column's)
    looks_like: str  # the type the raw text would pass for ("" when every value is empty)
    null_share: float  # share of the rows with no value
    invalid_share: float  # share of the rows whose value does not parse as ``dtype``
    examples: list[str]
    canonical: bool = True


@dataclass(frozen=True)
class SourceCheck:
    """The sample of one source file."""

    key: str
    label: str
    rows: int
    columns: list[ColumnCheck]


@dataclass(frozen=True)
class TableCheck:
    """The sample of one table: its sources, the reasons rows would be quarantined, and the
    line ``ingest`` would fail with on these rows ("" when it would pass)."""

    table: str
    rows: int
    quarantined_by_reason: dict[str, int]
    failure: str
    sources: list[SourceCheck] = field(default_factory=list)


def check_dataset(
    cfg: DatasetConfig, state: StateDirs, rows: int = 1000, tables: list[str] | None = None
) -> list[TableCheck]:
    """Classify the first ``rows`` rows of every source of ``cfg`` (or of ``tables``) as ingest
    would; a mapping that does not fit its file raises ``DatasetError`` (one line)."""
    names = tables or list(cfg.tables)
    unknown = [t for t in names if t not in cfg.tables]
    if unknown:
        raise ValueError(
            f"{cfg.where()} has no table {', '.join(unknown)} (tables: {', '.join(cfg.tables)})"
        )
    con = connect(state)
    try:
        with work_folder(state) as workdir:
            return [_check_table(con, cfg, name, state, workdir, rows) for name in names]
    finally:
        con.close()


def _check_table(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    name: str,
    state: StateDirs,
    workdir: Path,
    rows: int,
) -> TableCheck:
    tsrc = cfg.tables[name]
    all_cols, sources = classify(
        con, cfg, name, state, workdir, limit=rows, max_bytes=SAMPLE_BYTES, digest=False
    )
    read = count_rows(con, "SELECT count(*) FROM __classified")
    by_reason = {
        str(r): int(n)
        for r, n in con.execute(
            "SELECT __reason, count(*) FROM __classified WHERE __reason IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    }
    # the first rows of a file may all fall under an exclusion (a period another file covers):
    # that is the config working, so only the other reasons count against the threshold
    excluded = {rule.reason for src in tsrc.sources for rule in src.exclude}
    mapping_reasons = {r: n for r, n in by_reason.items() if r not in excluded}
    kept = read - sum(n for r, n in by_reason.items() if r in excluded)
    failure = quarantine_failure(con, name, tsrc, kept, mapping_reasons)
    checks = [_check_source(con, tsrc, name, source, all_cols) for source in sources]
    con.execute("DROP TABLE __classified")
    if failure:
        failure = f"{cfg.where()}: {failure} (in the first {rows:,} rows of each source)"
    return TableCheck(name, read, by_reason, failure, checks)


def _check_source(
    con: duckdb.DuckDBPyConnection,
    tsrc: TableSource,
    table_name: str,
    source: SourceRead,
    all_cols: list[str],
) -> SourceCheck:
    table = TABLES[table_name]
    where = f"__source = {source.index}"
    n = count_rows(con, f"SELECT count(*) FROM __classified WHERE {where}")
    columns = []
    for col in all_cols:
        canonical = col in table.names
        dtype = table.column(col).dtype if canonical else tsrc.types.get(col, "string")
        arms = arm_source(source.src) is not None and col == ARM
        if col not in source.src.columns and col not in source.raw_cols and not arms:
            if canonical:
                columns.append(ColumnCheck(col, NOT_IN_FILE, dtype, "", 1.0, 0.0, []))
            continue
        columns.append(_column_stats(con, source, col, dtype, n, canonical, tsrc))
    return SourceCheck(source.key, source.label, n, columns)


def _column_stats(
    con: duckdb.DuckDBPyConnection,
    source: SourceRead,
    col: str,
    dtype: str,
    n: int,
    canonical: bool,
    tsrc: TableSource,
) -> ColumnCheck:
    raw, typed = quote_ident(f"__raw_{col}"), quote_ident(col)
    where = f"__source = {source.index}"
    row = con.execute(
        f"SELECT count(*) FILTER (WHERE {raw} IS NULL), "
        f"count(*) FILTER (WHERE {raw} IS NOT NULL AND {typed} IS NULL) "
        f"FROM __classified WHERE {where}"
    ).fetchone()
    nulls, invalid = (int(row[0]), int(row[1])) if row else (0, 0)
    examples = [
        str(r[0])
        for r in con.execute(
            f"SELECT v FROM (SELECT {raw} AS v, min(__row) AS first FROM __classified "
            f"WHERE {where} AND {raw} IS NOT NULL GROUP BY 1) ORDER BY first LIMIT 3"
        ).fetchall()
    ]
    return ColumnCheck(
        column=col,
        source=_describe(source, col, tsrc, dtype, canonical),
        dtype=dtype,
        looks_like=_looks_like(con, raw, where),
        null_share=nulls / n if n else 0.0,
        invalid_share=invalid / n if n else 0.0,
        examples=[e if len(e) <= 24 else e[:23] + "…" for e in examples],
        canonical=canonical,
    )


def _looks_like(con: duckdb.DuckDBPyConnection, raw: str, where: str) -> str:
    """The narrowest type every non-empty raw value of a column parses as."""
    t = ", ".join(sql_literal(v) for v in (*TRUE_TEXT, *FALSE_TEXT))
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE lower({raw}) IN ({t})), "
        f"count(*) FILTER (WHERE regexp_full_match({raw}, '[+-]?[0-9]+')), "
        f"count(TRY_CAST({raw} AS DOUBLE)), "
        f"count(*) FILTER (WHERE length({raw}) <= 10 AND TRY_CAST({raw} AS DATE) IS NOT NULL), "
        f"count(TRY_CAST({raw} AS TIMESTAMP)) "
        f"FROM __classified WHERE {where} AND {raw} IS NOT NULL"
    ).fetchone()
    if row is None or row[0] == 0:
        return ""
    total, boolean, integer, double, day, ts = (int(v) for v in row)
    if boolean == total and integer < total:
        return "boolean"
    for name, count in (("integer", integer), ("double", double), ("date", day)):
        if count == total:
            return name
    return "timestamp" if ts == total else "string"


def _describe(source: SourceRead, col: str, tsrc: TableSource, dtype: str, canonical: bool) -> str:
    """How a column is read, as the YAML says it."""
    mapping = source.src.columns.get(col)
    fmt: str | None = None
    group = arm_source(source.src)
    if mapping is None and group is not None and col == ARM:
        text = f"the group values other than control {json.dumps(group.control)}"
    elif mapping is None:
        text = json.dumps(col) if canonical else "passthrough"
    elif isinstance(mapping, str):
        text = json.dumps(mapping)
    else:
        text = _mapping_text(mapping)
        fmt = mapping.format
    fmt = fmt or (tsrc.ts_format if dtype == "timestamp" else None)
    return text + (f", format {json.dumps(fmt)}" if fmt else "")


def _mapping_text(mapping: ColumnMap) -> str:
    if mapping.from_ is not None:
        text = json.dumps(mapping.from_)
    else:
        expr = " ".join(str(mapping.expr).split())
        text = "expr " + (expr if len(expr) <= 60 else expr[:59] + "…")
    if mapping.values:
        text += f", values ({len(mapping.values)})"
    if mapping.control is not None:
        text += f", control {json.dumps(mapping.control)}"
    return text
