"""Reason codes and global importance from XGBoost's own SHAP contributions (pred_contribs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.pipeline import Pipeline


def _split(pipeline: Any) -> tuple[Any, Any]:
    """(preprocessor or None, xgboost estimator) of a fitted model."""
    if isinstance(pipeline, Pipeline):
        pre = pipeline[:-1] if len(pipeline.steps) > 1 else None
        return pre, pipeline.steps[-1][1]
    return None, pipeline


def contributions(pipeline: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row SHAP contributions (log-odds for classifiers) by model input column; no bias."""
    pre, model = _split(pipeline)
    x = pre.transform(frame) if pre is not None else frame
    names = list(x.columns) if isinstance(x, pd.DataFrame) else list(model.feature_names_in_)
    matrix = xgb.DMatrix(np.asarray(x, dtype=np.float64), feature_names=names, missing=np.nan)
    contribs = model.get_booster().predict(matrix, pred_contribs=True)
    return pd.DataFrame(contribs[:, :-1], columns=names, index=frame.index)


def global_importance(pipeline: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per input column, largest first."""
    c = contributions(pipeline, frame)
    imp = c.abs().mean().sort_values(ascending=False)
    return pd.DataFrame({"feature": imp.index, "mean_abs_shap": imp.to_numpy()})
