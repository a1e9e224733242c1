"""Where Patron keeps its state: one folder, configurable, never inside the source tree.

Layout under the state folder (``PATRON_HOME``, default ``~/.patron``)::

    data/<dataset>/<table>.parquet         accepted canonical rows
    quarantine/<dataset>/<table>.parquet   rejected rows, each with a reason
    snapshots/<dataset>/<feature_set>/as_of=<date>.parquet   point-in-time features
    synthetic/<name>/                      generated demo data
    mlflow/mlflow.db, mlflow/artifacts/    MLflow tracking store (SQLite + local artifacts)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "~/.patron"


@dataclass(frozen=True)
class StateDirs:
    """Paths of Patron's state folder."""

    home: Path
    tracking_uri_override: str | None = None  # an MLflow server instead of the state's SQLite

    @classmethod
    def resolve(cls, home: str | Path | None = None, tracking_uri: str | None = None) -> StateDirs:
        """Resolve the state folder (explicit argument, else $PATRON_HOME, else ~/.patron) and the
        MLflow store (explicit argument, else $MLFLOW_TRACKING_URI, else SQLite in the folder).
        The environment is read here, once, at the edge; the result is passed explicitly."""
        raw = home if home is not None else os.environ.get("PATRON_HOME", DEFAULT_HOME)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        return cls(Path(raw).expanduser().resolve(), uri)

    def data(self, dataset: str) -> Path:
        return self.home / "data" / dataset

    def quarantine(self, dataset: str) -> Path:
        return self.home / "quarantine" / dataset

    def snapshots(self, dataset: str, feature_set: str) -> Path:
        return self.home / "snapshots" / dataset / feature_set

    def synthetic(self, name: str) -> Path:
        return self.home / "synthetic" / name

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the one given to ``resolve``, else SQLite in the state folder."""
        return self.tracking_uri_override or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"


@contextmanager
def atomic_path(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; move it into place if the block succeeds."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()  # writers (DuckDB COPY, pyarrow) create the file themselves
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
