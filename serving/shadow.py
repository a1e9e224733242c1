"""Champion vs shadow: running aggregates of both scores on served traffic, never a customer."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serving.kinds import ScoreModel

log = logging.getLogger("patron.serving")


class ShadowStats:
    """Running aggregates of champion vs shadow scores on served traffic; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, Any]] = {}
        self._last_log = time.monotonic()

    def add(
        self, family: str, served: ScoreModel, shadow: ScoreModel, positions: np.ndarray
    ) -> None:
        """Fold one request's customers into the aggregates of a family."""
        if len(positions) == 0:
            return
        diff = shadow.scores[positions] - served.scores[positions]
        same_decile = shadow.decile[positions] == served.decile[positions]
        with self._lock:
            s = self._stats.setdefault(
                family,
                {
                    "requests": 0,
                    "customers": 0,
                    "sum_diff": 0.0,
                    "sum_abs_diff": 0.0,
                    "max_abs_diff": 0.0,
                    "same_decile": 0,
                    "versions": f"{served.meta.version}->{shadow.meta.version}",
                },
            )
            s["requests"] += 1
            s["customers"] += len(positions)
            s["sum_diff"] += float(diff.sum())
            s["sum_abs_diff"] += float(np.abs(diff).sum())
            s["max_abs_diff"] = max(s["max_abs_diff"], float(np.abs(diff).max()))
            s["same_decile"] += int(same_decile.sum())

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per family: requests, customers, mean and max |difference|, decile agreement."""
        with self._lock:
            out = {}
            for family, s in self._stats.items():
                n = max(int(s["customers"]), 1)
                out[family] = {
                    "requests": int(s["requests"]),
                    "customers": int(s["customers"]),
                    "mean_diff": s["sum_diff"] / n,
                    "mean_abs_diff": s["sum_abs_diff"] / n,
                    "max_abs_diff": s["max_abs_diff"],
                    "decile_agreement": s["same_decile"] / n,
                }
            return out

    def maybe_log(self, every_s: float) -> None:
        """Log the aggregates (never a customer) at most once per ``every_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_log < every_s:
                return
            self._last_log = now
        for family, s in self.summary().items():
            log.info(
                "shadow %s: %d requests, %d customers, mean |diff| %.4f, max |diff| %.4f, "
                "decile agreement %.3f",
                family,
                s["requests"],
                s["customers"],
                s["mean_abs_diff"],
                s["max_abs_diff"],
                s["decile_agreement"],
            )
