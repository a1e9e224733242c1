"""Compile declared feature sets and labels to SQL (DuckDB dialect; transpiled for Spark).

Every function here is pure: it takes relations (a table name, a view or ``read_parquet(...)``), a
cutoff and the declarations, and returns SQL text. Running the SQL is ``features.build``'s job (and
``features.spark``'s, after :func:`to_spark_sql`). The SQL avoids what does not transpile or differs
between the engines: days are counted between DATEs, weekdays come from a day count (not dow
numbering), every divisor is wrapped in NULLIF, no ``* EXCLUDE``, no materialisation hints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from functools import lru_cache
from typing import Any, Literal, Protocol

import sqlglot
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlglot import exp

from features.definitions import LEVEL_INPUTS, Feature, FeatureSet
from features.sql import sql_date, sql_literal

_CTYPE = {"double": "DOUBLE", "integer": "BIGINT", "string": "VARCHAR"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: Per-order columns (aggregates over the order's non-return lines), computed only when used.
_ORDER_COLUMNS = {
    "n_lines": "count(*)",
    "n_units": "sum(quantity)",
    # 1900-01-01 was a Monday: 0 = Monday .. 6 = Sunday in every engine (no dow numbering)
    "order_weekday": "date_diff('day', DATE '1900-01-01', CAST(min(line_date) AS DATE)) % 7",
    "order_month": "month(min(line_date))",
}
_ORDER_WINDOW_COLUMNS = ("gap_days",)


@lru_cache(maxsize=4096)
def referenced_columns(sql: str) -> frozenset[str]:
    """Column names an SQL expression refers to (DuckDB dialect)."""
    return frozenset(c.name for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column))


class SqlRunner(Protocol):
    """What engine-neutral steps need from an engine: run DuckDB-dialect SQL (``?``
    parameters) and fetch a few rows (``fetchone`` / ``fetchall``). A DuckDB connection is
    one; ``features.spark.SparkRunner`` runs the same SQL on Spark."""

    def execute(self, query: str, parameters: Any = None) -> Any: ...


def spark_time_format(duckdb_format: str) -> str:
    """A DuckDB strptime format (``%Y-%m-%d %H:%M:%S``) as Spark's (``yyyy-MM-dd HH:mm:ss``)."""
    from sqlglot.dialects.duckdb import DuckDB
    from sqlglot.dialects.spark import Spark
    from sqlglot.time import format_time

    python = format_time(duckdb_format, DuckDB.TIME_MAPPING, DuckDB.TIME_TRIE) or duckdb_format
    return format_time(python, Spark.INVERSE_TIME_MAPPING, Spark.INVERSE_TIME_TRIE) or python


def duckdb_functions_to_spark(node: exp.Expression) -> exp.Expression:
    """DuckDB functions sqlglot passes through unchanged, as their Spark equivalents:
    ``try_strptime(x, fmt)`` (NULL when x does not parse) and ``list_extract(list, i)``."""
    if not isinstance(node, exp.Anonymous):
        return node
    name, args = str(node.this).lower(), list(node.expressions)
    if name == "try_strptime" and len(args) == 2 and isinstance(args[1], exp.Literal):
        fmt = exp.Literal.string(spark_time_format(args[1].this))
        return exp.Anonymous(this="TRY_TO_TIMESTAMP", expressions=[args[0], fmt])
    if name == "list_extract" and len(args) == 2:
        return exp.Anonymous(this="ELEMENT_AT", expressions=args)
    return node


def to_spark_sql(sql: str, parameters: Sequence[Any] | None = None) -> str:
    """Transpile DuckDB SQL to Spark SQL; ``?`` placeholders take ``parameters`` as literals."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    if parameters:
        values = iter(parameters)
        tree = tree.transform(
            lambda n: (
                sqlglot.parse_one(sql_literal(next(values)), read="duckdb")
                if isinstance(n, exp.Placeholder)
                else n
            )
        )
    return tree.transform(duckdb_functions_to_spark).sql(dialect="spark")


#: Spark master URLs: local[N] / local[*] (with optional retries), standalone, YARN, Kubernetes.
_MASTER = re.compile(
    r"^(local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?|spark://[^\s/]+(/)?|yarn|k8s://\S+)$"
)
_MEMORY = re.compile(r"^[1-9]\d*[kmgt]?$", re.IGNORECASE)
#: Session settings Patron fixes: the DuckDB parity relies on them (``features.spark.SPARK_CONF``).
FIXED_SPARK_CONF = (
    "spark.sql.session.timeZone",
    "spark.sql.ansi.enabled",
    "spark.sql.timestampType",
)


class EngineConfig(BaseModel):
    """What runs ingestion validation, features and labels of a dataset (``engine:`` in its
    YAML): DuckDB in process (the default), or Spark at a master URL with its resources. The
    same SQL runs on both (DuckDB's, transpiled for Spark)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["duckdb", "spark"] = Field(default="duckdb", description="duckdb | spark")
    master: str = Field(
        default="local[2]",
        description="Spark master URL: local[N], spark://host:port, yarn, k8s://https://host:port",
    )
    app_name: str = Field(default="patron", min_length=1, description="Spark application name")
    driver_memory: str | None = Field(default=None, description="spark.driver.memory, e.g. 2g")
    executor_memory: str | None = Field(default=None, description="spark.executor.memory")
    executor_cores: int | None = Field(default=None, ge=1, description="spark.executor.cores")
    shuffle_partitions: int | None = Field(
        default=None, ge=1, description="spark.sql.shuffle.partitions (default 4 on local[N])"
    )
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="further Spark settings (spark.*)"
    )

    @field_validator("master")
    @classmethod
    def _master_url(cls, v: str) -> str:
        if not _MASTER.match(v.strip()):
            raise ValueError(
                f"{v!r} is not a Spark master URL (local[2], local[*], spark://host:7077, "
                "yarn, k8s://https://host:6443)"
            )
        return v.strip()

    @field_validator("driver_memory", "executor_memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not _MEMORY.match(v.strip()):
            raise ValueError(f"{v!r} is not a Spark memory size (e.g. 512m, 2g)")
        return None if v is None else v.strip().lower()

    @field_validator("conf")
    @classmethod
    def _conf_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not key.startswith("spark."):
                raise ValueError(f"{key!r} is not a Spark setting (spark.*)")
            if key in FIXED_SPARK_CONF:
                raise ValueError(f"{key} is fixed by Patron (the DuckDB parity relies on it)")
        return v

    def spark_conf(self) -> dict[str, str]:
        """The Spark settings this config asks for (resources, then ``conf``)."""
        out = {
            "spark.driver.memory": self.driver_memory,
            "spark.executor.memory": self.executor_memory,
            "spark.executor.cores": self.executor_cores,
            "spark.sql.shuffle.partitions": self.shuffle_partitions,
        }
        settings = {k: str(v) for k, v in out.items() if v is not None}
        for key, value in self.conf.items():
            settings[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return settings

    def describe(self) -> str:
        """The engine as a log line names it: ``duckdb`` or ``spark (local[2])``."""
        return "duckdb" if self.kind == "duckdb" else f"spark ({self.master})"


def check_feature_set(fs: FeatureSet) -> None:
    """Raise ValueError unless names are unique snake case and derived features use base ones."""
    seen: set[str] = set()
    base = {f.name for f in fs.features if f.level != "derived"}
    for f in fs.features:
        if not _NAME.match(f.name) or f.name in seen:
            raise ValueError(f"feature name {f.name!r} is not unique lower snake case")
        seen.add(f.name)
        if f.level == "derived":
            missing = referenced_columns(f.sql) - base
            if missing:
                raise ValueError(
                    f"derived feature {f.name!r} uses {sorted(missing)}, which are "
                    f"not non-derived features of {fs.name!r}"
                )


def lines_sql(source: str, as_of: date) -> str:
    """Transaction lines up to and including day ``as_of`` with their ``days_ago``."""
    return f"""
    SELECT customer_id, order_id, category, product_id,
           CAST(amount AS DOUBLE) AS amount,
           CAST(quantity AS DOUBLE) AS quantity,
           (coalesce(is_return, FALSE) OR amount < 0) AS is_return,
           CAST(ts AS DATE) AS line_date,
           date_diff('day', CAST(ts AS DATE), {sql_date(as_of)}) AS days_ago
    FROM {source}
    WHERE CAST(ts AS DATE) <= {sql_date(as_of)}"""


_SEP = ",\n           "


def _cols(feats: list[Feature]) -> str:
    return _SEP.join(f"{f.sql} AS {f.name}" for f in feats)


def _orders_ctes(source: str, as_of: date, feats: list[Feature]) -> list[str]:
    """lines -> orders (only the per-order columns the features use) -> f_orders."""
    used = set().union(*(referenced_columns(f.sql) for f in feats))
    order_cols = "".join(f"{_SEP}{sql} AS {n}" for n, sql in _ORDER_COLUMNS.items() if n in used)
    ctes = [
        f"lines AS ({lines_sql(source, as_of)}\n)",
        f"""orders AS (
    SELECT customer_id, order_id, max(days_ago) AS days_ago, sum(amount) AS amount{order_cols}
    FROM lines WHERE NOT is_return
    GROUP BY customer_id, order_id
)""",
    ]
    rel = "orders"
    if used & set(_ORDER_WINDOW_COLUMNS):
        # ties (two orders on one day) give a gap of 0 whichever comes first
        ctes.append("""orders_seq AS (
    SELECT *,
           lag(days_ago) OVER (PARTITION BY customer_id ORDER BY days_ago DESC) - days_ago
               AS gap_days
    FROM orders
)""")
        rel = "orders_seq"
    cols = _SEP.join(["customer_id", *(f"{f.sql} AS {f.name}" for f in feats)])
    ctes.append(f"f_orders AS (\n    SELECT {cols}\n    FROM {rel} GROUP BY customer_id\n)")
    return ctes


def _grouped(name: str, rel: str, feats: list[Feature], key: str = "customer_id") -> str:
    return (
        f"{name} AS (\n    SELECT {key},\n           {_cols(feats)}\n"
        f"    FROM {rel} GROUP BY {key}\n)"
    )


def _categories_ctes(feats: list[Feature]) -> list[str]:
    return [
        """category_spend AS (
    SELECT customer_id, category, sum(amount) AS amount
    FROM lines WHERE NOT is_return AND category IS NOT NULL
    GROUP BY customer_id, category
)""",
        """category_shares AS (
    SELECT customer_id, category, amount,
           amount / NULLIF(sum(amount) OVER (PARTITION BY customer_id), 0.0) AS share
    FROM category_spend
)""",
        _grouped("f_categories", "category_shares", feats),
    ]


def _events_ctes(events: str, as_of: date, feats: list[Feature]) -> list[str]:
    a = sql_date(as_of)
    return [
        f"""events_seen AS (
    SELECT customer_id, lower(event_type) AS event_type,
           date_diff('day', CAST(ts AS DATE), {a}) AS days_ago
    FROM {events}
    WHERE CAST(ts AS DATE) <= {a}
)""",
        _grouped("f_events", "events_seen", feats),
    ]


def _contacts_ctes(campaign_history: str, as_of: date, feats: list[Feature]) -> list[str]:
    """Contacts of the treatment arms sent on or before T; responses are read by the features,
    which apply the response-time rule (``CONTACT_RESPONSE_DAYS``) to ``days_ago``."""
    a = sql_date(as_of)
    return [
        f"""contacts_seen AS (
    SELECT customer_id,
           CAST(campaign_id AS VARCHAR) AS campaign_id,
           CAST(offer_id AS VARCHAR) AS offer_id,
           coalesce(CAST(responded AS BOOLEAN), FALSE) AS responded,
           NULLIF(lower(trim(CAST(reason AS VARCHAR))), '') AS reason,
           date_diff('day', CAST(ts AS DATE), {a}) AS days_ago
    FROM {campaign_history}
    WHERE CAST(ts AS DATE) <= {a}
      AND coalesce(lower(trim(CAST("group" AS VARCHAR))), '') <> 'control'
)""",
        *([_grouped("f_contacts", "contacts_seen", feats)] if feats else []),
    ]


def _offer_contacts_ctes(offers: str, feats: list[Feature]) -> list[str]:
    """The contacts with the kind of their offer (one kind per offer id)."""
    return [
        f"""offer_kinds AS (
    SELECT CAST(offer_id AS VARCHAR) AS offer_id,
           min(lower(trim(CAST(kind AS VARCHAR)))) AS offer_kind
    FROM {offers} GROUP BY CAST(offer_id AS VARCHAR)
)""",
        """offer_contacts_seen AS (
    SELECT c.customer_id, c.campaign_id, c.offer_id, c.responded, c.reason, c.days_ago,
           k.offer_kind
    FROM contacts_seen c LEFT JOIN offer_kinds k ON c.offer_id = k.offer_id
)""",
        _grouped("f_offer_contacts", "offer_contacts_seen", feats),
    ]


def _customers_ctes(customers: str, as_of: date, feats: list[Feature]) -> list[str]:
    # one row per customer by contract; min() keeps the result defined if a table repeats one
    wrapped = [Feature(f.name, f.level, f"min({f.sql})", f.dtype) for f in feats]
    return [
        f"""customers_seen AS (
    SELECT *, date_diff('day', CAST(signup_date AS DATE), {sql_date(as_of)}) AS signup_days_ago
    FROM {customers}
)""",
        _grouped("f_customers", "customers_seen", wrapped),
    ]


def _households_ctes(households: str, feats: list[Feature]) -> list[str]:
    cols = "".join(f", a.{f.name}" for f in feats)
    return [
        f"""household_map AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id,
           min(CAST(household_id AS VARCHAR)) AS household_id
    FROM {households} GROUP BY CAST(customer_id AS VARCHAR)
)""",
        """customer_household AS (
    SELECT c.customer_id,
           coalesce(m.household_id, '__customer__:' || CAST(c.customer_id AS VARCHAR))
               AS household_id
    FROM (SELECT DISTINCT customer_id FROM orders) c
    LEFT JOIN household_map m ON CAST(c.customer_id AS VARCHAR) = m.customer_id
)""",
        """household_orders AS (
    SELECT ch.household_id, o.customer_id, o.days_ago, o.amount
    FROM orders o JOIN customer_household ch ON o.customer_id = ch.customer_id
)""",
        _grouped("household_agg", "household_orders", feats, key="household_id"),
        f"""f_households AS (
    SELECT ch.customer_id{cols}
    FROM customer_household ch JOIN household_agg a ON ch.household_id = a.household_id
)""",
    ]


def features_sql(
    source: str,
    as_of: date,
    fs: FeatureSet,
    *,
    events: str | None = None,
    customers: str | None = None,
    households: str | None = None,
    campaign_history: str | None = None,
    offers: str | None = None,
) -> str:
    """SQL computing feature set ``fs`` at ``as_of`` for every customer with an order by then.

    ``events``, ``customers``, ``households`` (customer_id, household_id), ``campaign_history``
    and ``offers`` are the optional input relations; a set with features at their level needs
    them. Columns: customer_id, then the features in declaration order; rows ordered by
    customer_id.
    """
    check_feature_set(fs)
    given = {
        "transactions": source,
        "events": events,
        "customers": customers,
        "households": households,
        "campaign_history": campaign_history,
        "offers": offers,
    }
    for f in fs.features:
        for needed in LEVEL_INPUTS[f.level]:
            if given[needed] is None:
                raise ValueError(f"feature {f.name!r} of {fs.name!r} needs the {needed!r} relation")
    by_level = {lvl: [f for f in fs.features if f.level == lvl] for lvl in LEVEL_INPUTS}

    ctes = _orders_ctes(source, as_of, by_level["orders"])
    joins: list[tuple[str, list[Feature]]] = []  # (cte, its features), left-joined to f_orders
    if by_level["lines"]:
        ctes.append(_grouped("f_lines", "lines", by_level["lines"]))
        joins.append(("f_lines", by_level["lines"]))
    if by_level["categories"]:
        ctes += _categories_ctes(by_level["categories"])
        joins.append(("f_categories", by_level["categories"]))
    if by_level["events"] and events is not None:
        ctes += _events_ctes(events, as_of, by_level["events"])
        joins.append(("f_events", by_level["events"]))
    if by_level["customers"] and customers is not None:
        ctes += _customers_ctes(customers, as_of, by_level["customers"])
        joins.append(("f_customers", by_level["customers"]))
    if by_level["households"] and households is not None:
        ctes += _households_ctes(households, by_level["households"])
        joins.append(("f_households", by_level["households"]))
    if (by_level["contacts"] or by_level["offer_contacts"]) and campaign_history is not None:
        ctes += _contacts_ctes(campaign_history, as_of, by_level["contacts"])
        if by_level["contacts"]:
            joins.append(("f_contacts", by_level["contacts"]))
    if by_level["offer_contacts"] and offers is not None:
        ctes += _offer_contacts_ctes(offers, by_level["offer_contacts"])
        joins.append(("f_offer_contacts", by_level["offer_contacts"]))

    base_cols = ["o.customer_id", *(f"o.{f.name}" for f in by_level["orders"])]
    base_cols += [f"{f.sql} AS {f.name}" for f in by_level["context"]]
    join_sql = ""
    if by_level["context"]:
        join_sql += f"\n    CROSS JOIN (SELECT {sql_date(as_of)} AS cutoff) ctx"
    for i, (cte, feats) in enumerate(joins):
        alias = f"j{i}"
        join_sql += f"\n    LEFT JOIN {cte} {alias} ON o.customer_id = {alias}.customer_id"
        for f in feats:
            col = f"{alias}.{f.name}"
            base_cols.append(
                f"coalesce({col}, {f.default}) AS {f.name}" if f.default is not None else col
            )
    ctes.append(f"base AS (\n    SELECT {_SEP.join(base_cols)}\n    FROM f_orders o{join_sql}\n)")
    out = [
        f"CAST({f.sql if f.level == 'derived' else f.name} AS {_CTYPE[f.dtype]}) AS {f.name}"
        for f in fs.features
    ]
    final = ",\n       ".join(["customer_id", *out])
    with_ctes = ",\n".join(ctes)
    return f"""
WITH {with_ctes}
SELECT {final}
FROM base
ORDER BY customer_id"""


def churn_label_sql(source: str, as_of: date, horizon_days: int, lookback_days: int) -> str:
    """Churn at ``as_of``: an order in the lookback window and none in (as_of, as_of + horizon]."""
    return f"""
WITH o AS (
    SELECT customer_id,
           date_diff('day', CAST(ts AS DATE), {sql_date(as_of)}) AS days_ago
    FROM {source}
    WHERE NOT (coalesce(is_return, FALSE) OR amount < 0)
),
active AS (
    SELECT DISTINCT customer_id FROM o WHERE days_ago >= 0 AND days_ago < {lookback_days}
),
future AS (
    SELECT DISTINCT customer_id FROM o WHERE days_ago < 0 AND days_ago >= -{horizon_days}
)
SELECT a.customer_id, CASE WHEN f.customer_id IS NULL THEN 1 ELSE 0 END AS label
FROM active a LEFT JOIN future f ON a.customer_id = f.customer_id
ORDER BY a.customer_id"""
