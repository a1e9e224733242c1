"""The MLflow pyfunc wrapper: checks columns, returns a score per row, explains it."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel


class ScoringModel(PythonModel):
    """Wraps a fitted (calibrated) classifier or regressor and its uncalibrated pipeline.

    ``predict`` returns column ``score``: P(positive) for classifiers, the value for regressors.
    """

    def __init__(
        self,
        estimator: Any,
        feature_names: list[str],
        family: str,
        pipeline: Any = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.estimator = estimator
        self.feature_names = list(feature_names)
        self.family = family
        self.pipeline = pipeline if pipeline is not None else estimator
        # what serving needs to rebuild the inputs: feature_set_spec (FeatureSet.spec()), dataset
        self.info = dict(info or {})

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns in training order; names every missing column."""
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing}")
        return frame[self.feature_names]

    def score(self, frame: pd.DataFrame) -> Any:
        """P(positive) (classifiers) or predicted value (regressors) per row."""
        x = self.inputs(frame)
        if hasattr(self.estimator, "predict_proba"):
            return self.estimator.predict_proba(x)[:, 1]
        return self.estimator.predict(x)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions per row from the uncalibrated XGBoost model."""
        from models.explain import contributions

        return contributions(self.pipeline, self.inputs(frame))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"score": self.score(model_input)})
