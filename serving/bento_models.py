"""A Bento that carries its models: served champions imported into BentoML's model store.

``import_champions`` imports each served family's model version (the one its alias points at
now) from the MLflow registry with ``bentoml.mlflow.import_model``, labelled ``family``,
``alias``, ``registered_model`` and ``version`` and with the run's facts (run id, training time,
test metrics, tags) as metadata; ``build_bento`` builds the Bento of ``serving/bentofile.yaml``
with those models in its ``models:``, so the Bento (and its container) holds their files.

Run from a Bento (``bentoml serve <tag>``, a container), the service reads the Bento's manifest
(``bento.yaml`` beside its ``src``) and ``BentoRegistry`` answers the registry calls of the
state from the carried models: alias → version, run facts and the model itself, with no MLflow
server reached. A family the Bento does not carry falls back to MLflow, as does every family
outside a Bento. The version a Bento carries is fixed: promoting a new champion is building and
rolling out a new Bento (reload polls see no alias move). The feature snapshot is not in the
Bento: ``PATRON_HOME`` still names the state folder that holds it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.registry import Registry, recorded_feature_set

#: The labels every imported model carries (what ``BentoRegistry`` matches on).
LABELS = ("family", "alias", "registered_model", "version")
#: Where the Bento definition lives, relative to the repository root (the build context).
BENTOFILE = Path("serving") / "bentofile.yaml"


def bento_model_name(family: str) -> str:
    """The BentoML model name of a served family (``patron-<family>``, a valid tag name)."""
    return "patron-" + re.sub(r"[^a-z0-9_.-]", "-", family.lower())


def bento_model_version(registered_model: str, version: str) -> str:
    """The BentoML model version of a registered version: one tag per registry version."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{registered_model}-v{version}")


def import_champions(settings: Any, registry: Registry) -> list[Any]:
    """Import every served family's current version into BentoML's model store (the store of
    ``$BENTOML_HOME``); a version imported before is reused. Returns the BentoML models."""
    import bentoml

    out = []
    for family, spec in settings.models.items():
        version, run_id = registry.version(spec.registered_model, spec.alias)
        tag = f"{bento_model_name(family)}:{bento_model_version(spec.registered_model, version)}"
        try:
            out.append(bentoml.models.get(tag))
            continue
        except bentoml.exceptions.NotFound:
            pass
        trained_at, metrics, tags = registry.run_facts(run_id)
        out.append(
            bentoml.mlflow.import_model(
                tag,
                registry.artifact_uri(spec.registered_model, version),
                labels={
                    "family": family,
                    "alias": spec.alias,
                    "registered_model": spec.registered_model,
                    "version": version,
                },
                metadata={
                    "run_id": run_id,
                    "trained_at": trained_at or "",
                    "metrics": json.dumps(metrics),
                    "tags": json.dumps(tags),
                },
            )
        )
    return out


def build_bento(root: Path, models: list[Any], version: str | None = None) -> Any:
    """Build the Bento of ``serving/bentofile.yaml`` (build context ``root``) with ``models``."""
    import bentoml
    import yaml

    spec = yaml.safe_load((root / BENTOFILE).read_text())
    spec["models"] = [str(m.tag) for m in models]
    return bentoml.bentos.build(**spec, version=version, build_ctx=str(root))


# --------------------------------------------------------------------------- at run time


@dataclass(frozen=True)
class CarriedModel:
    """One model a Bento carries, as its manifest and labels describe it."""

    tag: str
    family: str
    alias: str
    registered_model: str
    version: str
    run_id: str
    trained_at: str | None
    metrics: Mapping[str, float]
    tags: Mapping[str, str]


def bento_dir(cwd: Path | None = None) -> Path | None:
    """The Bento this process runs from (BentoML runs a Bento's service in its ``src``), or
    None when it does not run from a Bento."""
    here = (cwd or Path.cwd()).resolve()
    if here.name == "src" and (here.parent / "bento.yaml").is_file():
        return here.parent
    return None


def carried_models(bento: Path) -> list[CarriedModel]:
    """The Patron models a Bento's manifest lists (those imported by ``import_champions``)."""
    import bentoml
    import yaml

    manifest = yaml.safe_load((bento / "bento.yaml").read_text()) or {}
    out = []
    for entry in manifest.get("models") or []:
        tag = entry.get("tag") if isinstance(entry, Mapping) else entry
        model = bentoml.models.get(str(tag))
        labels = dict(model.info.labels)
        if not all(key in labels for key in LABELS):
            continue
        meta = dict(model.info.metadata)
        out.append(
            CarriedModel(
                tag=str(model.tag),
                family=labels["family"],
                alias=labels["alias"],
                registered_model=labels["registered_model"],
                version=labels["version"],
                run_id=str(meta.get("run_id") or ""),
                trained_at=str(meta.get("trained_at") or "") or None,
                metrics=json.loads(str(meta.get("metrics") or "{}")),
                tags=json.loads(str(meta.get("tags") or "{}")),
            )
        )
    return out


class BentoRegistry(Registry):
    """The registry calls of the serving state answered from the models a Bento carries;
    any other (registered model, alias) goes to the MLflow registry it wraps."""

    def __init__(self, carried: list[CarriedModel], fallback: Registry) -> None:
        super().__init__(fallback.tracking_uri, fallback.registry_uri)
        self.carried = {(m.registered_model, m.alias): m for m in carried}
        self._by_version = {(m.registered_model, m.version): m for m in carried}
        self._by_run = {m.run_id: m for m in carried if m.run_id}
        self._loaded: dict[str, Any] = {}
        self._load_lock = threading.Lock()

    def version(self, name: str, alias: str) -> tuple[str, str]:
        model = self.carried.get((name, alias))
        if model is None:
            return super().version(name, alias)
        return model.version, model.run_id

    def run_facts(self, run_id: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
        model = self._by_run.get(run_id)
        if model is None:
            return super().run_facts(run_id)
        return model.trained_at, dict(model.metrics), dict(model.tags)

    def load(self, name: str, version: str) -> Any:
        model = self._by_version.get((name, version))
        if model is None:
            return super().load(name, version)
        import bentoml

        with self._load_lock:
            python_model = self._loaded.get(model.tag)
            if python_model is None:
                python_model = bentoml.mlflow.load_model(model.tag).unwrap_python_model()
                self._loaded[model.tag] = python_model
        return python_model

    def feature_set(self, name: str, version: str) -> dict[str, Any] | None:
        if (name, version) not in self._by_version:
            return super().feature_set(name, version)
        return recorded_feature_set(self.load(name, version))


def registry_for(fallback: Registry, cwd: Path | None = None) -> Registry:
    """``BentoRegistry`` over the carried models when this process runs from a Bento that
    carries any, else ``fallback`` (the MLflow registry)."""
    bento = bento_dir(cwd)
    if bento is None:
        return fallback
    carried = carried_models(bento)
    return BentoRegistry(carried, fallback) if carried else fallback
