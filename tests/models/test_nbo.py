"""NBO models: ranking metrics on hand-computed examples, the popularity baseline, the pair
classifier's contract and a planted cross-sell structure it must find, the serving wrapper."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from features.offers import eligibility_matrix, recency_column, share_column, validate_offers
from models.nbo import (
    RANK_COLUMNS,
    NBOClassifier,
    NBOModel,
    PopularityBaseline,
    attach_offers,
    ranking_metrics,
    top_k,
)

# --------------------------------------------------------------------------- ranking metrics


def _ranked_example() -> pd.DataFrame:
    """A: taken at ranks 1 and 3 of 3; B: taken at rank 2 of 2; C: nothing taken (skipped)."""
    return pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B", "B", "C", "C"],
            "offer_id": ["x1", "x2", "x3", "y1", "y2", "z1", "z2"],
            "score": [0.9, 0.8, 0.7, 0.9, 0.5, 0.6, 0.4],
            "taken": [1, 0, 1, 0, 1, 0, 0],
            "value": [10.0, 20.0, 30.0, 5.0, 7.0, 1.0, 1.0],
        }
    )


def test_ranking_metrics_match_hand_computed_values():
    m = ranking_metrics(_ranked_example(), "score", [1, 3], value="value")
    assert m["n_customers"] == 2  # C has no taken offer
    assert m["hit_at_1"] == pytest.approx(0.5)
    assert m["map_at_1"] == pytest.approx(0.5)
    assert m["ndcg_at_1"] == pytest.approx(0.5)
    assert m["hit_at_3"] == pytest.approx(1.0)
    ap_a = (1 / 1 + 2 / 3) / 2  # precision at ranks 1 and 3, over min(3, 2 relevant)
    ap_b = (1 / 2) / 1
    assert m["map_at_3"] == pytest.approx((ap_a + ap_b) / 2)
    ndcg_a = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg_b = (1 / math.log2(3)) / 1
    assert m["ndcg_at_3"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert m["value_at_1"] == pytest.approx((10.0 + 0.0) / 2)
    assert m["value_at_3"] == pytest.approx((40.0 + 7.0) / 2)


def test_ranking_metrics_break_ties_by_offer_id_and_ignore_row_order():
    frame = _ranked_example().assign(score=1.0)  # all tied: alphabetical offer order
    m = ranking_metrics(frame.sample(frac=1.0, random_state=3), "score", [1])
    assert m["hit_at_1"] == pytest.approx(0.5)  # A's x1 first (taken), B's y1 first (not)
    top = top_k(frame.iloc[::-1], "score", 1)
    assert dict(zip(top["customer_id"], top["offer_id"], strict=True)) == {
        "C": "z1",
        "B": "y1",
        "A": "x1",
    }
    assert (top["rank"] == 1).all()


def test_ranking_metrics_of_a_perfect_ranking_are_one():
    frame = _ranked_example().assign(score=lambda d: d["taken"] + 0.1 * d["value"] / 30)
    m = ranking_metrics(frame, "score", [1, 3])
    assert m["hit_at_1"] == m["map_at_3"] == m["ndcg_at_3"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- popularity


@parametrize_with_checks([PopularityBaseline(key=0)])
def test_popularity_baseline_keeps_the_sklearn_contract(estimator, check):
    check(estimator)


def test_popularity_is_the_take_rate_per_offer():
    x = pd.DataFrame({"offer_id": ["a", "a", "a", "a", "b", "b"]})
    y = np.array([1, 1, 1, 0, 0, 1])
    model = PopularityBaseline().fit(x, y)
    p = model.predict_proba(pd.DataFrame({"offer_id": ["a", "b", "new"]}))[:, 1]
    assert p == pytest.approx([0.75, 0.5, 4 / 6])


# --------------------------------------------------------------------------- planted structure

CATS = ["A", "B", "C", "D", "E", "F"]
OFFERS = validate_offers(
    pd.DataFrame(
        {
            "offer_id": [f"XS_{c}" for c in CATS] + ["UP_2", "UP_3"],
            "category": [*CATS, None, None],
            "kind": ["cross_sell"] * len(CATS) + ["up_sell"] * 2,
            "tier": [None] * len(CATS) + [2, 3],
            "value": [10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 5.0, 8.0],
        }
    )
)


def planted_customers(n: int, seed: int, as_of: str = "2024-03-31") -> tuple[pd.DataFrame, dict]:
    """Two kinds of customers: A-B-C lovers and D-E-F lovers (F rarer). Each has bought some of
    its own kind's categories; in the horizon it takes each missing one of its kind with
    probability 0.45 and any other category with 0.03. Popularity cannot see the kind; the
    categories a customer has bought (co-purchase lift) reveal it."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n) < 0.5
    liked = np.where(kind[:, None], [[1, 1, 1, 0, 0, 0]], [[0, 0, 0, 1, 1, 1]]).astype(bool)
    bought = liked & (rng.random((n, 6)) < [0.7, 0.6, 0.5, 0.7, 0.6, 0.3])
    empty = ~bought.any(axis=1)
    bought[empty, np.where(kind[empty], 0, 3)] = True
    lines = bought * rng.integers(1, 6, (n, 6))
    shares = lines / lines.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"customer_id": [f"c{seed}_{i}" for i in range(n)]})
    frame["as_of"] = pd.Timestamp(as_of)
    frame["orders_count_365d"] = rng.poisson(3, n).astype(float)
    for j, c in enumerate(CATS):
        frame[share_column(c)] = shares[:, j]
        frame[recency_column(c)] = np.where(bought[:, j], rng.integers(0, 300, n), np.nan)
    frame["current_tier"] = rng.integers(1, 3, n).astype(float)
    frame["mean_tier"] = frame["current_tier"] - 0.3
    p_take = np.where(liked, 0.45, 0.03)
    takes = rng.random((n, 6)) < p_take
    truth = {
        (frame.customer_id[i], f"XS_{c}"): int(takes[i, j])
        for i in range(n)
        for j, c in enumerate(CATS)
    }
    up = rng.random((n, 2)) < 0.1
    truth |= {
        (frame.customer_id[i], o): int(up[i, k])
        for i in range(n)
        for k, o in enumerate(("UP_2", "UP_3"))
    }
    return frame, truth


def planted_pairs(n: int, seed: int, as_of: str = "2024-03-31") -> pd.DataFrame:
    """Eligible pairs of planted customers with their labels."""
    customers, truth = planted_customers(n, seed, as_of)
    rows, cols = np.nonzero(eligibility_matrix(customers, OFFERS))
    pairs = customers.iloc[rows].reset_index(drop=True)
    pairs["offer_id"] = OFFERS["offer_id"].to_numpy()[cols]
    pairs["taken"] = [truth[k] for k in zip(pairs["customer_id"], pairs["offer_id"], strict=True)]
    return attach_offers(pairs, OFFERS)


PARAMS = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.2, "n_jobs": 1}


@pytest.fixture(scope="module")
def fitted() -> tuple[NBOClassifier, pd.DataFrame]:
    train = pd.concat(
        [planted_pairs(1500, 1, "2023-09-30"), planted_pairs(1500, 2, "2023-12-31")],
        ignore_index=True,
    )
    clf = NBOClassifier(["orders_count_365d"], [], PARAMS, seed=0).fit(train, train["taken"])
    return clf, train


def test_classifier_keeps_the_sklearn_contract(fitted):
    clf, train = fitted
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params()
    with pytest.raises(NotFittedError):
        fresh.predict_proba(train.head())
    with pytest.raises(ValueError, match="both taken"):
        clone(clf).fit(train.head(20), np.zeros(20))
    p = clf.predict_proba(train.head(50))
    assert p.shape == (50, 2)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert list(clf.classes_) == [0, 1]
    assert set(clf.predict(train.head(50))) <= {0, 1}
    with pytest.raises(ValueError, match="lack"):
        clf.predict_proba(train.drop(columns=["orders_count_365d"]).head())


def test_classifier_finds_the_planted_cross_sell_structure(fitted):
    clf, train = fitted
    test = planted_pairs(1500, 3, "2024-03-31")
    popularity = PopularityBaseline().fit(train[["offer_id"]], train["taken"])
    test["model"] = clf.predict_proba(test)[:, 1]
    test["popularity"] = popularity.predict_proba(test[["offer_id"]])[:, 1]
    model = ranking_metrics(test, "model", [3])
    base = ranking_metrics(test, "popularity", [3])
    assert model["map_at_3"] > base["map_at_3"]
    assert model["hit_at_3"] > base["hit_at_3"]


# --------------------------------------------------------------------------- serving wrapper


@pytest.fixture(scope="module")
def wrapper(fitted) -> NBOModel:
    clf, _ = fitted
    return NBOModel(clf, clf, OFFERS, upsell_steps=1, info={"family": "nbo"})


def test_rank_returns_eligible_offers_best_first(wrapper):
    customers, _ = planted_customers(40, 5)
    out = wrapper.rank(customers, k=3)
    assert list(out.columns) == RANK_COLUMNS
    assert out.groupby("customer_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3]).all()
    assert list(pd.unique(out["customer_id"])) == list(customers["customer_id"])
    assert (out.groupby("customer_id")["expected_value"].diff().dropna() <= 1e-12).all()
    assert np.allclose(out["expected_value"], out["probability"] * out["value"])
    eligible = eligibility_matrix(customers, OFFERS)
    ok = {
        (c, o)
        for i, c in enumerate(customers["customer_id"])
        for j, o in enumerate(OFFERS["offer_id"])
        if eligible[i, j]
    }
    assert set(zip(out["customer_id"], out["offer_id"], strict=True)) <= ok
    by_p = wrapper.rank(customers, k=1, by="probability")
    best = wrapper.rank(customers, k=len(OFFERS), by="probability")
    top_p = best.loc[best.groupby("customer_id")["probability"].idxmax()]
    assert dict(zip(by_p["customer_id"], by_p["offer_id"], strict=True)) == dict(
        zip(top_p["customer_id"], top_p["offer_id"], strict=True)
    )


def test_rank_filters_by_kind_and_predict_uses_params(wrapper):
    customers, _ = planted_customers(10, 6)
    ups = wrapper.rank(customers, k=5, kind="up_sell")
    assert set(ups["kind"]) == {"up_sell"}
    assert ups.groupby("customer_id").size().max() == 1  # only the next tier up
    xs = wrapper.rank(customers, k=2, kind="cross_sell")
    assert set(xs["kind"]) == {"cross_sell"}
    pd.testing.assert_frame_equal(
        wrapper.predict(None, customers, {"k": 2, "kind": "cross_sell"}), xs
    )
    with pytest.raises(ValueError, match="kind"):
        wrapper.rank(customers, kind="retention")
    with pytest.raises(ValueError, match="k must"):
        wrapper.rank(customers, k=0)


def test_rank_edge_cases(wrapper):
    customers, _ = planted_customers(3, 7)
    with pytest.raises(ValueError, match="input lacks columns"):
        wrapper.rank(customers.drop(columns=[recency_column("A")]))
    empty = wrapper.rank(customers.head(0))
    assert list(empty.columns) == RANK_COLUMNS and empty.empty
    saturated = customers.copy()
    for c in CATS:  # bought everything, top tier: nothing left to offer
        saturated[recency_column(c)] = 1.0
    saturated["current_tier"] = 3.0
    assert wrapper.rank(saturated).empty
    one = wrapper.score_offer(saturated.head(1), "XS_A")
    assert np.isnan(one).all()
    p = wrapper.score_offer(customers, "UP_2")
    assert np.isnan(p[customers["current_tier"].to_numpy() >= 2]).all()
    assert (p[customers["current_tier"].to_numpy() < 2] > 0).all()
    with pytest.raises(KeyError):
        wrapper.score_offer(customers, "NOPE")
