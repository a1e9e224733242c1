"""The synthetic CRM generator: determinism, contracts, realism and a calibrated churn truth."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from features.synthetic import (
    CUSTOMER_COLUMNS,
    TRANSACTION_COLUMNS,
    SyntheticConfig,
    generate,
)

CUTOFFS = [date(2023, 3, 31), date(2023, 9, 30), date(2024, 6, 30)]
HORIZON = 90
N_CUSTOMERS = 4_000  # ~60 k rows, ~9 k truth rows: a binomial s.e. of ~0.005 on the mean churn
FILES = (
    "transactions.csv", "customers.csv", "offers.csv", "products.csv", "truth_churn.parquet",
    "truth_duplicates.csv", "truth_households.csv",
)
RAW = {"dtype": str, "keep_default_na": False}


def config(**overrides: object) -> SyntheticConfig:
    """The small test configuration, with overrides."""
    base: dict[str, object] = {
        "seed": 7, "n_customers": N_CUSTOMERS, "truth_cutoffs": CUTOFFS, "horizon_days": HORIZON
    }
    return SyntheticConfig.model_validate(base | overrides)


def digests(out: Path) -> dict[str, str]:
    """sha256 of every file in a folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def split_clean(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Transactions read as text -> (clean rows typed, dirty rows as read)."""
    ts = pd.to_datetime(raw["ts"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    amount = pd.to_numeric(raw["amount"], errors="coerce")
    ok = (raw["customer_id"] != "") & (raw["order_id"] != "") & ts.notna() & amount.notna()
    clean = raw[ok].assign(
        ts=ts[ok],
        amount=amount[ok],
        quantity=raw["quantity"][ok].astype(int),
        is_return=raw["is_return"][ok].map({"true": True, "false": False}),
    )
    return clean, raw[~ok]


def orders_of(clean: pd.DataFrame) -> pd.DataFrame:
    """One row per non-return order: customer, date."""
    bought = clean[~clean["is_return"]]
    return bought.groupby("order_id").agg(customer_id=("customer_id", "first"), ts=("ts", "first"))


def empirical_churn(orders: pd.DataFrame, truth: pd.DataFrame, cutoff: date) -> pd.Series:
    """Observed label per truth row: no order on days T+1 .. T+H (as in features.definitions)."""
    day = orders["ts"].dt.date
    future = orders[(day > cutoff) & (day <= cutoff + timedelta(days=HORIZON))]
    rows = truth[truth["as_of"] == cutoff]
    return (~rows["customer_id"].isin(set(future["customer_id"]))).set_axis(rows.index)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The test configuration generated once, with its files read back."""
    out = tmp_path_factory.mktemp("synthetic")
    calls: list[tuple[int, int]] = []
    counts = generate(config(), out, progress=lambda done, total: calls.append((done, total)))
    clean, dirty = split_clean(pd.read_csv(out / "transactions.csv", **RAW))
    truth = pd.read_parquet(out / "truth_churn.parquet")
    truth["as_of"] = pd.to_datetime(truth["as_of"]).dt.date
    return {
        "out": out,
        "counts": counts,
        "calls": calls,
        "clean": clean,
        "dirty": dirty,
        "orders": orders_of(clean),
        "truth": truth,
        "customers": pd.read_csv(out / "customers.csv", **RAW),
    }


# --------------------------------------------------------------------------- files and config


def test_same_config_gives_identical_bytes_and_another_seed_differs(generated, tmp_path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    generate(config(), again)
    generate(config(seed=8), other)
    first = digests(generated["out"])
    assert first == digests(again)
    changed = {name for name, h in digests(other).items() if first[name] != h}
    assert {"transactions.csv", "customers.csv", "truth_churn.parquet"} <= changed


def test_files_counts_and_manifest(generated) -> None:
    out, counts = generated["out"], generated["counts"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, "MANIFEST.json"])  # no temps
    for name in FILES:
        if name.endswith(".csv"):
            with open(out / name, encoding="utf-8") as f:
                assert sum(1 for _ in f) - 1 == counts[name], name
        else:
            assert pq.ParquetFile(out / name).metadata.num_rows == counts[name]
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["rows"] == counts
    assert SyntheticConfig.model_validate(manifest["config"]) == config()
    header = (out / "transactions.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header == ",".join(TRANSACTION_COLUMNS)
    assert list(generated["customers"].columns) == list(CUSTOMER_COLUMNS)
    assert generated["calls"][-1] == (N_CUSTOMERS, N_CUSTOMERS)


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        SyntheticConfig.model_validate({"n_customer": 10})  # typo: extra fields are forbidden
    with pytest.raises(ValidationError):
        SyntheticConfig(truth_cutoffs=[date(2030, 1, 1)])
    with pytest.raises(ValidationError):
        SyntheticConfig(start=date(2024, 1, 1), end=date(2024, 2, 1))


def test_about_a_thousand_customers_give_ten_to_twenty_thousand_rows(tmp_path) -> None:
    counts = generate(SyntheticConfig(n_customers=1_000, seed=3), tmp_path)
    assert 10_000 <= counts["transactions.csv"] <= 20_000
    assert counts["truth_churn.parquet"] == 0  # no cutoffs asked for


# --------------------------------------------------------------------------- transactions


def test_clean_rows_are_consistent(generated) -> None:
    clean = generated["clean"]
    cfg = config()
    assert clean["ts"].min() >= pd.Timestamp(cfg.start)
    assert clean["ts"].max() < pd.Timestamp(cfg.end + timedelta(days=1))
    per_order = clean.groupby("order_id")[["ts", "customer_id", "channel"]].nunique()
    assert (per_order == 1).all().all()  # lines of one order share ts, customer and channel
    assert set(clean["channel"]) == {"web", "store", "app"}
    assert clean["category"].str.fullmatch(r"cat_0[1-8]").all()
    products = pd.read_csv(generated["out"] / "products.csv").set_index("product_id")
    price = clean["product_id"].map(products["price"])
    assert np.allclose(clean["amount"], (price * clean["quantity"]).round(2))
    assert (clean["amount"].round(2) == clean["amount"]).all()


def test_returns_are_negative_later_rows_of_an_earlier_order(generated) -> None:
    clean = generated["clean"]
    returns, bought = clean[clean["is_return"]], clean[~clean["is_return"]]
    assert (returns["quantity"] < 0).all() and (returns["amount"] < 0).all()
    assert (bought["quantity"] > 0).all() and (bought["amount"] > 0).all()
    assert 0.02 <= len(returns) / len(bought) <= 0.07
    assert returns["order_id"].str.endswith("-R").all()
    original = bought.groupby("order_id")[["ts", "customer_id"]].first()
    source = original.reindex(returns["order_id"].str[:-2])
    assert source["customer_id"].tolist() == returns["customer_id"].tolist()
    assert (returns["ts"].to_numpy() > source["ts"].to_numpy()).all()


def test_dirty_rows_are_extra_and_about_dirty_share(generated) -> None:
    clean, dirty = generated["clean"], generated["dirty"]
    share = config().dirty_share
    expected = share * len(clean)
    assert abs(len(dirty) - expected) < 5 * np.sqrt(expected) + 1
    kinds = {
        "no customer": (dirty["customer_id"] == "").sum(),
        "no order": (dirty["order_id"] == "").sum(),
        "bad ts": pd.to_datetime(dirty["ts"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
        .isna()
        .sum(),
        "bad amount": pd.to_numeric(dirty["amount"], errors="coerce").isna().sum(),
    }
    assert all(n > 0 for n in kinds.values()), kinds
    assert sum(kinds.values()) == len(dirty)  # one defect per dirty row


def test_revenue_is_concentrated(generated) -> None:
    revenue = generated["clean"].groupby("customer_id")["amount"].sum().sort_values(ascending=False)
    top = revenue.iloc[: len(revenue) // 5].sum() / revenue.sum()
    assert 0.5 < top < 0.9


def test_seasonality_peaks_in_december(generated) -> None:
    months = generated["orders"]["ts"].dt.month.value_counts()
    assert months[12] > 1.3 * months[[2, 3, 4, 5, 6]].mean()


# --------------------------------------------------------------------------- customers


def test_customers_signup_consent_and_first_order(generated) -> None:
    customers, orders, cfg = generated["customers"], generated["orders"], config()
    assert customers["customer_id"].is_unique and len(customers) == N_CUSTOMERS
    signup = pd.to_datetime(customers["signup_date"]).dt.date
    assert signup.min() >= cfg.start and signup.max() <= cfg.end - timedelta(days=60)
    first = orders.groupby("customer_id")["ts"].min().dt.date
    assert (first.reindex(customers["customer_id"]).to_numpy() == signup.to_numpy()).all()
    consent = customers[["consent_email", "consent_sms", "consent_phone"]].eq("true").mean()
    assert 0.7 <= consent["consent_email"] <= 0.85
    assert consent["consent_phone"] < consent["consent_sms"] < consent["consent_email"]
    assert customers["email"].str.contains("@").all()


def test_duplicates_and_households_truth(generated) -> None:
    out, customers = generated["out"], generated["customers"].set_index("customer_id")
    duplicates = pd.read_csv(out / "truth_duplicates.csv")
    households = pd.read_csv(out / "truth_households.csv").set_index("customer_id")
    assert 0.005 <= len(duplicates) / N_CUSTOMERS <= 0.02
    assert not duplicates["duplicate_of"].isin(duplicates["customer_id"]).any()

    def norm(ids: pd.Series, column: str) -> pd.Series:
        return customers.loc[ids, column].str.strip().str.casefold().reset_index(drop=True)

    for column in ("first_name", "last_name", "email", "address"):
        assert norm(duplicates["customer_id"], column).equals(
            norm(duplicates["duplicate_of"], column)
        ), column
    raw_dup = customers.loc[duplicates["customer_id"], "first_name"].to_numpy()
    assert (raw_dup != customers.loc[duplicates["duplicate_of"], "first_name"].to_numpy()).all()

    key = households["household_key"]
    assert (households.index == customers.index).all()
    members = customers.assign(key=key).drop(duplicates["customer_id"])
    size = members.groupby("key")["last_name"].transform("size")
    shared = members[size > 1]
    assert 0.1 <= len(shared) / len(members) <= 0.4
    same = shared.groupby("key")[["last_name", "address", "postcode", "country"]].nunique()
    assert (same == 1).all().all()
    head = shared["key"].str.replace("H", "C", regex=False)
    joiners = shared[head != shared.index]
    heads = customers.loc[head[joiners.index], "first_name"].to_numpy()
    assert (joiners["first_name"].to_numpy() != heads).all()


def test_offers(generated) -> None:
    offers = pd.read_csv(generated["out"] / "offers.csv")
    assert offers["offer_id"].is_unique
    kinds = offers["kind"].value_counts()
    assert kinds["cross_sell"] == 8 and kinds["retention"] == 1 and kinds["up_sell"] >= 2
    assert sorted(offers.loc[offers["kind"] == "up_sell", "tier"]) == [1, 2, 3]
    assert offers.loc[offers["kind"] != "up_sell", "tier"].isna().all()
    assert (offers["value"] > offers["cost"]).all() and (offers["cost"] > 0).all()


# --------------------------------------------------------------------------- churn truth


def test_truth_rows_are_the_customers_active_in_the_lookback(generated) -> None:
    truth, orders = generated["truth"], generated["orders"]
    assert not truth.duplicated(["customer_id", "as_of"]).any()
    assert set(truth["as_of"]) == set(CUTOFFS) and (truth["horizon_days"] == HORIZON).all()
    assert truth["p_churn"].between(0, 1).all()
    assert (truth.loc[~truth["alive"], "p_churn"] == 1).all()
    day = orders["ts"].dt.date
    for cutoff in CUTOFFS:
        window = (day > cutoff - timedelta(days=365)) & (day <= cutoff)
        expected = set(orders.loc[window, "customer_id"])
        assert set(truth.loc[truth["as_of"] == cutoff, "customer_id"]) == expected


def test_churn_share_among_active_customers_is_realistic(generated) -> None:
    truth, orders = generated["truth"], generated["orders"]
    for cutoff in CUTOFFS:
        churned = empirical_churn(orders, truth, cutoff)
        assert 0.10 <= churned.mean() <= 0.60, cutoff


def test_truth_is_calibrated_against_the_generated_data(generated) -> None:
    # Under a correct truth, sum(label - p) has variance sum(p (1 - p)): allow 4 standard errors
    # per cutoff (~3 k rows each: about 0.035 on the mean) and 3 points overall.
    truth, orders = generated["truth"], generated["orders"]
    labels = pd.concat([empirical_churn(orders, truth, c) for c in CUTOFFS])
    p = truth.loc[labels.index, "p_churn"]
    for cutoff in CUTOFFS:
        rows = truth.loc[labels.index, "as_of"] == cutoff
        se = np.sqrt((p[rows] * (1 - p[rows])).sum()) / rows.sum()
        assert abs(labels[rows].mean() - p[rows].mean()) < 4 * se, cutoff
    assert abs(labels.mean() - p.mean()) < 0.03
    # and within bins of p among the alive (where p carries the information)
    alive = truth.loc[labels.index, "alive"]
    bins = pd.qcut(p[alive], 5, duplicates="drop")
    for _, idx in p[alive].groupby(bins, observed=True).groups.items():
        se = np.sqrt((p[idx] * (1 - p[idx])).sum()) / len(idx)
        assert abs(labels[idx].mean() - p[idx].mean()) < 4 * se + 0.01


def test_truth_is_calibrated_at_scale(tmp_path) -> None:
    # 40 k customers (~70 k truth rows, s.e. ~0.002): leaving out the drop-out within the horizon
    # shifts the mean by ~0.02 (10 s.e.) and fails here; the generator's truth is within 0.1 s.e.
    generate(config(seed=11, n_customers=40_000), tmp_path)
    convert = pacsv.ConvertOptions(
        include_columns=["customer_id", "ts", "is_return"],
        column_types={c: pa.string() for c in ("customer_id", "ts", "is_return")},
    )
    tx = pacsv.read_csv(tmp_path / "transactions.csv", convert_options=convert)
    ts = pc.strptime(tx["ts"], format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    keep = pc.and_(pc.equal(tx["is_return"], "false"), pc.is_valid(ts))
    keep = pc.and_(keep, pc.invert(pc.equal(pc.fill_null(tx["customer_id"], ""), "")))
    day = pc.cast(ts.filter(keep), pa.date32()).to_numpy(zero_copy_only=False)
    customer = tx["customer_id"].filter(keep).to_numpy(zero_copy_only=False)
    truth = pd.read_parquet(tmp_path / "truth_churn.parquet")
    labels, p = [], []
    for cutoff in CUTOFFS:
        start = np.datetime64(cutoff)
        future = set(customer[(day > start) & (day <= start + np.timedelta64(HORIZON, "D"))])
        rows = truth[truth["as_of"] == cutoff]
        labels.append(~rows["customer_id"].isin(future).to_numpy())
        p.append(rows["p_churn"].to_numpy())
    for y, q in ((np.concatenate(labels), np.concatenate(p)), *zip(labels, p, strict=True)):
        se = np.sqrt((q * (1 - q)).sum()) / q.size
        assert abs(y.mean() - q.mean()) < 4 * se


def test_oracle_discriminates(generated) -> None:
    truth, orders = generated["truth"], generated["orders"]
    for cutoff in CUTOFFS:
        labels = empirical_churn(orders, truth, cutoff)
        assert roc_auc_score(labels, truth.loc[labels.index, "p_churn"]) > 0.75


# --------------------------------------------------------------------------- chunking


def test_chunking_keeps_ids_and_distribution(generated, tmp_path) -> None:
    counts = generate(config(chunk_customers=700), tmp_path)  # 6 chunks, the last one partial
    clean, _ = split_clean(pd.read_csv(tmp_path / "transactions.csv", **RAW))
    customers = pd.read_csv(tmp_path / "customers.csv", **RAW)
    expected_ids = [f"C{i:07d}" for i in range(1, N_CUSTOMERS + 1)]
    assert customers["customer_id"].tolist() == expected_ids
    orders = orders_of(clean)
    assert orders.groupby(level=0)["customer_id"].nunique().max() == 1  # order ids stay unique
    base = generated["counts"]
    assert abs(counts["transactions.csv"] / base["transactions.csv"] - 1) < 0.1
    assert abs(counts["truth_churn.parquet"] / base["truth_churn.parquet"] - 1) < 0.1
    truth = pd.read_parquet(tmp_path / "truth_churn.parquet")
    assert abs(truth["p_churn"].mean() - generated["truth"]["p_churn"].mean()) < 0.03
    assert abs(len(orders) / len(generated["orders"]) - 1) < 0.1
    duplicates = pd.read_csv(tmp_path / "truth_duplicates.csv")
    assert 0.005 <= len(duplicates) / N_CUSTOMERS <= 0.02
