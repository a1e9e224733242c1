"""The names of the segment schemes' labels, in display order (no imports: the serving schemas
publish them, and a server process must not pull scikit-learn or DuckDB in to read them)."""

from __future__ import annotations

RFM_SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)
ABC_CLASSES = ("A", "B", "C")
PYRAMID_LEVELS = ("top", "big", "medium", "small")
LIFECYCLE_STAGES = ("new", "active", "loyal", "won back", "lapsing", "lapsed")
NOT_YET = "not yet a customer"

__all__ = ["ABC_CLASSES", "LIFECYCLE_STAGES", "NOT_YET", "PYRAMID_LEVELS", "RFM_SEGMENTS"]
