"""Scoring without a server: a loaded model plus the in-memory feature snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.build import latest_snapshot
from features.store import StateDirs
from models.pyfunc import ScoringModel
from serving.settings import ServedModel


@dataclass(frozen=True)
class LoadedModel:
    """A registry model version with the snapshot it scores; immutable, swapped whole on reload."""

    family: str
    registered_model: str
    alias: str
    version: str
    run_id: str
    model: ScoringModel
    snapshot: pd.DataFrame  # indexed by customer_id, feature columns in the model's order
    as_of: date
    snapshot_path: Path

    def score(self, customer_ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
        """Scores of known ids (in request order) and the list of unknown ids."""
        index = self.snapshot.index
        positions = index.get_indexer(customer_ids)
        known = [cid for cid, pos in zip(customer_ids, positions, strict=True) if pos >= 0]
        unknown = [cid for cid, pos in zip(customer_ids, positions, strict=True) if pos < 0]
        rows = self.snapshot.iloc[positions[positions >= 0]]
        scores = self.model.score(rows) if len(rows) else np.array([])
        return pd.DataFrame({"customer_id": known, "score": scores}), unknown


def load_model(family: str, spec: ServedModel, state: StateDirs) -> LoadedModel:
    """Load ``models:/<name>@<alias>`` from MLflow and the latest snapshot of its feature set."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(state.tracking_uri)
    client = MlflowClient()
    mv = client.get_model_version_by_alias(spec.registered_model, spec.alias)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{spec.registered_model}@{spec.alias}")
    wrapper: Any = pyfunc.unwrap_python_model()
    if not isinstance(wrapper, ScoringModel):
        raise TypeError(f"{spec.registered_model}@{spec.alias} is not a Patron scoring model")
    as_of, path = latest_snapshot(state, spec.dataset, spec.feature_set)
    frame = pd.read_parquet(path)
    frame["customer_id"] = frame["customer_id"].astype(str)
    snapshot = frame.set_index("customer_id")[wrapper.feature_names]
    return LoadedModel(
        family=family,
        registered_model=spec.registered_model,
        alias=spec.alias,
        version=str(mv.version),
        run_id=str(mv.run_id),
        model=wrapper,
        snapshot=snapshot,
        as_of=as_of,
        snapshot_path=path,
    )
