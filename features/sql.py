"""SQL text helpers shared by every query builder: literals and identifiers, written once."""

from __future__ import annotations

from datetime import date
from typing import Any


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """A SQL literal (NULL, booleans, numbers, lists, text)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def sql_date(d: date) -> str:
    """A DATE literal."""
    return f"DATE '{d.isoformat()}'"


def parquet_relation(path: Any) -> str:
    """The relation reading one Parquet file."""
    return f"read_parquet({sql_literal(str(path))})"
