"""The catalog: the one place that knows where canonical tables, ingest reports and feature
snapshots live in the state folder, and how to read them (as DataFrames or as DuckDB relations).

Every other module asks the catalog instead of building ``read_parquet(...)`` strings or paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from features.sql import parquet_relation
from features.store import StateDirs

#: How to get a canonical table that is missing, by table name.
HINTS = {
    "transactions": "run `patron ingest` first",
    "customers": "ingest a customers table",
    "events": "ingest an events table",
    "offers": "ingest an offers table",
    "products": "ingest a products table",
    "campaign_history": "the dataset config needs a campaign_history table (then `patron ingest`)",
    "labelled": "the dataset config needs a labelled table (then `patron ingest`)",
    "households": "run `patron customers link`",
    "merge_map": "run `patron customers link`",
}


@dataclass(frozen=True)
class Catalog:
    """Canonical tables and snapshots of one dataset in one state folder."""

    state: StateDirs
    dataset: str

    def path(self, table: str) -> Path:
        """Where a canonical table lives (it may not exist)."""
        return self.state.data(self.dataset) / f"{table}.parquet"

    def has(self, table: str) -> bool:
        return self.path(table).exists()

    def require(self, table: str) -> Path:
        """The table's path; a clear error naming the table and how to get it when missing."""
        path = self.path(table)
        if not path.exists():
            hint = HINTS.get(table, f"ingest a {table} table")
            raise FileNotFoundError(
                f"no ingested {table} table for dataset {self.dataset!r} at {path}: {hint}"
            )
        return path

    def relation(self, table: str) -> str:
        """A DuckDB relation over the table (raises when missing)."""
        return parquet_relation(self.require(table))

    def relation_or_none(self, table: str) -> str | None:
        return parquet_relation(self.path(table)) if self.has(table) else None

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The table as a DataFrame (raises when missing)."""
        return pd.read_parquet(self.require(table), columns=columns)

    def read_or_none(self, table: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        return pd.read_parquet(self.path(table), columns=columns) if self.has(table) else None

    def ingest_report(self) -> dict[str, Any]:
        """The dataset's ingest report (empty when the dataset was never ingested)."""
        path = self.state.data(self.dataset) / "ingest_report.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def report_path(self) -> Path:
        return self.state.data(self.dataset) / "ingest_report.json"

    # ----------------------------------------------------------------- snapshots

    def snapshot_folder(self, feature_set_key: str) -> Path:
        return self.state.snapshots(self.dataset, feature_set_key)

    def snapshot_path(self, feature_set_key: str, as_of: date) -> Path:
        return self.snapshot_folder(feature_set_key) / f"as_of={as_of.isoformat()}.parquet"

    def latest_snapshot(self, feature_set_key: str) -> tuple[date, Path]:
        """The most recent snapshot of a feature set (raises when there is none)."""
        folder = self.snapshot_folder(feature_set_key)
        found = sorted(folder.glob("as_of=*.parquet"))
        if not found:
            raise FileNotFoundError(f"no feature snapshot in {folder}; run `patron features` first")
        path = found[-1]
        return date.fromisoformat(path.stem.split("=", 1)[1]), path
