"""The MLflow pyfunc wrapper: checks columns, returns a score per row, explains it."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel


class ScoringModel(PythonModel):
    """Wraps a fitted (calibrated) classifier or regressor and its uncalibrated pipeline.

    ``predict`` returns column ``score``: P(positive) for classifiers, the value for regressors.
    ``evaluated`` (optional) is the model the run's test figures describe, when the served one
    was refitted on every labelled row after the test: champions are compared with it, so a
    champion is never judged on rows it was fitted on.
    """

    def __init__(
        self,
        estimator: Any,
        feature_names: list[str],
        family: str,
        pipeline: Any = None,
        info: dict[str, Any] | None = None,
        evaluated: Any = None,
    ) -> None:
        self.estimator = estimator
        self.feature_names = list(feature_names)
        self.family = family
        self.pipeline = pipeline if pipeline is not None else estimator
        # what serving needs to rebuild the inputs: feature_set_spec (FeatureSet.spec()), dataset
        self.info = dict(info or {})
        self.evaluated = evaluated

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns in training order; names every missing column."""
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing}")
        return frame[self.feature_names]

    def score(self, frame: pd.DataFrame, evaluated: bool = False) -> Any:
        """P(positive) (classifiers) or predicted value (regressors) per row; by the evaluated
        model when asked and recorded (the served one otherwise)."""
        x = self.inputs(frame)
        model = getattr(self, "evaluated", None) if evaluated else None
        model = self.estimator if model is None else model
        if hasattr(model, "predict_proba"):
            return model.predict_proba(x)[:, 1]
        return model.predict(x)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions per row from the uncalibrated XGBoost model."""
        from models.explain import contributions

        return contributions(self.pipeline, self.inputs(frame))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"score": self.score(model_input)})
