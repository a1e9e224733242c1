"""Writing the synthetic CRM files: chunk by chunk into CSV sinks and Parquet truth files,
then the offers, the product catalogue and the manifest (``generate``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.store import atomic_path
from features.synthetic.campaigns import (
    ARM_TRUTH_FILE,
    ARM_TRUTH_SCHEMA,
    UPLIFT_TRUTH_SCHEMA,
    campaign_tables,
)
from features.synthetic.columns import money_strings
from features.synthetic.config import (
    GENERATOR_VERSION,
    LAMBDA_MEAN,
    LINES_BASE,
    LINES_PER_SPEND,
    QTY_PER_SPEND,
    SyntheticConfig,
)
from features.synthetic.prospects import (
    FIRST_PURCHASE_TRUTH_FILE,
    FIRST_PURCHASE_TRUTH_SCHEMA,
    simulate_prospects,
)
from features.synthetic.purchases import (
    TRUTH_SCHEMA,
    Chunk,
    churn_truth_table,
    simulate_chunk,
    transactions_table,
)
from features.synthetic.world import World, build_world, cutoff_day


def _offers_table(world: World) -> pa.Table:
    """One cross-sell offer per category, three up-sell tiers and one retention offer."""
    k = len(world.category_names)
    mean_price = np.array(
        [world.product_price_cents[world.product_category == c].mean() / 100 for c in range(k)]
    )
    overall = float(mean_price.mean())
    ids = [f"XS_{name}" for name in world.category_names] + ["UP_T1", "UP_T2", "UP_T3", "RET_01"]
    categories: list[str | None] = [*world.category_names, None, None, None, None]
    kinds = ["cross_sell"] * k + ["up_sell"] * 3 + ["retention"]
    tiers: list[int | None] = [*(None for _ in range(k)), 1, 2, 3, None]
    basket = overall * (1 + QTY_PER_SPEND) * (1 + LINES_BASE + LINES_PER_SPEND)
    values = [*(0.35 * mean_price), 0.2 * overall, 0.45 * overall, 0.9 * overall]
    values.append(0.3 * basket * LAMBDA_MEAN)  # a year of margin from a retained customer
    costs = [0.1] * k + [0.5, 0.5, 0.5, 2.0]
    return pa.table(
        {
            "offer_id": pa.array(ids),
            "category": pa.array(categories, pa.string()),
            "kind": pa.array(kinds),
            "tier": pa.array(tiers, pa.int64()),
            "value": pa.array(np.round(values, 2)),
            "cost": pa.array(np.round(costs, 2)),
        }
    )


def _products_table(world: World) -> pa.Table:
    """The product catalogue: id, category, tier (1..3) and list price."""
    return pa.table(
        {
            "product_id": pa.array(world.product_ids),
            "category": pa.array(world.category_names).take(pa.array(world.product_category)),
            "tier": pa.array(world.product_tier + 1, pa.int64()),
            "price": money_strings(world.product_price_cents),
        }
    )


class _CsvSink:
    """Append pyarrow tables to a CSV file with a plain (unquoted) header."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.stream = pa.OSFile(str(path), "wb")
        self.stream.write((",".join(schema.names) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=16_384)
        self.schema = schema
        self.writer = pacsv.CSVWriter(self.stream, schema, write_options=options)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        self.stream.close()


def _config_record(cfg: SyntheticConfig) -> dict[str, object]:
    """The config as JSON for the manifest (no ``campaigns`` key when there are none and no
    ``arms`` key in single-offer campaigns, so such files stay identical to the generator's
    earlier output)."""
    record = cfg.model_dump(mode="json")
    if not cfg.campaigns:
        record.pop("campaigns")
    if cfg.prospects is None:  # as before prospects existed
        record.pop("prospects")
    for campaign in record.get("campaigns", []):
        if not campaign["arms"]:  # single-offer campaigns: as before multi-arm ones existed
            campaign.pop("arms")
    return record


def _chunk_tables(
    cfg: SyntheticConfig, world: World, chunk: Chunk, order_offset: int, id_width: int
) -> tuple[dict[str, pa.Table], int]:
    """A chunk's customers, duplicate and household truths and transactions, by file name,
    and the count of dirty transaction rows written on purpose."""
    transactions, dirty = transactions_table(cfg, world, chunk, order_offset, id_width)
    names = ("customers.csv", "truth_duplicates.csv", "truth_households.csv")
    tables = dict(zip(names, chunk.customers, strict=True))
    tables["transactions.csv"] = transactions
    return tables, dirty


def _write_tables(
    tables: dict[str, pa.Table], sinks: dict[str, _CsvSink], paths: dict[str, Path]
) -> None:
    """Append each table to its file's sink (opened with the first table's schema)."""
    for name, table in tables.items():
        if name not in sinks:
            sinks[name] = _CsvSink(paths[name], table.schema)
        sinks[name].write(table.cast(sinks[name].schema))


def _write_churn_truth(
    cfg: SyntheticConfig, chunk: Chunk, as_of: pa.Array, id_width: int, writer: pq.ParquetWriter
) -> int:
    """Write a chunk's churn truth rows; how many."""
    if not chunk.truth_cust.size:
        return 0
    truth = churn_truth_table(cfg, chunk, as_of, id_width)
    writer.write_table(truth)
    return int(truth.num_rows)


def generate(
    cfg: SyntheticConfig, out_dir: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Write the synthetic CRM files into ``out_dir`` and return the row count of each file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = build_world(cfg)
    cutoffs = sorted(set(cfg.truth_cutoffs))
    cutoff_days = [cutoff_day(cfg, c) for c in cutoffs]
    id_width = max(7, len(str(cfg.n_customers + cfg.n_prospects)))
    total = cfg.n_customers + cfg.n_prospects
    epoch_day = (cfg.start - date(1970, 1, 1)).days - 1  # cutoff days count the day T itself
    as_of = pa.array(np.array(cutoff_days, np.int32) + epoch_day, pa.int32()).cast(pa.date32())
    counts: dict[str, int] = {}
    n_dirty = 0
    names = [
        "transactions.csv",
        "customers.csv",
        "truth_duplicates.csv",
        "truth_households.csv",
        "truth_churn.parquet",
        "offers.csv",
        "products.csv",
        "MANIFEST.json",
    ]
    if cfg.campaigns:
        names += ["campaign_history.csv", "truth_uplift.parquet"]
    if cfg.prospects is not None:
        names += ["events.csv", FIRST_PURCHASE_TRUTH_FILE]
    multi_arm = any(c.arms for c in cfg.campaigns)
    if multi_arm:
        names.append(ARM_TRUTH_FILE)
    with ExitStack() as stack:
        paths = {name: stack.enter_context(atomic_path(out_dir / name)) for name in names}
        sinks: dict[str, _CsvSink] = {}
        truth_writer = pq.ParquetWriter(str(paths["truth_churn.parquet"]), TRUTH_SCHEMA)
        truth_rows = 0
        uplift_writer = (
            pq.ParquetWriter(str(paths["truth_uplift.parquet"]), UPLIFT_TRUTH_SCHEMA)
            if cfg.campaigns
            else None
        )
        uplift_rows = 0
        arm_writer = (
            pq.ParquetWriter(str(paths[ARM_TRUTH_FILE]), ARM_TRUTH_SCHEMA) if multi_arm else None
        )
        arm_rows = 0
        order_offset = 0
        for index, first in enumerate(range(0, cfg.n_customers, cfg.chunk_customers)):
            n = min(cfg.chunk_customers, cfg.n_customers - first)
            chunk = simulate_chunk(cfg, world, cutoff_days, index, first, n, id_width)
            tables, dirty = _chunk_tables(cfg, world, chunk, order_offset, id_width)
            order_offset += chunk.n_orders
            n_dirty += dirty
            if uplift_writer is not None and chunk.campaigns is not None:
                history, truth_up, truth_arms = campaign_tables(
                    cfg, chunk.campaigns, first, id_width
                )
                tables["campaign_history.csv"] = history
                uplift_writer.write_table(truth_up)
                uplift_rows += truth_up.num_rows
                if arm_writer is not None and truth_arms is not None:
                    arm_writer.write_table(truth_arms)
                    arm_rows += truth_arms.num_rows
            _write_tables(tables, sinks, paths)
            truth_rows += _write_churn_truth(cfg, chunk, as_of, id_width, truth_writer)
            if progress is not None:
                progress(first + n, total)
        if cfg.prospects is not None:
            fp_writer = pq.ParquetWriter(
                str(paths[FIRST_PURCHASE_TRUTH_FILE]), FIRST_PURCHASE_TRUTH_SCHEMA
            )
            fp_rows = 0
            for index, first in enumerate(range(0, cfg.n_prospects, cfg.chunk_customers)):
                n = min(cfg.chunk_customers, cfg.n_prospects - first)
                pros = simulate_prospects(cfg, world, cutoff_days, index, first, n, id_width)
                chunk = pros.chunk
                tables, dirty = _chunk_tables(cfg, world, chunk, order_offset, id_width)
                order_offset += chunk.n_orders
                n_dirty += dirty
                tables["events.csv"] = pros.events
                _write_tables(tables, sinks, paths)
                truth_rows += _write_churn_truth(cfg, chunk, as_of, id_width, truth_writer)
                fp_writer.write_table(pros.first_purchase_truth)
                fp_rows += pros.first_purchase_truth.num_rows
                if progress is not None:
                    progress(cfg.n_customers + first + n, total)
            fp_writer.close()
            counts[FIRST_PURCHASE_TRUTH_FILE] = fp_rows
        truth_writer.close()
        for name, sink in sinks.items():
            sink.close()
            counts[name] = sink.rows
        counts["truth_churn.parquet"] = truth_rows
        if uplift_writer is not None:
            uplift_writer.close()
            counts["truth_uplift.parquet"] = uplift_rows
        if arm_writer is not None:
            arm_writer.close()
            counts[ARM_TRUTH_FILE] = arm_rows
        for name, table in (
            ("offers.csv", _offers_table(world)),
            ("products.csv", _products_table(world)),
        ):
            sink = _CsvSink(paths[name], table.schema)
            sink.write(table)
            sink.close()
            counts[name] = sink.rows
        manifest = {
            "generator": "features.synthetic",
            "version": GENERATOR_VERSION,
            "config": _config_record(cfg),
            "rows": dict(sorted(counts.items())),
            "dirty_transaction_rows": n_dirty,
        }
        paths["MANIFEST.json"].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dict(sorted(counts.items()))
