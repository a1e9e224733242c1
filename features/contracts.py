"""Canonical tables: the data contracts every dataset is mapped onto (PRODUCT.md, Data contracts).

A contract names each canonical column, its type and whether it is required. Validation happens in
``features.sources`` (in DuckDB, row by row); this module is data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DType = Literal["string", "timestamp", "date", "double", "integer", "boolean"]

#: DuckDB type each contract type is cast to.
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "double": "DOUBLE",
    "integer": "BIGINT",
    "boolean": "BOOLEAN",
}

#: The reason written for a row without a customer id (one reason string, whatever the table).
NO_CUSTOMER = "no customer"


@dataclass(frozen=True)
class Column:
    """One canonical column."""

    name: str
    dtype: DType
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Table:
    """A canonical table: its columns, an optional unique key, do extra columns pass through."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    passthrough: bool = False
    description: str = ""
    required_sources: tuple[str, ...] = field(default=())
    #: history columns: when a source maps one, it joins the key (one row per key and version)
    versioned_by: tuple[str, ...] = ()

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no canonical column {name!r}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


TRANSACTIONS = Table(
    name="transactions",
    description="One row per order line; negative amount or is_return = a return / cancellation.",
    columns=(
        Column("customer_id", "string", True, "customer identifier"),
        Column("ts", "timestamp", True, "time of the order line"),
        Column("order_id", "string", True, "order / invoice identifier"),
        Column("product_id", "string", False, "product / SKU"),
        Column("category", "string", False, "product category or offer group"),
        Column("quantity", "double", False, "units; negative for returns"),
        Column("amount", "double", True, "line value in money; negative for returns"),
        Column("is_return", "boolean", False, "return or cancellation line"),
        Column("channel", "string", False, "sales channel"),
    ),
)

CUSTOMERS = Table(
    name="customers",
    description="One row per customer (or per customer and version, when the table carries "
    "history): attributes, consent per channel, household fields.",
    key=("customer_id",),
    passthrough=True,
    versioned_by=("valid_from", "updated_at"),
    columns=(
        Column("customer_id", "string", True, "customer identifier"),
        Column("signup_date", "date", False, "date the customer registered"),
        Column("country", "string", False, "country code"),
        Column("consent_email", "boolean", False, "may be contacted by e-mail"),
        Column("consent_sms", "boolean", False, "may be contacted by SMS"),
        Column("consent_phone", "boolean", False, "may be contacted by phone"),
        Column("valid_from", "timestamp", False, "history: the row holds from this time on"),
        Column("valid_to", "timestamp", False, "history: the row holds until this time (excl.)"),
        Column("updated_at", "timestamp", False, "history: the row is the state from this time on"),
    ),
)

OFFERS = Table(
    name="offers",
    description="The offers a campaign can make.",
    key=("offer_id",),
    passthrough=True,
    columns=(
        Column("offer_id", "string", True, "offer identifier"),
        Column("category", "string", False, "category the offer sells"),
        Column("kind", "string", True, "cross_sell | up_sell | retention"),
        Column("tier", "integer", False, "tier of an up-sell offer"),
        Column("value", "double", True, "expected value / margin of a conversion"),
        Column("cost", "double", False, "cost per contact"),
    ),
)

PRODUCTS = Table(
    name="products",
    description="The product catalogue: category and up-sell tier per product.",
    key=("product_id",),
    passthrough=True,
    columns=(
        Column("product_id", "string", True, "product / SKU"),
        Column("category", "string", False, "product category"),
        Column("tier", "integer", False, "up-sell tier (1 = entry)"),
        Column("price", "double", False, "list price"),
    ),
)

EVENTS = Table(
    name="events",
    description="Engagement events: visits, e-mail opens, clicks, complaints.",
    columns=(
        Column("customer_id", "string", True, "customer identifier"),
        Column("ts", "timestamp", True, "time of the event"),
        Column("event_type", "string", True, "visit, email_open, click, complaint, ..."),
    ),
)

CAMPAIGN_HISTORY = Table(
    name="campaign_history",
    description="Past campaign contacts with treatment / control groups and responses.",
    passthrough=True,
    columns=(
        Column("campaign_id", "string", True, "campaign identifier"),
        Column("customer_id", "string", True, "customer identifier"),
        Column("offer_id", "string", False, "offer made"),
        Column("ts", "timestamp", True, "time of the contact"),
        Column("group", "string", True, "treatment | control"),
        Column("responded", "boolean", True, "responded within the campaign window"),
        Column("reason", "string", False, "reason given with a (negative) response"),
        Column("channel", "string", False, "contact channel (email, sms, phone, ...)"),
    ),
)

LABELLED = Table(
    name="labelled",
    description="A ready customer table with a label (e.g. a subscription-churn snapshot).",
    key=("customer_id",),
    passthrough=True,
    columns=(
        Column("customer_id", "string", True, "customer identifier"),
        Column("label", "integer", True, "binary label, 1 = positive"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (TRANSACTIONS, CUSTOMERS, OFFERS, PRODUCTS, EVENTS, CAMPAIGN_HISTORY, LABELLED)
}
