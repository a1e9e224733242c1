"""Next-best offer: P(a customer takes an eligible offer in the horizon), expected value and
ranking; the popularity baseline; ranking metrics; the MLflow pyfunc wrapper for serving.

Rows are (customer, offer) pairs: the customer's input columns (feature-set features, the
category profile of ``features.offers.profile_frame``) plus the offer's attributes as
``offer_id, offer_kind, offer_category, offer_tier, offer_value``. ``NBOClassifier`` derives the
pair features below from those columns and fits one XGBoost classifier over all offers:

    offer_popularity           share of eligible training customers who took the offer
    offer_category_prevalence  share of training customers who had bought the offer's category
    affinity                   the customer's share of lines in the offer's category
    category_days              days since the customer last bought that category (NaN: never)
    cooc_lift                  sum over the customer's categories j of share_j x lift(j, offer
                               category), lift = P(bought both) / (P(j) P(c)) among training
                               customers ("who buy j also buy c"): the cross-sell signal
    categories_bought          number of categories the customer has bought
    current_tier, mean_tier, offer_tier, tier_gap (= offer_tier - current_tier), offer_value
    season_sin, season_cos     the cutoff's day of the year on the unit circle (``seasonal``):
                               offers whose take rate follows the calendar (Christmas) need it
plus ``offer_id`` and ``offer_kind`` one-hot and the customer's own features. With ``seasonal``
the rows need the cutoff date in ``as_of``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from xgboost import XGBClassifier

from features.definitions import UnseenCategoryEncoder
from features.offers import (
    SHARE_PREFIX,
    TIER_COLUMNS,
    eligibility_matrix,
    recency_column,
    share_column,
)
from models.estimators import DEFAULT_XGB_PARAMS

OFFER_ATTRS = {
    "offer_id": "offer_id",
    "kind": "offer_kind",
    "category": "offer_category",
    "tier": "offer_tier",
    "value": "offer_value",
}
PAIR_NUMERIC = [
    "offer_popularity",
    "offer_category_prevalence",
    "affinity",
    "category_days",
    "cooc_lift",
    "categories_bought",
    "current_tier",
    "mean_tier",
    "offer_tier",
    "tier_gap",
    "offer_value",
]
SEASON_FEATURES = ["season_sin", "season_cos"]
PAIR_CATEGORICAL = ["offer_id", "offer_kind"]
RANK_COLUMNS = [
    "customer_id",
    "rank",
    "offer_id",
    "kind",
    "category",
    "tier",
    "probability",
    "value",
    "expected_value",
]
Kind = Literal["cross_sell", "up_sell", "any"]


def attach_offers(pairs: pd.DataFrame, offers: pd.DataFrame) -> pd.DataFrame:
    """Pair rows (with ``offer_id``) with the offer's attributes as ``offer_*`` columns."""
    attrs = offers[list(OFFER_ATTRS)].rename(columns=OFFER_ATTRS)
    out = pairs.drop(columns=[c for c in attrs.columns if c != "offer_id" and c in pairs])
    out = out.assign(offer_id=out["offer_id"].astype(str))
    merged = out.merge(attrs, on="offer_id", how="left", validate="many_to_one")
    unknown = merged.loc[merged["offer_kind"].isna(), "offer_id"].unique()
    if len(unknown):
        raise KeyError(f"offers not in the offer table: {sorted(unknown)[:10]}")
    return merged


def _profile_matrix(
    x: pd.DataFrame, categories: Sequence[str], recency: bool = False
) -> np.ndarray:
    """Category shares (NaN -> 0) or, with ``recency``, days since the last purchase (NaN kept)."""
    cols = [(recency_column if recency else share_column)(c) for c in categories]
    missing = [c for c in cols if c not in x.columns]
    if missing:
        raise ValueError(f"input lacks category profile columns {missing[:10]}")
    return x[cols].to_numpy(dtype=float, na_value=np.nan if recency else 0.0)


def _numbers(values: pd.Series) -> np.ndarray:
    """Floats of a column (NaN where missing or not a number)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


class PopularityBaseline(ClassifierMixin, BaseEstimator):
    """P(class | key) = the class shares among training rows with the same key (e.g. the offer);
    rows with an unseen key get the overall shares. The NBO baseline: everyone gets the offers
    most often taken by eligible customers."""

    def __init__(self, key: str | int = "offer_id") -> None:
        self.key = key

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        return tags

    def _key_column(self) -> int:
        if isinstance(self.key, str):
            names = list(getattr(self, "feature_names_in_", []))
            if self.key not in names:
                raise ValueError(f"key column {self.key!r} is not in the input")
            return names.index(self.key)
        return int(self.key)

    def _keys_of(self, arr: Any) -> np.ndarray:
        col = np.asarray(arr)[:, self._key_column()]
        if col.dtype.kind in "fiub":  # one text per number, whatever its width
            col = col.astype(np.float64)
        return col.astype(str)

    def fit(self, X: Any, y: Any) -> PopularityBaseline:
        """Learn the class shares per key."""
        arr, y = validate_data(self, X, y, dtype=None)
        keys = self._keys_of(arr)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        n = len(self.classes_)
        self.prior_ = np.bincount(codes, minlength=n) / len(codes)
        uniq, key_codes = np.unique(keys, return_inverse=True)
        counts = np.zeros((len(uniq), n))
        np.add.at(counts, (key_codes, codes), 1.0)
        self.keys_ = uniq
        self.rates_ = counts / counts.sum(axis=1, keepdims=True)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class shares of each row's key (the overall shares for unseen keys)."""
        check_is_fitted(self, "rates_")
        keys = self._keys_of(validate_data(self, X, reset=False, dtype=None))
        pos = np.searchsorted(self.keys_, keys)
        pos = np.minimum(pos, len(self.keys_) - 1)
        seen = self.keys_[pos] == keys
        out = np.tile(self.prior_, (len(keys), 1))
        out[seen] = self.rates_[pos[seen]]
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The most likely class of each row's key."""
        check_is_fitted(self, "rates_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class NBOClassifier(ClassifierMixin, BaseEstimator):
    """P(takes the offer) for (customer, offer) pair rows: pair features (module docstring) and
    one XGBoost classifier over all offers.

    The design matrix is built with numpy (``design``): customer features as numbers, customer
    string features as ordinal codes (``UnseenCategoryEncoder``), the pair features, and one-hot
    ``offer_id`` / ``offer_kind`` columns for the levels seen in ``fit`` (unseen: all zero).
    Prediction runs XGBoost single-threaded: serving batches are small.
    """

    def __init__(
        self,
        feature_names: Sequence[str] = (),
        categorical: Sequence[str] = (),
        params: dict[str, Any] | None = None,
        seed: int = 0,
        seasonal: bool = True,
    ) -> None:
        self.feature_names = feature_names
        self.categorical = categorical
        self.params = params
        self.seed = seed
        self.seasonal = seasonal

    def fit(self, X: pd.DataFrame, y: Any) -> NBOClassifier:
        """Learn category statistics, offer popularity and levels, then fit XGBoost."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError("NBOClassifier takes a DataFrame of (customer, offer) pair rows")
        y = np.asarray(y).astype(int)
        check_classification_targets(y)
        if set(np.unique(y)) != {0, 1}:
            raise ValueError("NBOClassifier needs both taken (1) and not taken (0) pairs")
        self.classes_ = np.array([0, 1])
        self.categories_ = sorted(
            c[len(SHARE_PREFIX) :] for c in X.columns if c.startswith(SHARE_PREFIX)
        )
        key = [c for c in ("customer_id", "as_of") if c in X.columns]
        customers = X.drop_duplicates(key) if key else X
        bought = _profile_matrix(customers, self.categories_) > 0
        n = max(len(bought), 1)
        p = bought.mean(axis=0) if len(bought) else np.zeros(len(self.categories_))
        joint = bought.T.astype(float) @ bought.astype(float) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = joint / np.outer(p, p)
        lift[~np.isfinite(lift)] = 0.0
        np.fill_diagonal(lift, 0.0)  # a category's own share is the affinity feature
        self.category_prevalence_ = p
        self.lift_ = lift
        offer_ids = X["offer_id"].astype(str).to_numpy(dtype=object)
        rates = pd.Series(y).groupby(offer_ids).mean()
        self.popularity_ = {str(k): float(v) for k, v in rates.items()}
        self.prior_ = float(y.mean())
        self.offer_levels_ = sorted(self.popularity_)
        self.kind_levels_ = sorted(X["offer_kind"].astype(str).unique())
        self.numeric_ = [f for f in self.feature_names if f not in self.categorical]
        self.encoder_ = (
            UnseenCategoryEncoder().fit(X[list(self.categorical)]) if self.categorical else None
        )
        season = SEASON_FEATURES if self.seasonal else []
        self.design_names_ = [
            *self.numeric_,
            *self.categorical,
            *PAIR_NUMERIC,
            *season,
            *(f"offer_id={o}" for o in self.offer_levels_),
            *(f"offer_kind={k}" for k in self.kind_levels_),
        ]
        params = {**DEFAULT_XGB_PARAMS, **(self.params or {}), "random_state": self.seed}
        self.model_ = XGBClassifier(**params)
        self.model_.fit(self.pair_features(X), y)
        self.model_.set_params(n_jobs=1)
        return self

    def _columns(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """The pair features (module docstring) as arrays."""
        check_is_fitted(self, "lift_")
        needed = [*self.feature_names, *OFFER_ATTRS.values(), *(["as_of"] if self.seasonal else [])]
        missing = [c for c in needed if c not in X.columns]
        if missing:
            raise ValueError(f"pair rows lack columns {missing}")
        n = len(X)
        shares = _profile_matrix(X, self.categories_)
        days = _profile_matrix(X, self.categories_, recency=True)
        index = {c: i for i, c in enumerate(self.categories_)}
        cat_idx = np.fromiter(
            (index.get(c, -1) if isinstance(c, str) else -1 for c in X["offer_category"]),
            dtype=int,
            count=n,
        )
        has_cat = cat_idx >= 0
        nan = np.full(n, np.nan)
        affinity = category_days = cooc = prevalence = nan
        if self.categories_:
            rows, safe = np.arange(n), np.where(has_cat, cat_idx, 0)
            known = shares.sum(axis=1) > 0
            affinity = np.where(has_cat, shares[rows, safe], np.nan)
            category_days = np.where(has_cat, days[rows, safe], np.nan)
            cooc = np.where(has_cat & known, (shares @ self.lift_)[rows, safe], np.nan)
            prevalence = np.where(has_cat, self.category_prevalence_[safe], np.nan)
        cur, mean_tier = (_numbers(X[c]) if c in X.columns else nan for c in TIER_COLUMNS)
        offer_tier = _numbers(X["offer_tier"])
        offer_ids = X["offer_id"].astype(str).to_numpy(dtype=object)
        popularity = np.fromiter(
            (self.popularity_.get(o, self.prior_) for o in offer_ids), dtype=float, count=n
        )
        cols = {
            "offer_popularity": popularity,
            "offer_category_prevalence": prevalence,
            "affinity": affinity,
            "category_days": category_days,
            "cooc_lift": cooc,
            "categories_bought": (shares > 0).sum(axis=1).astype(float),
            "current_tier": cur,
            "mean_tier": mean_tier,
            "offer_tier": offer_tier,
            "tier_gap": offer_tier - np.nan_to_num(cur, nan=0.0),
            "offer_value": _numbers(X["offer_value"]),
        }
        if self.seasonal:
            when = pd.to_datetime(X["as_of"]).to_numpy(dtype="datetime64[D]")
            day = (when - when.astype("datetime64[Y]")).astype(float) + 1.0
            cols["season_sin"] = np.sin(2 * np.pi * day / 365.25)
            cols["season_cos"] = np.cos(2 * np.pi * day / 365.25)
        cols["offer_id"] = offer_ids
        cols["offer_kind"] = X["offer_kind"].astype(str).to_numpy(dtype=object)
        return cols

    def design(self, X: pd.DataFrame) -> np.ndarray:
        """The float design matrix of pair rows, columns ``design_names_``."""
        cols = self._columns(X)
        parts = [X[self.numeric_].to_numpy(dtype=float, na_value=np.nan)]
        if self.encoder_ is not None:
            parts.append(self.encoder_.transform(X[list(self.categorical)]))
        season = SEASON_FEATURES if self.seasonal else []
        parts.append(np.column_stack([cols[c] for c in (*PAIR_NUMERIC, *season)]))
        parts.append(cols["offer_id"][:, None] == np.asarray(self.offer_levels_, dtype=object))
        parts.append(cols["offer_kind"][:, None] == np.asarray(self.kind_levels_, dtype=object))
        return np.hstack([np.asarray(p, dtype=float).reshape(len(X), -1) for p in parts])

    def pair_features(self, X: pd.DataFrame) -> pd.DataFrame:
        """The design matrix as a named frame (for fitting and explanations)."""
        return pd.DataFrame(self.design(X), columns=self.design_names_, index=X.index)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """[P(not taken), P(taken)] per pair row."""
        check_is_fitted(self, "model_")
        p = self.model_.get_booster().inplace_predict(self.design(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 when P(taken) >= 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


# --------------------------------------------------------------------------- ranking metrics


def _idcg(k: int) -> np.ndarray:
    """Ideal DCG of 1..k relevant items at the top (index = number relevant)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])


def group_ranks(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-based rank of each row within its run of equal ``groups`` (rows already sorted by group,
    best first within a group); also each run's start index and size."""
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    sizes = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, sizes) + 1, starts, sizes


def ranking_metrics(
    frame: pd.DataFrame,
    score: str,
    ks: Sequence[int],
    *,
    group: str = "customer_id",
    label: str = "taken",
    tiebreak: str = "offer_id",
    value: str | None = None,
) -> dict[str, float]:
    """hit@k, MAP@k and NDCG@k (binary relevance) over the groups with at least one positive.

    Each group's rows are ranked by ``score`` (highest first; ties by ``tiebreak`` ascending).
    hit@k = 1 when a positive is in the top k; AP@k = sum over positives in the top k of
    precision at their rank / min(k, positives); NDCG@k = DCG@k / ideal DCG@k with gains
    1 / log2(rank + 1). With ``value``: value@k = the summed ``value`` of positives in the top k.
    Means over groups; ``n_customers`` is the number of groups evaluated.
    """
    cols = [group, tiebreak, score, label] + ([value] if value else [])
    f = frame[cols]
    g, _ = pd.factorize(f[group])
    rel = f[label].to_numpy().astype(int)
    n_rel_g = np.bincount(g, weights=rel, minlength=g.max() + 1 if len(g) else 0)
    keep = n_rel_g[g] > 0
    f, g, rel = f[keep], g[keep], rel[keep]
    if len(f) == 0:
        empty = {f"{m}_at_{k}": float("nan") for k in ks for m in ("hit", "map", "ndcg")}
        return {**empty, "n_customers": 0.0}
    tie = pd.factorize(f[tiebreak].astype(str), sort=True)[0]
    order = np.lexsort((tie, -f[score].to_numpy(float), g))
    g, rel = g[order], rel[order]
    vals = f[value].to_numpy(float)[order] if value else None
    rank, starts, sizes = group_ranks(g)
    cum_rel = np.cumsum(rel)
    cum_rel = cum_rel - np.repeat(cum_rel[starts] - rel[starts], sizes)
    groups = np.unique(g)
    n_groups = len(groups)
    n_rel = np.bincount(g, weights=rel)[groups]
    out: dict[str, float] = {}
    for k in ks:
        in_k = rank <= k
        hit = np.bincount(g, weights=(rel * in_k), minlength=g.max() + 1)[groups] > 0
        ap_sum = np.bincount(g, weights=rel * in_k * cum_rel / rank, minlength=g.max() + 1)
        ap = ap_sum[groups] / np.minimum(k, n_rel)
        dcg = np.bincount(g, weights=rel * in_k / np.log2(rank + 1), minlength=g.max() + 1)
        idcg = _idcg(k)[np.minimum(k, n_rel).astype(int)]
        out[f"hit_at_{k}"] = float(hit.mean())
        out[f"map_at_{k}"] = float(ap.mean())
        out[f"ndcg_at_{k}"] = float((dcg[groups] / idcg).mean())
        if vals is not None:
            v = np.bincount(g, weights=rel * in_k * vals, minlength=g.max() + 1)[groups]
            out[f"value_at_{k}"] = float(v.mean())
    out["n_customers"] = float(n_groups)
    return out


def top_k(
    frame: pd.DataFrame, score: str, k: int, group: str = "customer_id", tiebreak: str = "offer_id"
) -> pd.DataFrame:
    """The k highest-``score`` rows of each group with a 1-based ``rank`` column."""
    g = pd.factorize(frame[group])[0]
    tie = pd.factorize(frame[tiebreak].astype(str), sort=True)[0]
    order = np.lexsort((tie, -frame[score].to_numpy(float), g))
    rank = group_ranks(g[order])[0]
    keep = rank <= k
    return frame.iloc[order[keep]].assign(rank=rank[keep]).reset_index(drop=True)


# --------------------------------------------------------------------------- serving wrapper


def _empty_ranking() -> pd.DataFrame:
    """A ranking with no rows and the columns' dtypes."""
    dtypes = {
        "rank": "int64",
        "tier": "float64",
        "probability": "float64",
        "value": "float64",
        "expected_value": "float64",
    }
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in RANK_COLUMNS})


class NBOModel(PythonModel):
    """Ranks eligible offers per customer by expected value (or probability) for serving.

    Holds the calibrated classifier, the uncalibrated ``NBOClassifier`` (category statistics,
    explanations) and the offer table it was trained with. ``rank`` is the serving entry point;
    ``predict`` calls it with ``params`` ``k`` and ``kind``.
    """

    def __init__(
        self,
        estimator: Any,
        classifier: NBOClassifier,
        offers: pd.DataFrame,
        upsell_steps: int = 1,
        rank_by: Literal["expected_value", "probability"] = "expected_value",
        info: dict[str, Any] | None = None,
        bought_within_days: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.classifier = classifier
        self.offers = offers.reset_index(drop=True)
        self.upsell_steps = upsell_steps
        self.bought_within_days = bought_within_days
        self.rank_by = rank_by
        self.feature_names = list(classifier.feature_names)
        self.info = dict(info or {})  # family, dataset, feature set, horizon: for the service

    @property
    def categories(self) -> list[str]:
        """Categories whose profile columns (share, days since) the input needs."""
        offer_cats = [c for c in self.offers["category"] if isinstance(c, str)]
        return sorted(set(self.classifier.categories_) | set(offer_cats))

    @property
    def input_columns(self) -> list[str]:
        """Columns ``rank`` needs: customer_id, the features' date ``as_of`` (seasonal models),
        features, category shares and recencies, tiers."""
        shares = [share_column(c) for c in self.categories]
        days = [recency_column(c) for c in self.categories]
        when = ["as_of"] if self.classifier.seasonal else []
        return ["customer_id", *when, *self.feature_names, *shares, *days, *TIER_COLUMNS]

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The input columns in order; names every missing one."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks columns {missing[:20]}")
        out = frame[self.input_columns].reset_index(drop=True)
        return out.assign(customer_id=out["customer_id"].astype(str))

    def _offers_of(self, kind: Kind) -> pd.DataFrame:
        if kind not in ("cross_sell", "up_sell", "any"):
            raise ValueError(f"kind must be cross_sell, up_sell or any, not {kind!r}")
        offers = self.offers if kind == "any" else self.offers[self.offers["kind"] == kind]
        return offers.reset_index(drop=True)

    def eligibility(self, customers: pd.DataFrame, offers: pd.DataFrame) -> np.ndarray:
        """Boolean (customers x offers) eligibility under the rules the model was trained with."""
        return eligibility_matrix(customers, offers, self.upsell_steps, self.bought_within_days)

    def score_pairs(self, pairs: pd.DataFrame) -> np.ndarray:
        """Calibrated P(taken) for pair rows (input columns + ``offer_id``)."""
        x = attach_offers(pairs, self.offers)
        return self.estimator.predict_proba(x)[:, 1]

    def score_offer(self, customer_features: pd.DataFrame, offer_id: str) -> np.ndarray:
        """Calibrated P(taken) of one offer for each customer row; NaN where not eligible."""
        x = self.inputs(customer_features)
        offers = self.offers[self.offers["offer_id"] == str(offer_id)].reset_index(drop=True)
        if offers.empty:
            raise KeyError(f"offer {offer_id!r} is not one this model ranks")
        out = np.full(len(x), np.nan)
        eligible = self.eligibility(x, offers)[:, 0]
        if eligible.any():
            pairs = x[eligible].reset_index(drop=True)
            for src, dst in OFFER_ATTRS.items():
                pairs[dst] = offers[src].iloc[0]
            out[eligible] = self.estimator.predict_proba(pairs)[:, 1]
        return out

    def rank(
        self,
        customer_features: pd.DataFrame,
        k: int = 3,
        kind: Kind = "any",
        by: Literal["expected_value", "probability"] | None = None,
    ) -> pd.DataFrame:
        """Top-k eligible offers per customer: customer_id, rank (1 = best), offer_id, kind,
        category, tier, probability, value, expected_value (= probability x value); customers
        with no eligible offer have no rows; customers keep their input order."""
        if int(k) < 1:
            raise ValueError("k must be at least 1")
        by = by or self.rank_by
        if by not in ("expected_value", "probability"):
            raise ValueError(f"by must be expected_value or probability, not {by!r}")
        x = self.inputs(customer_features)
        offers = self._offers_of(kind)
        if x.empty or offers.empty:
            return _empty_ranking()
        rows, cols = np.nonzero(self.eligibility(x, offers))
        if len(rows) == 0:
            return _empty_ranking()
        data = {c: x[c].to_numpy()[rows] for c in x.columns}
        o = {c: offers[c].to_numpy()[cols] for c in offers.columns}
        data.update({dst: o[src] for src, dst in OFFER_ATTRS.items()})
        pairs = pd.DataFrame(data)
        p = self.estimator.predict_proba(pairs)[:, 1]
        value = o["value"].astype(float)
        ev = p * value
        # rows come customer by customer; offers are sorted by id, so ``cols`` breaks ties
        order = np.lexsort((cols, -(ev if by == "expected_value" else p), rows))
        rank = group_ranks(rows[order])[0]
        keep = order[rank <= int(k)]
        return pd.DataFrame(
            {
                "customer_id": data["customer_id"][keep],
                "rank": rank[rank <= int(k)].astype("int64"),
                "offer_id": o["offer_id"][keep],
                "kind": o["kind"][keep],
                "category": o["category"][keep],
                "tier": o["tier"][keep].astype(float),
                "probability": p[keep],
                "value": value[keep],
                "expected_value": ev[keep],
            }
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        return self.rank(
            model_input,
            k=int(params.get("k", 3)),
            kind=params.get("kind", "any"),
            by=params.get("by") or None,
        )


__all__ = [
    "NBOClassifier",
    "NBOModel",
    "PopularityBaseline",
    "attach_offers",
    "ranking_metrics",
    "top_k",
]
