"""Estimator factories: XGBoost pipelines and the families' simple baselines (sklearn contract)."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier, XGBRegressor

DEFAULT_XGB_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "max_depth": 4,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "tree_method": "hist",
    "n_jobs": 2,
}


def _encoder() -> OneHotEncoder:
    # unseen categories at scoring time fall into the "infrequent" bucket learned in training
    # (categories seen fewer than 10 times); if there is none, they encode as all zeros
    return OneHotEncoder(
        handle_unknown="infrequent_if_exist", min_frequency=10, sparse_output=False
    )


def preprocessor(features: list[str], categorical: list[str]) -> ColumnTransformer:
    """One-hot for categorical columns, numeric columns as they are (XGBoost handles NaN)."""
    numeric = [c for c in features if c not in categorical]
    return ColumnTransformer(
        [("cat", _encoder(), categorical), ("num", "passthrough", numeric)],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")


def xgb_pipeline(
    features: list[str],
    categorical: list[str],
    params: dict[str, Any],
    seed: int,
    regression: bool = False,
) -> Pipeline:
    """An unfitted preprocessing + XGBoost pipeline."""
    cls = XGBRegressor if regression else XGBClassifier
    model = cls(**{**DEFAULT_XGB_PARAMS, **params, "random_state": seed})
    return Pipeline([("pre", preprocessor(features, categorical)), ("xgb", model)])


def logistic_baseline(features: list[str], categorical: list[str]) -> Pipeline:
    """A plain logistic regression: the simple baseline of a ready labelled table."""
    numeric = [c for c in features if c not in categorical]
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ]
    )
    return Pipeline([("pre", pre), ("lr", LogisticRegression(max_iter=2000))])
