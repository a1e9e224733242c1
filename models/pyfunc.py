"""The MLflow pyfunc wrapper: checks columns, returns a probability per row."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd


class ScoringModel(mlflow.pyfunc.PythonModel):
    """Wraps a fitted binary classifier; ``predict`` returns P(positive) in column ``score``."""

    def __init__(self, estimator: Any, feature_names: list[str], family: str) -> None:
        self.estimator = estimator
        self.feature_names = list(feature_names)
        self.family = family

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The feature matrix in training column order; names every missing column."""
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing}")
        return frame[self.feature_names].to_numpy(dtype=np.float64, na_value=np.nan)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """P(positive) per row."""
        return self.estimator.predict_proba(self.matrix(frame))[:, 1]

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"score": self.score(model_input)})
