"""Simple baselines every model family is graded against."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted, validate_data


class ScoreColumnClassifier(ClassifierMixin, BaseEstimator):
    """A one-feature logistic calibration of an existing score (e.g. RFM points) into probabilities.

    The score column is picked by index in the input matrix; the fit only learns the monotone map
    from score to probability, so the ranking is the score's own (reversed if higher = less likely).
    """

    def __init__(self, column: int = 0) -> None:
        self.column = column

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing score is read as 0 (``_score``)
        return tags

    def fit(self, X, y):  # noqa: N803 - scikit-learn's signature
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        self.classes_ = np.unique(y)
        self.model_ = LogisticRegression().fit(self._score(X), y)
        return self

    def _score(self, X) -> np.ndarray:  # noqa: N803
        col = np.asarray(X, dtype=float)[:, self.column]
        return np.nan_to_num(col, nan=0.0).reshape(-1, 1)

    def predict_proba(self, X) -> np.ndarray:  # noqa: N803
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        return self.model_.predict_proba(self._score(X))

    def predict(self, X) -> np.ndarray:  # noqa: N803
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
