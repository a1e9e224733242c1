"""Dataset configs (YAML) map raw files onto the canonical tables; ``ingest`` validates every row.

A dataset YAML names, per canonical table, one or more source files and how their raw columns map to
canonical columns. A column mapping is either the raw column's name or an object with exactly one of
``from`` (raw column), ``expr`` (a DuckDB SQL expression over the raw columns), plus optional
``values`` (raw value -> canonical value) and ``format`` (strptime format for timestamps / dates).
``exclude`` rules (SQL over canonical columns) send matching rows to quarantine with the given
reason.

Every row read ends either in ``data/<dataset>/<table>.parquet`` or in
``quarantine/<dataset>/<table>.parquet`` with one reason; ``IngestReport`` checks
read = accepted + quarantined. A table whose rows are all quarantined, or more than its
``max_quarantine_share``, fails: its quarantine and the ingest report are written, its accepted
rows are not (an older accepted file is removed), and ``ingest`` raises ``QuarantineError`` naming
the config key most likely at fault.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.catalog import Catalog
from features.contracts import DUCKDB_TYPES, NO_CUSTOMER, TABLES, Table
from features.sql import parquet_relation, quote_ident, sql_literal
from features.store import StateDirs, atomic_path

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class ColumnMap(BaseModel):
    """How one canonical column is read from a raw file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", description="raw column name")
    expr: str | None = Field(default=None, description="DuckDB SQL expression over raw columns")
    values: dict[str, Any] | None = Field(default=None, description="raw value -> canonical value")
    format: str | None = Field(default=None, description="strptime format for timestamps / dates")

    @model_validator(mode="after")
    def _one_source(self) -> ColumnMap:
        if (self.from_ is None) == (self.expr is None):
            raise ValueError("a column mapping needs exactly one of 'from' or 'expr'")
        return self


class ExcludeRule(BaseModel):
    """Rows matching ``when`` (SQL over canonical columns) are quarantined with ``reason``."""

    model_config = ConfigDict(extra="forbid")
    when: str
    reason: str


class SourceFile(BaseModel):
    """One raw file feeding a canonical table."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    read_options: dict[str, Any] = Field(default_factory=dict, description="extra read_csv options")
    columns: dict[str, str | ColumnMap] = Field(default_factory=dict)
    exclude: list[ExcludeRule] = Field(default_factory=list)


class TableSource(BaseModel):
    """The sources of one canonical table and the options that apply to all of them."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SourceFile]
    ts_format: str | None = Field(default=None, description="strptime format of timestamp columns")
    types: dict[str, Literal["string", "double", "integer", "boolean", "date", "timestamp"]] = (
        Field(default_factory=dict, description="types of passthrough columns (default string)")
    )
    drop: list[str] = Field(default_factory=list, description="raw columns not to pass through")
    max_quarantine_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="ingest fails when more than this share of the rows read is quarantined "
        "(a table with every row quarantined always fails)",
    )


class DatasetConfig(BaseModel):
    """A dataset: canonical tables mapped from raw files. Loaded from YAML by ``load_dataset``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    tables: dict[str, TableSource]
    synthetic: dict[str, Any] | None = Field(
        default=None, description="generator parameters when the files are synthetic"
    )
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"dataset name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, v: dict[str, TableSource]) -> dict[str, TableSource]:
        unknown = sorted(set(v) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown tables {unknown}; known: {sorted(TABLES)}")
        return v

    def resolve_path(self, raw: str, state: StateDirs) -> Path:
        """Expand ``{home}`` and environment variables; relative paths are relative to the YAML."""
        expanded = expand_vars(raw.replace("{home}", str(state.home)))
        path = Path(expanded).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_vars(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from the environment."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise ValueError(f"environment variable {m.group(1)} is not set (used in {text!r})")

    return _VAR.sub(sub, text)


def load_dataset(ref: str | Path, search_dir: Path | None = None) -> DatasetConfig:
    """Load a dataset config from a YAML path, or by name from ``experiments/datasets/``."""
    path = Path(ref)
    if not path.suffix:
        base = search_dir or Path(__file__).resolve().parent.parent / "experiments" / "datasets"
        path = base / f"{ref}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"dataset config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    cfg = DatasetConfig.model_validate(data)
    return cfg.model_copy(update={"base_dir": path.resolve().parent})


@dataclass
class TableReport:
    """Row counts of one ingested table."""

    table: str
    read: int
    accepted: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    accepted_path: str = ""
    quarantine_path: str = ""
    source_files: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""  # why the table failed (its accepted rows are then not written)

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    @property
    def failed(self) -> bool:
        return bool(self.failure)

    def check(self) -> None:
        """Raise if a row was lost: read must equal accepted + quarantined."""
        if self.read != self.accepted + self.quarantined:
            raise AssertionError(
                f"{self.table}: read {self.read} != accepted {self.accepted} "
                f"+ quarantined {self.quarantined}"
            )


@dataclass
class IngestReport:
    """Row counts of every ingested table of a dataset."""

    dataset: str
    tables: dict[str, TableReport]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "tables": {
                name: {
                    "read": t.read,
                    "accepted": t.accepted,
                    "quarantined": t.quarantined,
                    "quarantined_by_reason": t.quarantined_by_reason,
                    "accepted_path": t.accepted_path,
                    "quarantine_path": t.quarantine_path,
                    "source_files": t.source_files,
                    "failure": t.failure,
                }
                for name, t in self.tables.items()
            },
        }


class QuarantineError(ValueError):
    """Tables quarantined too many rows; the report (already written) is attached."""

    def __init__(self, report: IngestReport) -> None:
        self.report = report
        super().__init__("; ".join(t.failure for t in report.tables.values() if t.failed))


def _reader(path: Path, src: SourceFile) -> str:
    fmt = src.format
    if fmt == "auto":
        fmt = "parquet" if path.suffix == ".parquet" else "csv"
    if fmt == "parquet":
        return parquet_relation(path)
    opts = {"header": True, "all_varchar": True, **src.read_options}
    args = ", ".join(f"{k} = {sql_literal(v)}" for k, v in opts.items())
    return f"read_csv({sql_literal(str(path))}, {args})"


def _raw_expr(mapping: str | ColumnMap) -> str:
    """SQL giving the raw text of a canonical column: trimmed, empty -> NULL."""
    if isinstance(mapping, str):
        mapping = ColumnMap.model_validate({"from": mapping})
    inner = quote_ident(mapping.from_) if mapping.from_ is not None else f"({mapping.expr})"
    text = f"NULLIF(trim(CAST({inner} AS VARCHAR)), '')"
    if mapping.values:
        cases = " ".join(
            f"WHEN {sql_literal(str(k))} THEN {sql_literal('' if v is None else str(v))}"
            for k, v in mapping.values.items()
        )
        text = f"NULLIF(CASE {text} {cases} ELSE {text} END, '')"
    return text


def _typed_expr(raw: str, dtype: str, fmt: str | None) -> str:
    """SQL casting raw text to the contract type; NULL when it does not parse."""
    if dtype == "string":
        return raw
    if dtype == "boolean":
        t = ", ".join(sql_literal(v) for v in _TRUE)
        f = ", ".join(sql_literal(v) for v in _FALSE)
        return (
            f"(CASE WHEN lower({raw}) IN ({t}) THEN TRUE WHEN lower({raw}) IN ({f}) THEN FALSE END)"
        )
    if dtype in ("timestamp", "date") and fmt:
        return f"CAST(try_strptime({raw}, {sql_literal(fmt)}) AS {DUCKDB_TYPES[dtype]})"
    return f"TRY_CAST({raw} AS {DUCKDB_TYPES[dtype]})"


def _source_sql(
    table: Table, tsrc: TableSource, src: SourceFile, path: Path, index: int, raw_cols: list[str]
) -> tuple[str, list[str]]:
    """One SELECT over a source file yielding canonical typed columns, raw text and the reason."""
    mapped: dict[str, str | ColumnMap] = {}
    for col in table.columns:
        if col.name in src.columns:
            mapped[col.name] = src.columns[col.name]
        elif col.name in raw_cols:
            mapped[col.name] = col.name
    extra = sorted(set(src.columns) - set(table.names))
    if extra and not table.passthrough:
        raise ValueError(f"{table.name}: {path.name} maps unknown canonical columns {extra}")
    for name in extra:
        mapped[name] = src.columns[name]
    missing = [c.name for c in table.columns if c.required and c.name not in mapped]
    if missing:
        raise ValueError(
            f"{table.name}: {path.name} has no column for required {missing}; "
            f"raw columns are {raw_cols}"
        )
    used_raw = {m if isinstance(m, str) else m.from_ for m in mapped.values()}
    passthrough: list[str] = []
    if table.passthrough:
        passthrough = [c for c in raw_cols if c not in used_raw and c not in tsrc.drop]
        passthrough = [c for c in passthrough if c not in mapped]
        for name in passthrough:
            mapped[name] = name

    selects, reasons = [], []
    for name, mapping in mapped.items():
        canonical = table.column(name) if name in table.names else None
        dtype = canonical.dtype if canonical else tsrc.types.get(name, "string")
        fmt = mapping.format if isinstance(mapping, ColumnMap) else None
        fmt = fmt or (tsrc.ts_format if dtype == "timestamp" else None)
        raw = _raw_expr(mapping)
        selects.append(f"{raw} AS {quote_ident('__raw_' + name)}")
        selects.append(f"{_typed_expr(raw, dtype, fmt)} AS {quote_ident(name)}")
        raw_ref, typed_ref = quote_ident("__raw_" + name), quote_ident(name)
        if canonical is not None and canonical.required:
            missing_reason = NO_CUSTOMER if name == "customer_id" else f"{name}: missing"
            reasons.append(f"WHEN {raw_ref} IS NULL THEN {sql_literal(missing_reason)}")
        reasons.append(
            f"WHEN {raw_ref} IS NOT NULL AND {typed_ref} IS NULL "
            f"THEN {sql_literal(f'{name}: not a valid {dtype}')}"
        )
    for col in table.columns:  # optional canonical columns absent from the file are typed NULLs
        if col.name not in mapped:
            selects.append(f"CAST(NULL AS {DUCKDB_TYPES[col.dtype]}) AS {quote_ident(col.name)}")
    excl = [f"WHEN ({r.when}) THEN {sql_literal(r.reason)}" for r in src.exclude]
    reason_sql = "CASE " + " ".join(excl + reasons) + " END" if excl + reasons else "NULL"
    inner = (
        f"SELECT {index} AS __source, row_number() OVER () AS __row, "
        f"to_json(r) AS __raw_json, {', '.join(selects)} FROM {_reader(path, src)} r"
    )
    sql = f"SELECT *, {reason_sql} AS __reason FROM ({inner})"
    return sql, table.names + [c for c in mapped if c not in table.names]


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """The single integer a ``SELECT count(*) ...`` query returns."""
    row = con.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"count query returned no row: {sql}")
    return int(row[0])


def ingest_table(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
) -> TableReport:
    """Validate every row of one table's sources; write accepted and quarantined rows atomically."""
    table = TABLES[table_name]
    tsrc = cfg.tables[table_name]
    parts, all_cols, files = [], [], []
    versioned: set[str] = set()
    for i, src in enumerate(tsrc.sources):
        path = cfg.resolve_path(src.path, state)
        if not path.exists():
            raise FileNotFoundError(f"{cfg.name}.{table_name}: source file not found: {path}")
        raw_cols = [
            r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_reader(path, src)}").fetchall()
        ]
        sql, cols = _source_sql(table, tsrc, src, path, i, raw_cols)
        versioned |= {c for c in table.versioned_by if c in src.columns or c in raw_cols}
        parts.append(sql)
        all_cols += [c for c in cols if c not in all_cols]
        files.append({"path": str(path), "sha256": _sha256(path)})
    union = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __classified AS {union}")
    if table.key:
        # a repeated key is quarantined; the first occurrence (file order, row order) is kept;
        # a table with history (a mapped versioned_by column) has one row per key and version
        key_cols = [*table.key, *(c for c in table.versioned_by if c in versioned)]
        key = ", ".join(quote_ident(k) for k in key_cols)
        dup = f"{'/'.join(key_cols)}: duplicate key"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE __classified AS
            SELECT * REPLACE (CASE WHEN __reason IS NULL AND row_number() OVER (
                PARTITION BY {key}, __reason IS NULL ORDER BY __source, __row) > 1
                THEN {sql_literal(dup)} ELSE __reason END AS __reason)
            FROM __classified"""
        )
    read = _count(con, "SELECT count(*) FROM __classified")
    by_reason = dict(
        con.execute(
            "SELECT __reason, count(*) FROM __classified WHERE __reason IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    )
    failure = quarantine_failure(con, table_name, tsrc, read, by_reason)
    accepted_path = Catalog(state, cfg.name).path(table_name)
    quarantine_path = state.quarantine(cfg.name) / f"{table_name}.parquet"
    select_cols = ", ".join(quote_ident(c) for c in all_cols)
    if failure:
        # a failed table is not written: later steps stop at "no ingested table" instead of
        # reading a half-empty (or an older) table as if this ingest had succeeded
        accepted_path.unlink(missing_ok=True)
    else:
        with atomic_path(accepted_path) as tmp:
            con.execute(
                f"COPY (SELECT {select_cols} FROM __classified WHERE __reason IS NULL "
                f"ORDER BY __source, __row) TO {sql_literal(str(tmp))} (FORMAT parquet)"
            )
    source_paths = [f["path"] for f in files]
    with atomic_path(quarantine_path) as tmp:
        con.execute(
            "COPY (SELECT __reason AS reason, "
            f"list_extract({sql_literal(source_paths)}, __source + 1) AS source_file, "
            "__row AS source_row, "
            f"__raw_json AS raw FROM __classified WHERE __reason IS NOT NULL "
            f"ORDER BY __source, __row) TO {sql_literal(str(tmp))} (FORMAT parquet)"
        )
    accepted = _count(
        con,
        "SELECT count(*) FROM __classified WHERE __reason IS NULL"
        if failure
        else f"SELECT count(*) FROM {parquet_relation(accepted_path)}",
    )
    report = TableReport(
        table=table_name,
        read=read,
        accepted=accepted,
        quarantined_by_reason=by_reason,
        accepted_path="" if failure else str(accepted_path),
        quarantine_path=str(quarantine_path),
        source_files=files,
        failure=failure,
    )
    con.execute("DROP TABLE __classified")
    report.check()
    return report


_NOT_VALID = re.compile(r"^(\w+): not a valid (\w+)$")
_MISSING = re.compile(r"^(\w+): missing$")


def quarantine_failure(
    con: duckdb.DuckDBPyConnection,
    table_name: str,
    tsrc: TableSource,
    read: int,
    by_reason: Mapping[str, int],
) -> str:
    """One line when the rows classified in ``__classified`` quarantine every row read or more
    than ``max_quarantine_share`` of them: counts, the top reason with its count and an example,
    and the config key most likely at fault; "" when the table passes."""
    quarantined = sum(by_reason.values())
    if read == 0 or quarantined == 0:
        return ""
    share = quarantined / read
    if quarantined < read and share <= tsrc.max_quarantine_share:
        return ""
    reason, count = max(by_reason.items(), key=lambda kv: kv[1])
    row = con.execute(
        "SELECT __source, count(*) FROM __classified WHERE __reason = ? "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
        [reason],
    ).fetchone()
    index = int(row[0]) if row else 0
    found = _NOT_VALID.match(reason)
    example_col = quote_ident(f"__raw_{found.group(1)}") if found else "__raw_json"
    example = con.execute(
        f"SELECT CAST({example_col} AS VARCHAR) FROM __classified "
        "WHERE __reason = ? AND __source = ? ORDER BY __row LIMIT 1",
        [reason, index],
    ).fetchone()
    shown = "" if not example or example[0] is None else str(example[0])
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    if shown and found:
        shown = json.dumps(shown)  # a raw value, quoted; a raw row is JSON already
    top = f"{reason} {count:,}" + (f", e.g. {shown}" if shown else "")
    prefix = f"tables.{table_name}"
    if quarantined < read:
        top = (
            f"{share:.0%}, above {prefix}.max_quarantine_share {tsrc.max_quarantine_share:.0%}; "
            f"top reason {top}"
        )
    return (
        f"{prefix}: {quarantined:,} of {read:,} rows quarantined ({top}) "
        f"— check {suspect_key(table_name, tsrc, index, reason)}"
    )


def suspect_key(table_name: str, tsrc: TableSource, index: int, reason: str) -> str:
    """The dataset config key most likely behind a quarantine reason, with its current value."""
    prefix = f"tables.{table_name}"
    src = tsrc.sources[index] if index < len(tsrc.sources) else None
    source = f"{prefix}.sources[{index}]"
    if src is None:
        return prefix
    for j, rule in enumerate(src.exclude):
        if rule.reason == reason:
            return f"{source}.exclude[{j}] (when: {json.dumps(rule.when)})"
    if reason == NO_CUSTOMER:
        return _column_key(source, src, "customer_id")
    if reason.endswith(": duplicate key"):
        cols = reason.removesuffix(": duplicate key").split("/")
        return f"the mappings of {', '.join(cols)} in {source}.columns (a repeated key)"
    found = _NOT_VALID.match(reason)
    if found:
        col, dtype = found.groups()
        mapping = src.columns.get(col)
        fmt = mapping.format if isinstance(mapping, ColumnMap) else None
        if fmt:
            return f"{source}.columns.{col}.format ({json.dumps(fmt)})"
        if dtype == "timestamp":
            if tsrc.ts_format:
                return f"{prefix}.ts_format ({json.dumps(tsrc.ts_format)})"
            return f"{prefix}.ts_format (not set: ISO timestamps only)"
        if dtype == "date":
            return f"{source}.columns.{col}.format (not set: ISO dates only)"
        if mapping is None and col in tsrc.types:
            return f"{prefix}.types.{col} ({tsrc.types[col]})"
        return _column_key(source, src, col)
    missing = _MISSING.match(reason)
    if missing:
        return _column_key(source, src, missing.group(1))
    return source


def _column_key(source: str, src: SourceFile, col: str) -> str:
    mapping = src.columns.get(col)
    if mapping is None:
        return f"{source}.columns.{col} (not set: the raw column {json.dumps(col)} is read)"
    if isinstance(mapping, str):
        return f"{source}.columns.{col} (from {json.dumps(mapping)})"
    if mapping.from_ is not None:
        return f"{source}.columns.{col} (from {json.dumps(mapping.from_)})"
    return f"{source}.columns.{col} (expr {json.dumps(mapping.expr)})"


def connect(state: StateDirs, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that spills to the state folder."""
    con = duckdb.connect()
    spill = state.home / "tmp" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET temp_directory = {sql_literal(str(spill))}")
    con.execute("SET preserve_insertion_order = true")
    if memory_limit:
        con.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
    return con


def ingest(
    cfg: DatasetConfig,
    state: StateDirs,
    progress: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest every table of a dataset; write a JSON report beside the accepted data. Raises
    ``QuarantineError`` (after writing everything else) when a table quarantined too much."""
    con = connect(state)
    try:
        reports = {}
        for name in cfg.tables:
            if progress:
                progress(name)
            reports[name] = ingest_table(con, cfg, name, state)
    finally:
        con.close()
    report = IngestReport(cfg.name, reports)
    with atomic_path(Catalog(state, cfg.name).report_path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2))
    if any(t.failed for t in reports.values()):
        raise QuarantineError(report)
    return report


# --------------------------------------------------------------------------- type inference

#: A number as text: optional sign, digits with optional thousands commas, optional decimals and
#: exponent (" 12 ", "1,234.5", "-0.5", "3e4").
_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")
#: A leading zero before another digit ("02134", "007"): an identifier or a code, kept as text.
_LEADING_ZERO = re.compile(r"^[+-]?0\d")


@dataclass(frozen=True)
class InferredType:
    """What type inference decided for one undeclared text column, and why."""

    column: str
    dtype: Literal["double", "string"]
    non_empty: int
    unparsed: int
    reason: str

    def note(self) -> str:
        """One line for the CLI and the run record."""
        return f"type inferred: {self.column} -> {self.dtype} ({self.reason})"


@dataclass(frozen=True)
class ManyLevels:
    """A categorical column with very many levels (an id, a number read as text, free text)."""

    column: str
    levels: int
    unique_share: float

    def note(self) -> str:
        return (
            f"warning: categorical column {self.column} has {self.levels:,} levels "
            f"({self.unique_share:.0%} of its non-empty rows unique); declare its type or drop it"
        )


def _numeric_text(values: pd.Series) -> pd.Series:
    """The text values as numbers (NaN where a value does not parse); commas as thousands."""
    text = values.astype(str).str.strip()
    ok = text.str.fullmatch(_NUMBER) & text.str.contains(r"\d", regex=True)
    return pd.to_numeric(text.where(ok).str.replace(",", "", regex=False), errors="coerce")


def infer_numeric_types(
    frame: pd.DataFrame,
    declared: Mapping[str, str],
    columns: list[str],
    min_share: float = 0.99,
) -> tuple[pd.DataFrame, list[InferredType]]:
    """Undeclared text columns whose non-empty values (nearly) all parse as numbers become
    doubles (blanks and the rare unparsed value -> missing); a declared type always wins and a
    column with leading zeros ("02134") stays text. Returns the new frame and what was decided."""
    out = frame.copy()
    decided: list[InferredType] = []
    for col in columns:
        s = out[col]
        if col in declared or pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        text = s.astype("string").str.strip()
        text = text.where(text != "")
        non_empty = text.dropna()
        if non_empty.empty:
            continue
        parsed = _numeric_text(non_empty)
        n, bad = len(non_empty), int(parsed.isna().sum())
        if (n - bad) / n < min_share:
            continue
        if non_empty.str.match(_LEADING_ZERO).any():
            decided.append(
                InferredType(col, "string", n, bad, "numbers with leading zeros: kept as text")
            )
            continue
        out[col] = _numeric_text(text.fillna("")).astype("float64")
        blanks = len(s) - n
        parts = [f"{n - bad:,} of {n:,} non-empty values are numbers"]
        if blanks:
            parts.append(f"{blanks:,} empty -> missing")
        if bad:
            parts.append(f"{bad:,} unparsed -> missing")
        decided.append(InferredType(col, "double", n, bad, "; ".join(parts)))
    return out, decided


def many_level_columns(
    frame: pd.DataFrame,
    columns: list[str],
    max_levels: int = 1000,
    max_unique_share: float = 0.5,
    min_rows: int = 100,
) -> list[ManyLevels]:
    """Categorical columns with more than ``max_levels`` levels, or (with at least ``min_rows``
    non-empty rows) more than ``max_unique_share`` of them distinct."""
    found = []
    for col in columns:
        s = frame[col].dropna()
        levels = int(s.nunique())
        share = levels / len(s) if len(s) else 0.0
        if levels > max_levels or (len(s) >= min_rows and share > max_unique_share):
            found.append(ManyLevels(col, levels, share))
    return found
