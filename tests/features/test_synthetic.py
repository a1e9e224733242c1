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
    CAMPAIGN_COLUMNS,
    CUSTOMER_COLUMNS,
    REASONS,
    TRANSACTION_COLUMNS,
    SyntheticConfig,
    campaign_effects,
    generate,
)

CUTOFFS = [date(2023, 3, 31), date(2023, 9, 30), date(2024, 6, 30)]
HORIZON = 90
N_CUSTOMERS = 4_000  # ~60 k rows, ~9 k truth rows: a binomial s.e. of ~0.005 on the mean churn
FILES = (
    "transactions.csv",
    "customers.csv",
    "offers.csv",
    "products.csv",
    "truth_churn.parquet",
    "truth_duplicates.csv",
    "truth_households.csv",
)
RAW = {"dtype": str, "keep_default_na": False}


def config(**overrides: object) -> SyntheticConfig:
    """The small test configuration, with overrides."""
    base: dict[str, object] = {
        "seed": 7,
        "n_customers": N_CUSTOMERS,
        "truth_cutoffs": CUTOFFS,
        "horizon_days": HORIZON,
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


# --------------------------------------------------------------------------- campaigns

CAMPAIGNS = [
    {"campaign_id": "RET_A", "send_date": date(2023, 5, 1), "offer_id": "RET_01"},
    {
        "campaign_id": "XS_B",
        "send_date": date(2023, 11, 6),
        "offer_id": "XS_cat_02",
        "window_days": 21,
    },
    {
        "campaign_id": "RET_C",
        "send_date": date(2024, 3, 4),
        "offer_id": "RET_01",
        "audience_share": 1.0,
        "control_share": 0.3,
    },
]
CAMPAIGN_CUTOFFS = [date(2024, 6, 30)]  # its horizon starts after the last window (2024-04-02)


@pytest.fixture(scope="module")
def with_campaigns(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The test configuration with three campaigns, and the same seed without them."""
    out, plain = tmp_path_factory.mktemp("campaigns"), tmp_path_factory.mktemp("plain")
    overrides = {"truth_cutoffs": CAMPAIGN_CUTOFFS}
    counts = generate(config(campaigns=CAMPAIGNS, **overrides), out)
    generate(config(**overrides), plain)
    clean, _ = split_clean(pd.read_csv(out / "transactions.csv", **RAW))
    history = pd.read_csv(out / "campaign_history.csv", **RAW)
    history["responded"] = history["responded"].map({"true": True, "false": False})
    truth = pd.read_parquet(out / "truth_uplift.parquet")
    rows = history.merge(truth, on=["campaign_id", "customer_id"], validate="one_to_one")
    send = rows["campaign_id"].map({c["campaign_id"]: c["send_date"] for c in CAMPAIGNS})
    rows["send"] = pd.to_datetime(send)
    return {
        "out": out,
        "plain": plain,
        "counts": counts,
        "clean": clean,
        "history": history,
        "rows": rows,
        "orders": orders_of(clean),
    }


def history_at_send(rows: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Recency (days from the last order date to T = send - 1) and orders on days T-364 .. T."""
    day = orders["ts"].dt.normalize()
    out = []
    for send, part in rows.groupby("send"):
        before = orders[day < send]
        last = before.groupby("customer_id")["ts"].max().dt.normalize()
        recent = before[day[before.index] >= send - pd.Timedelta(days=365)]
        freq = recent.groupby("customer_id").size()
        out.append(
            part.assign(
                recency=(send - pd.Timedelta(days=1) - part["customer_id"].map(last)).dt.days,
                frequency=part["customer_id"].map(freq).fillna(0),
            )
        )
    return pd.concat(out)


def test_campaigns_change_only_the_order_files(with_campaigns) -> None:
    out, plain = with_campaigns["out"], with_campaigns["plain"]
    assert {"campaign_history.csv", "truth_uplift.parquet"} <= {p.name for p in out.iterdir()}
    assert not (plain / "campaign_history.csv").exists()
    first, second = digests(out), digests(plain)
    same = {
        "customers.csv",
        "offers.csv",
        "products.csv",
        "truth_duplicates.csv",
        "truth_households.csv",
    }
    assert {name for name in second if first[name] == second[name]} == same
    assert "campaigns" not in json.loads((plain / "MANIFEST.json").read_text())["config"]
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert SyntheticConfig.model_validate(manifest["config"]) == config(
        campaigns=CAMPAIGNS, truth_cutoffs=CAMPAIGN_CUTOFFS
    )
    assert manifest["rows"]["campaign_history.csv"] == len(with_campaigns["history"])


def test_campaign_history_follows_the_contract(with_campaigns) -> None:
    history, out = with_campaigns["history"], with_campaigns["out"]
    header = (out / "campaign_history.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header == ",".join(CAMPAIGN_COLUMNS)
    assert not history.duplicated(["campaign_id", "customer_id"]).any()
    assert set(history["group"]) == {"treatment", "control"}
    spec = {c["campaign_id"]: c for c in CAMPAIGNS}
    assert (
        history["ts"] == history["campaign_id"].map(lambda c: f"{spec[c]['send_date']} 00:00:00")
    ).all()
    assert (history["offer_id"] == history["campaign_id"].map(lambda c: spec[c]["offer_id"])).all()
    declined = (history["group"] == "treatment") & ~history["responded"]
    assert (history.loc[~declined, "reason"] == "").all()  # reasons only from the contacted
    assert set(history.loc[declined, "reason"]) == {"", *REASONS}
    control = history.groupby("campaign_id")["group"].apply(lambda g: (g == "control").mean())
    assert abs(control["RET_C"] - 0.3) < 0.04 and abs(control["RET_A"] - 0.5) < 0.04


def test_audience_is_consenting_customers_active_before_the_send(with_campaigns) -> None:
    rows = history_at_send(with_campaigns["rows"], with_campaigns["orders"])
    customers = pd.read_csv(with_campaigns["out"] / "customers.csv", **RAW).set_index("customer_id")
    assert (customers.loc[rows["customer_id"], "consent_email"] == "true").all()
    assert rows["recency"].between(0, 364).all()
    # RET_C takes every eligible customer: all consenting customers with an order in the year
    orders, send = with_campaigns["orders"], pd.Timestamp(date(2024, 3, 4))
    day = orders["ts"].dt.normalize()
    active = set(orders.loc[(day < send) & (day >= send - pd.Timedelta(days=365)), "customer_id"])
    eligible = {c for c in active if customers.loc[c, "consent_email"] == "true"}
    assert set(rows.loc[rows["campaign_id"] == "RET_C", "customer_id"]) == eligible


def test_responses_are_the_orders_in_the_window(with_campaigns) -> None:
    rows, orders = with_campaigns["rows"], with_campaigns["orders"]
    window = rows["campaign_id"].map(
        {c["campaign_id"]: c.get("window_days", 30) for c in CAMPAIGNS}
    )
    joined = rows.assign(end=rows["send"] + pd.to_timedelta(window, unit="D")).merge(
        orders.assign(day=orders["ts"].dt.normalize()), on="customer_id", how="left"
    )
    inside = (joined["day"] >= joined["send"]) & (joined["day"] < joined["end"])
    bought = inside.groupby([joined["campaign_id"], joined["customer_id"]]).any()
    expected = rows.set_index(["campaign_id", "customer_id"])["responded"]
    assert bought.reindex(expected.index).equals(expected)


def test_uplift_truth_is_calibrated(with_campaigns) -> None:
    # responded ~ Bernoulli(p_treatment) in the treated group and Bernoulli(p_control) in the
    # control group: sum(responded - p) has variance sum(p (1 - p)); allow 4 standard errors
    rows = with_campaigns["rows"]
    treated = rows["group"] == "treatment"
    rows = rows.assign(p=np.where(treated, rows["p_treatment"], rows["p_control"]))
    assert np.allclose(rows["true_uplift"], rows["p_treatment"] - rows["p_control"])
    assert rows[["p_control", "p_treatment"]].stack().between(0, 1).all()
    groups = [g for _, g in rows.groupby(["campaign_id", "group"])]
    groups += [g for _, g in rows.groupby([rows["group"], pd.qcut(rows["p"], 4)], observed=True)]
    for g in groups:
        se = np.sqrt((g["p"] * (1 - g["p"])).sum())
        assert abs(g["responded"].sum() - g["p"].sum()) < 4 * se + 1
    # the control share of responders estimates the mean p_control of everyone
    ate = rows["true_uplift"].mean()
    diff = rows.loc[treated, "responded"].mean() - rows.loc[~treated, "responded"].mean()
    assert abs(diff - ate) < 4 * np.sqrt(0.25 / treated.sum() + 0.25 / (~treated).sum())


def test_uplift_is_heterogeneous_in_observable_history(with_campaigns) -> None:
    rows = history_at_send(with_campaigns["rows"], with_campaigns["orders"])
    uplift = rows["true_uplift"]
    lapsing = rows["recency"].between(30, 120) & (rows["frequency"] <= 4)
    fresh_heavy = (rows["recency"] < 14) & (rows["frequency"] >= 12)
    assert uplift[lapsing].mean() > 0.12 > 0.0 > uplift[fresh_heavy].mean()  # sleeping dogs
    assert uplift[lapsing].mean() > uplift[rows["recency"] >= 250].mean() + 0.05
    assert (uplift < 0).mean() > 0.05
    # the offer matters: a cross-sell is worth less than a retention offer on average
    by_campaign = rows.groupby("campaign_id")["true_uplift"].mean()
    assert by_campaign["XS_B"] < by_campaign[["RET_A", "RET_C"]].min()


def test_effect_functions_have_the_documented_shape() -> None:
    r = np.array([0, 10, 60, 60, 60, 400, 5])
    f = np.array([1, 1, 1, 6, 20, 1, 20])
    q, s = campaign_effects(r, f, np.ones(7), max_uplift=0.4, sleeping_dog=0.3)
    assert q[2] == pytest.approx(0.4 * 1 / (1 + (1 / 6) ** 2))  # peak at 60 days
    assert q[3] == pytest.approx(q[2] * (1 + (1 / 6) ** 2) / 2)  # halved at 6 orders a year
    assert q[0] < q[1] < q[2] and q[5] < q[2] / 10 and q[4] < q[2] / 5
    # suppression ("sleeping dogs"): frequent and recent buyers, fading with recency
    assert s[6] > 0.25 and s[6] > s[4] > 0.05 > 0.01 > s[2] and s[0] < 0.01
    q0, _ = campaign_effects(r, f, np.zeros(7), 0.4, 0.3)
    assert (q0 == 0).all()  # an irrelevant offer induces nothing


def test_reasons_depend_on_the_customer(with_campaigns) -> None:
    rows, clean = with_campaigns["rows"], with_campaigns["clean"]
    bought = clean[~clean["is_return"]]
    price = (bought["amount"] / bought["quantity"]).groupby(bought["customer_id"]).mean()
    said = rows[rows["reason"] != ""].assign(unit_price=lambda d: d["customer_id"].map(price))
    cheap = said["unit_price"] <= said["unit_price"].quantile(1 / 3)
    dear = said["unit_price"] >= said["unit_price"].quantile(2 / 3)
    assert (said.loc[cheap, "reason"] == "price").mean() > (
        said.loc[dear, "reason"] == "price"
    ).mean() + 0.05
    relevant = said.groupby("campaign_id")["reason"].apply(lambda r: (r == "not relevant").mean())
    assert relevant["XS_B"] > 2 * relevant[["RET_A", "RET_C"]].max()
    assert said.groupby("campaign_id")["reason"].nunique().min() == len(REASONS)


def test_campaign_config_is_validated() -> None:
    good = {"campaign_id": "A", "send_date": date(2023, 5, 1)}
    SyntheticConfig(campaigns=[good])
    for bad in (
        [good, {**good, "send_date": date(2023, 5, 20)}],  # same id
        [good, {"campaign_id": "B", "send_date": date(2023, 5, 20)}],  # windows overlap
        [{**good, "offer_id": "XS_cat_09"}],  # 8 categories
        [{**good, "send_date": date(2024, 12, 15)}],  # window past end
        [{**good, "campaign_id": "a b"}],
        [{**good, "control_share": 1.0}],
    ):
        with pytest.raises(ValidationError):
            SyntheticConfig(campaigns=bad)
    with pytest.raises(ValidationError, match="churn-truth horizon"):
        SyntheticConfig(campaigns=[good], truth_cutoffs=[date(2023, 3, 31)])


def test_campaign_history_ingests_without_quarantine(with_campaigns, tmp_path) -> None:
    from features.sources import DatasetConfig, ingest
    from features.store import StateDirs

    out = with_campaigns["out"]
    dataset = DatasetConfig.model_validate(
        {
            "name": "syn",
            "tables": {
                "campaign_history": {
                    "ts_format": "%Y-%m-%d %H:%M:%S",
                    "sources": [{"path": str(out / "campaign_history.csv")}],
                }
            },
        }
    )
    report = ingest(dataset, StateDirs.resolve(tmp_path)).tables["campaign_history"]
    assert report.quarantined == 0 and report.accepted == len(with_campaigns["history"])
    table = pd.read_parquet(report.accepted_path)
    assert table["responded"].dtype == bool and table["reason"].isna().sum() > 0


# --------------------------------------------------------------------------- multi-arm campaigns

ARMS = [
    {"offer_id": "RET_01", "channel": "email"},
    {"offer_id": "RET_01", "channel": "phone"},
    {"offer_id": "UP_T3", "channel": "sms"},
]
ARM_CAMPAIGNS = [
    {"campaign_id": "ARMS_A", "send_date": date(2023, 9, 4), "arms": ARMS, "audience_share": 1.0},
    {"campaign_id": "ONE_B", "send_date": date(2024, 1, 8), "offer_id": "RET_01"},
]


@pytest.fixture(scope="module")
def with_arms(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("arms")
    counts = generate(config(n_customers=8_000, truth_cutoffs=[], campaigns=ARM_CAMPAIGNS), out)
    history = pd.read_csv(out / "campaign_history.csv", **RAW)
    customers = pd.read_csv(out / "customers.csv", **RAW)
    arms = pd.read_parquet(out / "truth_arms.parquet")
    uplift = pd.read_parquet(out / "truth_uplift.parquet")
    return {
        "counts": counts,
        "history": history,
        "customers": customers,
        "arms": arms,
        "uplift": uplift,
    }


def test_multi_arm_history_names_each_treated_contacts_arm(with_arms) -> None:
    h = with_arms["history"]
    multi, single = h[h["campaign_id"] == "ARMS_A"], h[h["campaign_id"] == "ONE_B"]
    treated = multi["group"] == "treatment"
    pairs = set(zip(multi.loc[treated, "offer_id"], multi.loc[treated, "channel"], strict=True))
    assert pairs == {(a["offer_id"], a["channel"]) for a in ARMS}
    # controls got no offer on no channel; a single-offer campaign is an e-mail
    assert (multi.loc[~treated, ["offer_id", "channel"]] == "").all().all()
    assert (single.loc[single["group"] == "treatment", "channel"] == "email").all()
    assert (single["offer_id"] == "RET_01").all()
    # each arm about a third of the treated (uniform draw): 3 sd of a binomial share
    shares = multi.loc[treated, "channel"].value_counts(normalize=True)
    n = int(treated.sum())
    assert (abs(shares - 1 / 3) < 3 * np.sqrt(2 / 9 / n)).all(), shares.to_dict()


def test_multi_arm_audience_has_consent_on_every_arm_channel(with_arms) -> None:
    h, c = with_arms["history"], with_arms["customers"]
    audience = c[c["customer_id"].isin(h.loc[h["campaign_id"] == "ARMS_A", "customer_id"])]
    for channel in ("email", "sms", "phone"):
        assert (audience[f"consent_{channel}"].str.lower() == "true").all(), channel


def test_arm_truth_is_per_member_and_arm_and_matches_the_treated_arm(with_arms) -> None:
    h, arms, uplift = with_arms["history"], with_arms["arms"], with_arms["uplift"]
    multi = h[h["campaign_id"] == "ARMS_A"]
    assert set(arms["campaign_id"]) == {"ARMS_A"}
    assert len(arms) == len(multi) * len(ARMS) == with_arms["counts"]["truth_arms.parquet"]
    assert not arms.duplicated(["customer_id", "offer_id", "channel"]).any()
    np.testing.assert_allclose(arms["true_uplift"], arms["p_treatment"] - arms["p_control"])
    # the phone arm moves high spenders more, so the arms' effects differ by customer
    wide = arms.pivot(index="customer_id", columns="channel", values="true_uplift")
    assert (wide["phone"] > wide["email"]).mean() > 0.1
    assert (wide["phone"] < wide["email"]).mean() > 0.1
    # truth_uplift of a treated member is their own arm's row
    u = uplift[uplift["campaign_id"] == "ARMS_A"].merge(multi, on=["campaign_id", "customer_id"])
    treated = u[u["group"] == "treatment"].merge(
        arms, on=["campaign_id", "customer_id", "offer_id", "channel"], suffixes=("", "_arm")
    )
    assert len(treated) == int((multi["group"] == "treatment").sum())
    np.testing.assert_allclose(treated["p_treatment"], treated["p_treatment_arm"])


def test_arms_are_validated() -> None:
    with pytest.raises(ValidationError, match="either offer_id or arms"):
        config(truth_cutoffs=[], campaigns=[{**ARM_CAMPAIGNS[0], "offer_id": "RET_01"}])
    with pytest.raises(ValidationError, match="repeat"):
        config(truth_cutoffs=[], campaigns=[{**ARM_CAMPAIGNS[0], "arms": [ARMS[0], ARMS[0]]}])
    with pytest.raises(ValidationError, match="unknown offer"):
        config(
            truth_cutoffs=[],
            campaigns=[{**ARM_CAMPAIGNS[0], "arms": [{"offer_id": "NOPE", "channel": "sms"}]}],
        )
    with pytest.raises(ValidationError, match="channel"):
        config(
            truth_cutoffs=[],
            campaigns=[{**ARM_CAMPAIGNS[0], "arms": [{"offer_id": "RET_01", "channel": "fax"}]}],
        )


# --------------------------------------------------------------------------- prospects

PROSPECT_CUTOFFS = [date(2023, 6, 30), date(2024, 3, 31), date(2024, 9, 30)]
PROSPECT_HORIZON = 60


@pytest.fixture(scope="module")
def with_prospects(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small base with and without prospects (same seed), read back."""
    out, plain = tmp_path_factory.mktemp("prospects"), tmp_path_factory.mktemp("plain")
    spec = {
        "n_prospects": 6_000,
        "truth_cutoffs": PROSPECT_CUTOFFS,
        "horizon_days": PROSPECT_HORIZON,
    }
    counts = generate(config(n_customers=500, prospects=spec), out)
    generate(config(n_customers=500), plain)
    clean, _ = split_clean(pd.read_csv(out / "transactions.csv", **RAW))
    truth = pd.read_parquet(out / "truth_first_purchase.parquet")
    truth["as_of"] = pd.to_datetime(truth["as_of"]).dt.date
    events = pd.read_csv(out / "events.csv", **RAW)
    events["ts"] = pd.to_datetime(events["ts"], format="%Y-%m-%d %H:%M:%S")
    return {
        "out": out,
        "plain": plain,
        "counts": counts,
        "orders": orders_of(clean),
        "truth": truth,
        "events": events,
        "customers": pd.read_csv(out / "customers.csv", **RAW),
    }


def test_prospects_only_append_rows(with_prospects) -> None:
    out, plain = with_prospects["out"], with_prospects["plain"]
    for name in ("offers.csv", "products.csv"):
        assert (out / name).read_bytes() == (plain / name).read_bytes(), name
    for name in ("customers.csv", "truth_households.csv", "truth_duplicates.csv"):
        before = (plain / name).read_bytes()
        assert (out / name).read_bytes().startswith(before), name
    # the dirty copies sit after each chunk's clean rows: the customers' rows come first
    before = (plain / "transactions.csv").read_bytes()
    assert (out / "transactions.csv").read_bytes().startswith(before)
    churn_before = pd.read_parquet(plain / "truth_churn.parquet")
    churn_after = pd.read_parquet(out / "truth_churn.parquet")
    pd.testing.assert_frame_equal(churn_after.iloc[: len(churn_before)], churn_before)
    assert len(churn_after) > len(churn_before)  # converted prospects are customers too
    assert "prospects" not in json.loads((plain / "MANIFEST.json").read_text())["config"]
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["rows"]["events.csv"] == len(with_prospects["events"])


def test_prospects_visit_before_any_order_and_register_point_in_time(with_prospects) -> None:
    events, orders = with_prospects["events"], with_prospects["orders"]
    assert set(events["event_type"]) == {"visit"}
    assert events["customer_id"].str[1:].astype(int).min() == 501  # numbered after the customers
    first_order = orders.groupby("customer_id")["ts"].min()
    last_visit = events.groupby("customer_id")["ts"].max()
    both = last_visit.to_frame("visit").join(first_order.rename("order"), how="inner")
    assert len(both) > 100 and (both["visit"] <= both["order"]).all()
    truth, customers = with_prospects["truth"], with_prospects["customers"]
    signup = customers.set_index("customer_id")["signup_date"].map(date.fromisoformat)
    at = truth["customer_id"].map(signup)
    registered = at.notna() & (at <= truth["as_of"])
    assert (registered == truth["registered"]).all()
    # nobody in the truth has ordered by the cutoff; every one visited by then
    first_day = truth["customer_id"].map(first_order.dt.date)
    assert not (first_day.notna() & (first_day <= truth["as_of"])).any()
    first_visit = truth["customer_id"].map(events.groupby("customer_id")["ts"].min().dt.date)
    assert (first_visit <= truth["as_of"]).all()


def test_first_purchase_truth_is_calibrated_and_discriminates(with_prospects) -> None:
    truth, orders = with_prospects["truth"], with_prospects["orders"]
    first_day = truth["customer_id"].map(orders.groupby("customer_id")["ts"].min().dt.date)
    end = truth["as_of"] + timedelta(days=PROSPECT_HORIZON)
    bought = (first_day.notna() & (first_day > truth["as_of"]) & (first_day <= end)).astype(int)
    p = truth["p_first_purchase"].to_numpy()
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert bought.sum() > 200
    assert abs(bought.mean() - p.mean()) < 3 * se
    assert roc_auc_score(bought, p) > 0.85
