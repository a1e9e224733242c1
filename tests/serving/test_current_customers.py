"""Serving reads each customer's current version of a customers table with history (consent
changes over time: the latest consent is the one honoured)."""

from __future__ import annotations

import pandas as pd

from serving.base import current_customers
from serving.targeting import consent_flags


def test_the_current_version_of_a_customer_with_history_gives_the_consent(tmp_path):
    path = tmp_path / "customers.parquet"
    pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "valid_from": pd.to_datetime(["2023-01-01", "2024-05-01", "2023-01-01"]),
            "valid_to": pd.to_datetime(["2024-05-01", None, None]),
            "consent_email": [True, False, True],
        }
    ).to_parquet(path)
    current = current_customers(path).set_index("customer_id")
    assert len(current) == 2  # one row per customer
    assert not current.loc["a", "consent_email"] and current.loc["b", "consent_email"]
    flags = consent_flags(pd.Index(["a", "b"], dtype=object), current.reset_index(), "email")
    assert list(flags) == [False, True]


def test_a_table_without_history_is_read_as_it_is(tmp_path):
    path = tmp_path / "customers.parquet"
    table = pd.DataFrame({"customer_id": ["a", "b"], "consent_email": [False, True]})
    table.to_parquet(path)
    pd.testing.assert_frame_equal(current_customers(path), table)
