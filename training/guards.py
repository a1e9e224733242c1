"""Checks on a modelling frame before anything is fitted: enough rows, and no single column that
separates the label almost perfectly on its own (a probable leak: known only after the outcome)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from training.families.base import Frame
from training.frames import LABEL, SPLIT

#: categories with fewer fit rows than this share one "rare" level in the single-column check, so
#: an identifier-like column does not look separating just because each value is seen once
MIN_CATEGORY_ROWS = 20


def check_min_rows(cfg: Any, frame: Frame) -> None:
    """Refuse to fit (and so to register) on fewer rows than ``min_rows`` asks, naming the key."""
    counts = frame.frame[SPLIT].value_counts()
    for part in ("fit", "test"):
        have, need = int(counts.get(part, 0)), getattr(cfg.min_rows, part)
        if have < need:
            raise ValueError(
                f"min_rows.{part}: the split leaves {have:,} {part} rows, fewer than the "
                f"configured {need:,}; widen the cutoffs or the data, or lower min_rows.{part}"
            )


def single_column_auc(x: pd.Series, y: np.ndarray) -> float:
    """How well one column alone ranks a 0/1 label (ROC AUC folded to >= 0.5): numbers as they
    are (missing as their own lowest value), other columns by their label rate per level."""
    if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
        values = x.astype(float)
        score = values.fillna(values.min() - 1.0 if values.notna().any() else 0.0).to_numpy()
    else:
        levels = x.astype(object).where(x.notna(), "<missing>").astype(str)
        sizes = levels.map(levels.value_counts())
        levels = levels.where(sizes >= MIN_CATEGORY_ROWS, "<rare>")
        score = levels.map(pd.Series(y, index=levels.index).groupby(levels).mean()).to_numpy()
    if np.unique(score).size < 2:
        return 0.5
    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def check_leaks(cfg: Any, frame: Frame) -> dict[str, Any]:
    """Refuse a frame where one feature alone separates the 0/1 label on the fit rows with a ROC
    AUC of at least ``leak_check.max_single_auc``, unless ``leak_check.allow`` names it. Returns
    what the manifest records (the threshold and the most separating columns)."""
    fit = frame.part("fit")
    if LABEL not in fit.columns or set(pd.unique(fit[LABEL])) - {0, 1}:
        return {"checked": False, "reason": "no 0/1 label column"}
    y = fit[LABEL].astype(int).to_numpy()
    if np.unique(y).size < 2:
        return {"checked": False, "reason": "one label value on the fit rows"}
    aucs = {c: single_column_auc(fit[c], y) for c in frame.feature_names}
    policy = cfg.leak_check
    suspects = {
        c: a for c, a in aucs.items() if a >= policy.max_single_auc and c not in policy.allow
    }
    if suspects:
        named = ", ".join(f"{c!r} (AUC {a:.3f})" for c, a in sorted(suspects.items()))
        raise ValueError(
            f"leak_check.allow: {named} alone separate(s) the label on the fit rows at or above "
            f"{policy.max_single_auc}: probably known only after the outcome; drop it "
            "(drop_columns) or allow it by name (leak_check.allow)"
        )
    top = dict(sorted(aucs.items(), key=lambda kv: -kv[1])[:5])
    return {
        "checked": True,
        "max_single_auc": policy.max_single_auc,
        "allowed": sorted(policy.allow),
        "top_single_column_auc": {c: round(a, 4) for c, a in top.items()},
    }


def check_frame(cfg: Any, frame: Frame) -> None:
    """Every check a frame passes before fitting; the results go into the data manifest."""
    check_min_rows(cfg, frame)
    frame.manifest["leak_check"] = check_leaks(cfg, frame)
