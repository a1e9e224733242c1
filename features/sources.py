"""Dataset configs (YAML) map raw files onto the canonical tables; ``ingest`` validates every row.

A dataset YAML names, per canonical table, one or more source files and how their raw columns map to
canonical columns. A column mapping is either the raw column's name or an object with exactly one of
``from`` (raw column), ``expr`` (a DuckDB SQL expression over the raw columns), plus optional
``values`` (raw value -> canonical value) and ``format`` (strptime format for timestamps / dates).
``exclude`` rules (SQL over canonical columns) send matching rows to quarantine with the given
reason. A source file may be gzip-compressed, a ``member`` of a zip or tar archive, or
whitespace-aligned / fixed-width text (a ``format`` object; ``features.readers``).

Before any row is read, every mapping is bound against the file's columns: a raw column that is not
there, or an expression DuckDB cannot bind, raises ``DatasetError`` — one line naming the dataset
YAML, the config key, the file's columns and the closest match. ``check_dataset`` is the dry run
of the same classification on a file's first rows.

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
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from features.catalog import Catalog
from features.contracts import DUCKDB_TYPES, NO_CUSTOMER, TABLES, Table
from features.engine import EngineConfig, SqlRunner
from features.linkage import IdentityConfig
from features.readers import (
    FIELDS,
    ReadError,
    SourceFormat,
    closest,
    error_line,
    listed,
    readable_path,
    relation,
)
from features.sql import parquet_relation, quote_ident, sql_literal
from features.store import StateDirs, atomic_path

TRUE_TEXT = ("true", "t", "yes", "y", "1")
FALSE_TEXT = ("false", "f", "no", "n", "0")


class ColumnMap(BaseModel):
    """How one canonical column is read from a raw file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", description="raw column name")
    expr: str | None = Field(default=None, description="DuckDB SQL expression over raw columns")
    values: dict[str, Any] | None = Field(default=None, description="raw value -> canonical value")
    format: str | None = Field(default=None, description="strptime format for timestamps / dates")
    control: str | None = Field(
        default=None,
        description="campaign_history.group only: the raw value of the control group; every "
        "other value is a treatment arm, kept in the column `arm` (renamed by `values`)",
    )

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
    member: str | None = Field(
        default=None, description="the file to read inside a zip or tar archive at `path`"
    )
    format: SourceFormat = Field(
        default="auto",
        description="auto | csv | parquet, or {kind: fixed_width, widths: [...]} | "
        "{kind: whitespace} for aligned text",
    )
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
    engine: EngineConfig = Field(
        default_factory=EngineConfig,
        description="what runs ingestion, features and labels: duckdb (default) or spark",
    )
    identity: IdentityConfig = Field(
        default_factory=IdentityConfig,
        description="the single customer view: resolve duplicate records to one master id at "
        "ingest (docs/customer_processing.md, section 7)",
    )
    base_dir: Path = Field(default=Path("."), exclude=True)
    config_path: Path | None = Field(default=None, exclude=True, description="the YAML read")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"dataset name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v

    @field_validator("synthetic", "engine", mode="before")
    @classmethod
    def _expand_synthetic(cls, v: Any) -> Any:
        # `${VAR:-default}` in a generator parameter (e.g. n_customers) or in the engine (e.g.
        # the Spark master URL), as in paths
        return _expand_strings(v)

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, v: dict[str, TableSource]) -> dict[str, TableSource]:
        unknown = sorted(set(v) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown tables {unknown}; known: {sorted(TABLES)}")
        return v

    @model_validator(mode="after")
    def _identity_applies(self) -> DatasetConfig:
        if not self.identity.resolve_duplicates:
            return self
        key = "identity.resolve_duplicates"
        if self.engine.kind == "spark":
            raise ValueError(
                f"{key}: not available on the Spark engine (engine.kind: spark); resolve the "
                "duplicates on DuckDB or switch the option off"
            )
        if "labelled" in self.tables:
            raise ValueError(
                f"{key}: a labelled table is a ready frame with no rule to combine two "
                "records' rows; switch the option off for this dataset"
            )
        if self.identity.merge_map == "derived" and "customers" not in self.tables:
            raise ValueError(
                "identity.merge_map: 'derived' links the customers table, and the dataset has "
                "none: add a customers table or name a merge map file"
            )
        return self

    def merge_map_path(self, state: StateDirs) -> Path | None:
        """The merge map file the ``identity`` option names (None: derived by linking)."""
        raw = self.identity.merge_map
        return None if raw == "derived" else self.resolve_path(raw, state)

    def resolve_path(self, raw: str, state: StateDirs) -> Path:
        """Expand ``{home}`` and environment variables; relative paths are relative to the YAML."""
        expanded = expand_vars(raw.replace("{home}", str(state.home)))
        path = Path(expanded).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def where(self) -> str:
        """The dataset's YAML file as a message names it (relative to the working folder)."""
        if self.config_path is None:
            return f"dataset {self.name}"
        try:
            return str(self.config_path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.config_path)


class DatasetError(ValueError):
    """A dataset config that does not fit its files: one line naming the YAML file and the key."""

    def __init__(self, cfg: DatasetConfig, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{cfg.where()}: {key}: {message}")


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


def _expand_strings(value: Any) -> Any:
    """``expand_vars`` over every string of a parsed YAML value (mappings and lists walked)."""
    if isinstance(value, str):
        return expand_vars(value)
    if isinstance(value, dict):
        return {k: _expand_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_strings(v) for v in value]
    return value


def load_dataset(ref: str | Path, search_dir: Path | None = None) -> DatasetConfig:
    """Load a dataset config from a YAML path, or by name from ``experiments/datasets/``."""
    path = Path(ref)
    if not path.suffix:
        base = search_dir or Path(__file__).resolve().parent.parent / "experiments" / "datasets"
        path = base / f"{ref}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"dataset config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        cfg = DatasetConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{_shown(path)}: {validation_line(exc)}") from None
    return cfg.model_copy(update={"base_dir": path.resolve().parent, "config_path": path.resolve()})


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


#: Segments pydantic adds to an error's location for a union's branches (not YAML keys).
_BRANCH = re.compile(r"^(literal|tagged-union|function-after|function-before|union)\[")


def validation_line(exc: ValidationError) -> str:
    """A config's validation errors on one line, each at its YAML key (``sources[0].format``);
    a union's branch that did not apply (a text value where an object was given) is left out."""
    errors = exc.errors()
    if len(errors) > 1:  # an object given where a plain value was also allowed: not that branch
        errors = [
            e for e in errors if not (e["type"] == "literal_error" and isinstance(e["input"], dict))
        ] or errors
    parts = []
    for err in errors:
        key, skip_tag = "", False
        for part in err["loc"]:
            if skip_tag:
                skip_tag = False
                continue
            if isinstance(part, int):
                key += f"[{part}]"
            elif _BRANCH.match(part):
                skip_tag = part.startswith("tagged-union[")  # the next segment is the tag
            else:
                key += f".{part}" if key else part
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)


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
    #: counts of the applied merge map when the dataset's ``identity`` option is on
    identity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            **({"identity": self.identity} if self.identity is not None else {}),
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
        t = ", ".join(sql_literal(v) for v in TRUE_TEXT)
        f = ", ".join(sql_literal(v) for v in FALSE_TEXT)
        return (
            f"(CASE WHEN lower({raw}) IN ({t}) THEN TRUE WHEN lower({raw}) IN ({f}) THEN FALSE END)"
        )
    if dtype in ("timestamp", "date") and fmt:
        return f"CAST(try_strptime({raw}, {sql_literal(fmt)}) AS {DUCKDB_TYPES[dtype]})"
    return f"TRY_CAST({raw} AS {DUCKDB_TYPES[dtype]})"


@dataclass(frozen=True)
class SourceRead:
    """One source file opened for reading: its relation SQL, raw columns and manifest entry."""

    index: int
    src: SourceFile
    key: str  # tables.<table>.sources[<i>]
    label: str  # the file name, or archive:member
    reader: str
    raw_cols: list[str]
    fields: bool  # the reader counts each line's fields (whitespace text)
    manifest: dict[str, Any]
    file: Path | None = None  # the file read (an archive member: extracted into the work folder)


def open_source(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    table_name: str,
    index: int,
    state: StateDirs,
    workdir: Path,
    limit: int | None = None,
    max_bytes: int | None = None,
    digest: bool = True,
) -> SourceRead:
    """Open one source (extracting an archive member into ``workdir``); its columns are read
    into the empty temp table ``__probe`` that the mapping is then bound against."""
    src = cfg.tables[table_name].sources[index]
    key = f"tables.{table_name}.sources[{index}]"
    path = cfg.resolve_path(src.path, state)
    if not path.exists():
        raise FileNotFoundError(f"{cfg.where()}: {key}.path: source file not found: {path}")
    label = path.name
    try:
        file, member = readable_path(path, src.member, workdir, max_bytes)
        label = f"{path.name}:{member}" if member else path.name
        reader = relation(con, file, src.format, src.read_options, limit)
        con.execute(f"CREATE OR REPLACE TEMP TABLE __probe AS SELECT * FROM {reader} r LIMIT 0")
    except ReadError as exc:
        raise DatasetError(cfg, f"{key}.{exc.key}", str(exc)) from exc
    except (duckdb.Error, OSError) as exc:
        raise DatasetError(cfg, key, f"{label} cannot be read: {error_line(exc)}") from exc
    described = [str(r[0]) for r in con.execute("DESCRIBE __probe").fetchall()]
    manifest: dict[str, Any] = {"path": str(path)}
    if digest:
        manifest["sha256"] = _sha256(path)
    if member:
        manifest["member"] = member
    return SourceRead(
        index=index,
        src=src,
        key=key,
        label=label,
        reader=reader,
        raw_cols=[c for c in described if c != FIELDS],
        fields=FIELDS in described,
        manifest=manifest,
        file=file,
    )


_UNBOUND = re.compile(
    r'Referenced column "([^"]+)" not found|does not have a column named "([^"]+)"'
)


def check_columns(
    con: duckdb.DuckDBPyConnection, cfg: DatasetConfig, table: Table, source: SourceRead
) -> None:
    """Every mapping of a source refers to columns its file has (bound against ``__probe``);
    else a ``DatasetError`` naming the key, the file's columns and the closest match."""
    src, raw_cols = source.src, source.raw_cols
    lower = {c.lower() for c in raw_cols}  # DuckDB resolves names case-insensitively

    def no_column(key: str, raw: str, what: str = "no raw column") -> DatasetError:
        near = closest(raw, raw_cols)
        hint = f"closest {json.dumps(near)}" if near else "no close match"
        return DatasetError(
            cfg,
            key,
            f"{what} {json.dumps(raw)} in {source.label} ({hint}; columns: {listed(raw_cols)})",
        )

    extra = [c for c in src.columns if c not in table.names]
    if extra and not table.passthrough:
        near = closest(extra[0], table.names)
        hint = f"closest {json.dumps(near)}" if near else "no close match"
        raise DatasetError(
            cfg,
            f"{source.key}.columns.{extra[0]}",
            f"{table.name} has no canonical column {json.dumps(extra[0])} ({hint}; "
            f"canonical columns: {listed(table.names)})",
        )
    for name, mapping in src.columns.items():
        key = f"{source.key}.columns.{name}"
        if (
            isinstance(mapping, ColumnMap)
            and mapping.control is not None
            and (name != "group" or table.name != "campaign_history")
        ):
            raise DatasetError(
                cfg, f"{key}.control", "only campaign_history's group column names a control value"
            )
        m = (
            mapping
            if isinstance(mapping, ColumnMap)
            else ColumnMap.model_validate({"from": mapping})
        )
        if m.from_ is not None:
            if m.from_.lower() not in lower:
                raise no_column(key, m.from_)
            continue
        try:
            con.execute(f"DESCRIBE SELECT ({m.expr}) FROM __probe r")
        except duckdb.Error as exc:
            found = _UNBOUND.search(str(exc))
            if found:
                raise no_column(f"{key}.expr", found.group(1) or found.group(2)) from None
            raise DatasetError(
                cfg, f"{key}.expr", f"{json.dumps(m.expr)}: {error_line(exc)}"
            ) from None
    unmapped = [
        c.name
        for c in table.columns
        if c.required and c.name not in src.columns and c.name.lower() not in lower
    ]
    if len(unmapped) == 1:
        raise no_column(
            f"{source.key}.columns.{unmapped[0]}",
            unmapped[0],
            f"{table.name}.{unmapped[0]} is required but not mapped, and there is no raw column",
        )
    if unmapped:
        raise DatasetError(
            cfg,
            f"{source.key}.columns",
            f"required {', '.join(unmapped)} are not mapped, and {source.label} has no raw "
            f"columns of those names (columns: {listed(raw_cols)})",
        )


def _bound_source_sql(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    table: Table,
    tsrc: TableSource,
    source: SourceRead,
) -> tuple[str, list[str]]:
    """The classifying SELECT of a source, once it binds against ``__probe``; an exclusion rule
    that does not bind is named (``sources[i].exclude[j].when``) with the columns it may use."""
    probe, _, cols = _source_sql(table, tsrc, source, "__probe")
    try:
        con.execute(f"DESCRIBE {probe}")
    except duckdb.Error as exc:
        _, inner, _ = _source_sql(table, tsrc, replace_exclude(source), "__probe")
        usable = [c for c in cols if not c.startswith("__")]
        for j, rule in enumerate(source.src.exclude):
            try:
                con.execute(f"DESCRIBE SELECT ({rule.when}) FROM ({inner})")
            except duckdb.Error as rule_exc:
                found = _UNBOUND.search(str(rule_exc))
                key = f"{source.key}.exclude[{j}].when"
                if found:
                    raw = found.group(1) or found.group(2)
                    near = closest(raw, usable)
                    hint = f"closest {json.dumps(near)}" if near else "no close match"
                    raise DatasetError(
                        cfg,
                        key,
                        f"no column {json.dumps(raw)} ({hint}; an exclusion reads the canonical "
                        f"columns: {listed(usable)})",
                    ) from None
                raise DatasetError(
                    cfg, key, f"{json.dumps(rule.when)}: {error_line(rule_exc)}"
                ) from None
        raise DatasetError(
            cfg, source.key, f"the mapping of {source.label} does not bind: {error_line(exc)}"
        ) from None
    sql, _, cols = _source_sql(table, tsrc, source, source.reader)
    return sql, cols


def replace_exclude(source: SourceRead) -> SourceRead:
    """The same source without its exclusion rules."""
    from dataclasses import replace

    return replace(source, src=source.src.model_copy(update={"exclude": []}))


#: The column keeping a treated contact's arm when ``group`` names its ``control`` value.
ARM = "arm"


def arm_source(src: SourceFile) -> ColumnMap | None:
    """The ``group`` mapping of a source when it names a control value (arms are then kept)."""
    group = src.columns.get("group")
    return group if isinstance(group, ColumnMap) and group.control is not None else None


def _map_arms(mapped: dict[str, str | ColumnMap]) -> None:
    """A ``group`` mapping naming its control value becomes two: ``group`` = control for that
    value and treatment for any other, and ``arm`` = the other value (renamed by ``values``),
    NULL for control — several treatment arms, the control named once."""
    group = mapped.get("group")
    if not isinstance(group, ColumnMap) or group.control is None:
        return
    inner = quote_ident(group.from_) if group.from_ is not None else f"({group.expr})"
    raw = f"NULLIF(trim(CAST({inner} AS VARCHAR)), '')"
    control = sql_literal(group.control)
    mapped["group"] = ColumnMap.model_validate(
        {
            "expr": f"CASE WHEN {raw} = {control} THEN 'control' "
            f"WHEN {raw} IS NOT NULL THEN 'treatment' END"
        }
    )
    if ARM not in mapped:
        mapped[ARM] = ColumnMap.model_validate(
            {"expr": f"CASE WHEN {raw} <> {control} THEN {raw} END", "values": group.values}
        )


def _source_sql(
    table: Table, tsrc: TableSource, source: SourceRead, reader: str
) -> tuple[str, str, list[str]]:
    """One SELECT over a source file yielding canonical typed columns, raw text and the reason
    (and the inner SELECT without the reason); the mapping is checked by ``check_columns``."""
    src, raw_cols = source.src, source.raw_cols
    mapped: dict[str, str | ColumnMap] = {}
    for col in table.columns:
        if col.name in src.columns:
            mapped[col.name] = src.columns[col.name]
        elif col.name in raw_cols:
            mapped[col.name] = col.name
    for name in src.columns:
        if name not in table.names:
            mapped[name] = src.columns[name]
    used_raw = {m if isinstance(m, str) else m.from_ for m in mapped.values()}
    passthrough: list[str] = []
    if table.passthrough:
        passthrough = [c for c in raw_cols if c not in used_raw and c not in tsrc.drop]
        passthrough = [c for c in passthrough if c not in mapped]
        for name in passthrough:
            mapped[name] = name
    _map_arms(mapped)

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
    if source.fields:  # a whitespace line with a blank cell or a stray word: its fields shifted
        n = len(raw_cols)
        excl.insert(0, f"WHEN {FIELDS} <> {n} THEN {sql_literal(f'line: not {n} fields')}")
        selects.append(f"r.{FIELDS} AS {FIELDS}")
    reason_sql = "CASE " + " ".join(excl + reasons) + " END" if excl + reasons else "NULL"
    inner = (
        f"SELECT {source.index} AS __source, row_number() OVER () AS __row, "
        f"to_json(r) AS __raw_json, {', '.join(selects)} FROM {reader} r"
    )
    sql = f"SELECT *, {reason_sql} AS __reason FROM ({inner})"
    return sql, inner, table.names + [c for c in mapped if c not in table.names]


def source_sql(table: Table, tsrc: TableSource, source: SourceRead, reader: str) -> str:
    """The classifying SELECT of a bound source over ``reader`` (a relation of its raw rows):
    canonical typed columns, raw text, ``__source``, ``__row``, ``__raw_json``, ``__reason``."""
    return _source_sql(table, tsrc, source, reader)[0]


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_rows(con: SqlRunner, sql: str) -> int:
    """The single integer a ``SELECT count(*) ...`` query returns."""
    row = con.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"count query returned no row: {sql}")
    return int(row[0])


@dataclass(frozen=True)
class TablePlan:
    """One table's sources opened and bound: each source's classifying SELECT (DuckDB SQL over
    its reader), the output columns and the key columns whose repeats are quarantined."""

    parts: list[str]
    columns: list[str]
    sources: list[SourceRead]
    key_cols: list[str]


def plan_table(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
    workdir: Path,
    limit: int | None = None,
    max_bytes: int | None = None,
    digest: bool = True,
) -> TablePlan:
    """Open and bind one table's sources (a ``DatasetError`` naming the key when a mapping does
    not fit its file); reads only each file's columns."""
    table = TABLES[table_name]
    tsrc = cfg.tables[table_name]
    parts: list[str] = []
    all_cols: list[str] = []
    sources: list[SourceRead] = []
    versioned: set[str] = set()
    for i in range(len(tsrc.sources)):
        source = open_source(con, cfg, table_name, i, state, workdir, limit, max_bytes, digest)
        check_columns(con, cfg, table, source)
        sql, cols = _bound_source_sql(con, cfg, table, tsrc, source)
        versioned |= {
            c for c in table.versioned_by if c in source.src.columns or c in source.raw_cols
        }
        parts.append(sql)
        all_cols += [c for c in cols if c not in all_cols]
        sources.append(source)
    # a table with history (a mapped versioned_by column) has one row per key and version
    key_cols = [*table.key, *(c for c in table.versioned_by if c in versioned)] if table.key else []
    return TablePlan(parts, all_cols, sources, key_cols)


def duplicate_reason_sql(key_cols: list[str]) -> str:
    """The ``__reason`` of a classified row once repeated keys are quarantined: the first
    occurrence (file order, row order) of a key among the accepted rows is kept."""
    key = ", ".join(quote_ident(k) for k in key_cols)
    dup = f"{'/'.join(key_cols)}: duplicate key"
    return (
        f"CASE WHEN __reason IS NULL AND row_number() OVER (PARTITION BY {key}, "
        f"__reason IS NULL ORDER BY __source, __row) > 1 "
        f"THEN {sql_literal(dup)} ELSE __reason END"
    )


def classify(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
    workdir: Path,
    limit: int | None = None,
    max_bytes: int | None = None,
    digest: bool = True,
) -> tuple[list[str], list[SourceRead]]:
    """Read one table's sources (the first ``limit`` rows of each, or all) into the temp table
    ``__classified``: canonical typed columns, raw text, and a quarantine reason or NULL per row.
    Returns the output columns and the sources read."""
    plan = plan_table(con, cfg, table_name, state, workdir, limit, max_bytes, digest)
    sources = plan.sources
    union = " UNION ALL BY NAME ".join(f"({p})" for p in plan.parts)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __classified AS {union}")
    except duckdb.Error as exc:
        # a row DuckDB cannot read (a broken CSV line, an expression failing on a value)
        message = error_line(exc)
        named = [s for s in sources if s.manifest["path"] in message] or sources
        key = named[0].key if len(named) == 1 else f"tables.{table_name}"
        labels = ", ".join(s.label for s in named)
        raise DatasetError(cfg, key, f"reading {labels} failed: {message}") from exc
    if plan.key_cols:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __classified AS SELECT * REPLACE "
            f"({duplicate_reason_sql(plan.key_cols)} AS __reason) FROM __classified"
        )
    return plan.columns, sources


@contextmanager
def work_folder(state: StateDirs) -> Iterator[Path]:
    """A temporary folder in the state folder for extracted archive members; removed after."""
    base = state.home / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="extract-", dir=base) as tmp:
        yield Path(tmp)


#: Writes the rows of a query (DuckDB dialect) to a Parquet file, atomically.
ParquetCopy = Callable[[str, Path], None]


def duckdb_copy(con: duckdb.DuckDBPyConnection) -> ParquetCopy:
    """``ParquetCopy`` by DuckDB's COPY (out-of-core, one file)."""

    def copy(sql: str, path: Path) -> None:
        with atomic_path(path) as tmp:
            con.execute(f"COPY ({sql}) TO {sql_literal(str(tmp))} (FORMAT parquet)")

    return copy


def ingest_table(
    con: duckdb.DuckDBPyConnection,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
    workdir: Path | None = None,
) -> TableReport:
    """Validate every row of one table's sources; write accepted and quarantined rows atomically."""
    if workdir is None:
        with work_folder(state) as tmp:
            return ingest_table(con, cfg, table_name, state, tmp)
    all_cols, sources = classify(con, cfg, table_name, state, workdir)
    report = report_table(con, duckdb_copy(con), cfg, table_name, state, all_cols, sources)
    con.execute("DROP TABLE __classified")
    return report


def source_labels(sources: list[SourceRead]) -> list[str]:
    """Each source as the quarantine's ``source_file`` names it (``path`` or ``path:member``)."""
    return [
        f"{s.manifest['path']}:{s.manifest['member']}"
        if "member" in s.manifest
        else s.manifest["path"]
        for s in sources
    ]


def report_table(
    runner: SqlRunner,
    copy: ParquetCopy,
    cfg: DatasetConfig,
    table_name: str,
    state: StateDirs,
    all_cols: list[str],
    sources: list[SourceRead],
) -> TableReport:
    """Count the rows classified in ``__classified``, write the accepted rows (unless the table
    failed) and the quarantined ones with their reason, and check read = accepted + quarantined.
    The engine runs the SQL (``runner``) and writes the files (``copy``)."""
    tsrc = cfg.tables[table_name]
    files = [s.manifest for s in sources]
    counts = runner.execute(
        "SELECT __reason, count(*) FROM __classified GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    read = sum(int(n) for _, n in counts)
    by_reason = {str(reason): int(n) for reason, n in counts if reason is not None}
    failure = quarantine_failure(runner, table_name, tsrc, read, by_reason)
    accepted_path = Catalog(state, cfg.name).path(table_name)
    quarantine_path = state.quarantine(cfg.name) / f"{table_name}.parquet"
    select_cols = ", ".join(quote_ident(c) for c in all_cols)
    if failure:
        # a failed table is not written: later steps stop at "no ingested table" instead of
        # reading a half-empty (or an older) table as if this ingest had succeeded
        accepted_path.unlink(missing_ok=True)
    else:
        copy(
            f"SELECT {select_cols} FROM __classified WHERE __reason IS NULL "
            "ORDER BY __source, __row",
            accepted_path,
        )
    copy(
        "SELECT __reason AS reason, "
        f"list_extract({sql_literal(source_labels(sources))}, __source + 1) AS source_file, "
        "__row AS source_row, CAST(__raw_json AS VARCHAR) AS raw FROM __classified "
        "WHERE __reason IS NOT NULL "
        "ORDER BY __source, __row",
        quarantine_path,
    )
    accepted = count_rows(
        runner,
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
    report.check()
    return report


_NOT_VALID = re.compile(r"^(\w+): not a valid (\w+)$")
_MISSING = re.compile(r"^(\w+): missing$")


def quarantine_failure(
    con: SqlRunner,
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
    if reason.startswith("line: not ") and not isinstance(src.format, str):
        return (
            f"{source}.format (kind: {src.format.kind}; a blank cell or a value with spaces "
            "shifts the fields: kind fixed_width reads columns by position)"
        )
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


@dataclass(frozen=True)
class IngestStep:
    """Where an ingest is, for a progress display: the table being read, the bytes of source
    files read so far (within a table, its share from the engine's own query progress) out of
    all tables' source bytes, and the rows read by the tables done."""

    table: str
    bytes_done: int
    bytes_total: int
    rows_read: int


def source_bytes(cfg: DatasetConfig, state: StateDirs) -> dict[str, int]:
    """Each table's source files' size on disk (at least 1: a table always weighs something)."""
    sizes: dict[str, int] = {}
    for name, tsrc in cfg.tables.items():
        total = 0
        for src in tsrc.sources:
            path = cfg.resolve_path(src.path, state)
            total += path.stat().st_size if path.is_file() else 0  # else the read names the key
        sizes[name] = max(total, 1)
    return sizes


@contextmanager
def query_share(
    con: duckdb.DuckDBPyConnection, report: Callable[[float], None], every_s: float = 0.25
) -> Iterator[None]:
    """While the body runs, report the running query's progress (0-1, never going back) from a
    polling thread: DuckDB's ``query_progress`` of the connection, read beside the query."""
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    stop = threading.Event()
    best = 0.0

    def poll() -> None:
        nonlocal best
        while not stop.wait(every_s):
            share = con.query_progress() / 100.0
            if share > best:
                best = min(share, 0.99)
                report(best)

    thread = threading.Thread(target=poll, name="ingest-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _within(
    progress: Callable[[IngestStep], None], at: IngestStep, size: int
) -> Callable[[float], None]:
    """A table's share done as an ``IngestStep`` (its bytes counted in proportion)."""
    return lambda share: progress(
        IngestStep(at.table, at.bytes_done + int(share * size), at.bytes_total, at.rows_read)
    )


def ingest(
    cfg: DatasetConfig,
    state: StateDirs,
    progress: Callable[[IngestStep], None] | None = None,
) -> IngestReport:
    """Ingest every table of a dataset; write a JSON report beside the accepted data. Raises
    ``QuarantineError`` (after writing everything else) when a table quarantined too much.
    ``progress`` hears where the work is (``IngestStep``) as it goes."""
    from features.build import clear_identity, resolve_identity

    sizes = source_bytes(cfg, state)
    clear_identity(state, cfg.name)  # written again below only when the tables are re-keyed
    if cfg.engine.kind == "spark":  # the same classification, run by Spark (features.spark)
        from features.spark import ingest_tables_spark

        names = list(cfg.tables)

        def started(name: str) -> None:
            if progress:
                done = sum(sizes[n] for n in names[: names.index(name)])
                progress(IngestStep(name, done, sum(sizes.values()), 0))

        reports = ingest_tables_spark(cfg, state, started)
        if progress and names:
            rows = sum(r.read for r in reports.values())
            progress(IngestStep(names[-1], sum(sizes.values()), sum(sizes.values()), rows))
    else:
        reports = _ingest_tables_duckdb(cfg, state, sizes, progress)
    identity: dict[str, Any] | None = None
    if cfg.identity.resolve_duplicates:
        if any(t.failed for t in reports.values()):
            identity = {"skipped": "a table failed: duplicates are resolved after a full ingest"}
        else:
            try:
                identity = resolve_identity(
                    state, cfg.name, cfg.identity, cfg.merge_map_path(state)
                )
            except ValueError as exc:
                raise ValueError(f"{cfg.where()}: {exc}") from None
    report = IngestReport(cfg.name, reports, identity)
    with atomic_path(Catalog(state, cfg.name).report_path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2))
    if any(t.failed for t in reports.values()):
        raise QuarantineError(report)
    return report


def _ingest_tables_duckdb(
    cfg: DatasetConfig,
    state: StateDirs,
    sizes: Mapping[str, int],
    progress: Callable[[IngestStep], None] | None,
) -> dict[str, TableReport]:
    con = connect(state)
    total = sum(sizes.values())
    done, rows = 0, 0
    try:
        reports = {}
        with work_folder(state) as workdir:
            for name in cfg.tables:
                if progress is None:
                    reports[name] = ingest_table(con, cfg, name, state, workdir)
                    continue
                at = IngestStep(name, done, total, rows)
                progress(at)
                with query_share(con, _within(progress, at, sizes[name])):
                    reports[name] = ingest_table(con, cfg, name, state, workdir)
                done, rows = done + sizes[name], rows + reports[name].read
                progress(IngestStep(name, done, total, rows))
    finally:
        con.close()
    return reports


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
