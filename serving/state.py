"""The serving state: every served model by alias over its base, built whole and never mutated.

``build_state`` loads every served model by alias and the latest feature snapshot of its dataset,
scores the whole snapshot once (the base distribution behind percentiles, deciles and targeting),
and returns a frozen ``ServingState``. The service swaps that one reference on reload, so a request
that started on the old state finishes on it. The HTTP layer and ``serving.batch`` both read it,
which is what makes the batch file and the API agree.

A served model's snapshot is the feature set the model recorded (``info["feature_set_spec"]``)
unless the settings name one; a snapshot built from another definition of that set (its
``feature_set.json`` fingerprint differs from the model's) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from features.store import StateDirs
from serving.errors import RequestError
from serving.registry import ModelMeta, Registry, recorded_feature_set, tracking_uri_of
from serving.settings import ServedModel, ServingSettings

if TYPE_CHECKING:
    from models.decisions.campaign import Campaign
    from serving.base import CustomerBase
    from serving.kinds import LoadContext

# serving.base, serving.kinds and serving.decisions (pandas, the planner) are imported where
# used: a replica whose families all come from the online store, with no campaign configured,
# builds its (empty) state without them, so it starts without importing them.

#: The state key of the configured campaign files.
CAMPAIGNS_KEY = "@campaigns"
#: The snapshot of models that recorded no feature set (trained before models recorded one).
DEFAULT_FEATURE_SET = "churn_v1"


class FeatureSetMismatch(ValueError):
    """A served model and its snapshot were built from different feature definitions."""


@dataclass(frozen=True)
class ServingState:
    """Everything a request reads, built whole and never mutated."""

    models: Mapping[str, Any]  # family -> ScoreModel / other kinds
    shadows: Mapping[str, Any]  # family -> the shadow alias's model (never returned)
    bases: Mapping[tuple[str, str], CustomerBase]
    loaded_at: str
    keys: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # what each part came from
    campaigns: Mapping[str, Campaign] = field(default_factory=dict)  # settings.campaigns, parsed
    # families the online store serves: /score, /next-best-offer, /models
    remote: frozenset[str] = frozenset()

    def model(self, family: str, field_name: str = "model") -> Any:
        """A served model by family name, or a 404 naming the field."""
        served = self.models.get(family)
        if served is None and family in self.remote:
            raise RequestError(
                field_name,
                f"model {family!r} is served from the online store, which holds its per-customer "
                "records (/score, /next-best-offer) and consent flags (/contactable) only; this "
                "route needs the model and its whole base in memory (serve the family without "
                "online_store for it)",
                409,
            )
        if served is None:
            raise RequestError(
                field_name, f"unknown model {family!r}; served: {sorted(self.models)}", 404
            )
        return served


def served_feature_set(spec: ServedModel, registry: Registry, version: str) -> str:
    """The feature set whose snapshot a served model scores: the settings', else its record's."""
    if spec.feature_set:
        return spec.feature_set
    recorded = registry.feature_set(spec.registered_model, version)
    return str((recorded or {}).get("key") or DEFAULT_FEATURE_SET)


def check_feature_set(family: str, meta: ModelMeta, python_model: Any, base: CustomerBase) -> None:
    """Refuse a snapshot whose recorded feature-set fingerprint differs from the model's."""
    model_fp = (recorded_feature_set(python_model) or {}).get("fingerprint")
    snapshot_fp = base.recorded_fingerprint
    if model_fp and snapshot_fp and model_fp != snapshot_fp:
        raise FeatureSetMismatch(
            f"served model {family!r} ({meta.registered_model} v{meta.version}) was trained on "
            f"feature set {base.feature_set!r} with fingerprint {model_fp}, but the snapshot "
            f"{base.snapshot_path} records fingerprint {snapshot_fp}: rebuild the snapshot "
            "with the model's feature set (`patron features`) or serve a model trained on it"
        )


def _load_one(
    family: str,
    spec: ServedModel,
    alias: str,
    registry: Registry,
    base: CustomerBase,
    version: tuple[str, str],
    ctx: LoadContext,
) -> Any:
    """Load one registered version, check it against its base and build its served form."""
    from serving.kinds import detect_kind

    python_model = registry.load(spec.registered_model, version[0])
    kind = detect_kind(python_model, spec.kind)
    meta = model_meta(family, kind.name, spec, alias, version, registry)
    check_feature_set(family, meta, python_model, base)
    return kind.build(meta, python_model, base, ctx)


def model_meta(
    family: str,
    kind: str,
    spec: ServedModel,
    alias: str,
    version: tuple[str, str],
    registry: Registry,
) -> ModelMeta:
    """The registry facts of one served version (training time, test metrics, tags)."""
    trained_at, metrics, tags = registry.run_facts(version[1])
    return ModelMeta(
        family=family,
        kind=kind,
        registered_model=spec.registered_model,
        alias=alias,
        version=version[0],
        run_id=version[1],
        trained_at=trained_at,
        metrics=metrics,
        tags=tags,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _shadow_version(spec: ServedModel, registry: Registry) -> tuple[str, str] | None:
    if not spec.shadow_alias:
        return None
    try:
        return registry.version(spec.registered_model, spec.shadow_alias)
    except Exception:  # no such alias (yet): nothing to shadow
        return None


def _campaign_files_key(files: Mapping[str, str]) -> tuple[Any, ...]:
    """``serving.decisions.campaign_files_key``; () without importing it when none is set."""
    if not files:
        return ()
    from serving.decisions import campaign_files_key

    return campaign_files_key(files)


def _load_campaigns(files: Mapping[str, str]) -> dict[str, Campaign]:
    """``serving.decisions.load_campaigns``; {} without importing it when none is set."""
    if not files:
        return {}
    from serving.decisions import load_campaigns

    return load_campaigns(files)


def state_keys(
    settings: ServingSettings, state: StateDirs, registry: Registry
) -> dict[str, tuple[Any, ...]]:
    """What the state would be built from now: alias versions, feature sets and snapshots."""
    settings = settings.in_process()
    keys: dict[str, tuple[Any, ...]] = {}
    for family, spec in settings.models.items():
        # here, not above: a replica whose families all come from the store imports no pandas
        from serving.base import base_fingerprint

        version = registry.version(spec.registered_model, spec.alias)
        feature_set = served_feature_set(spec, registry, version[0])
        fp = base_fingerprint(state, spec.dataset, feature_set)
        keys[family] = (version, feature_set, fp)
        shadow = _shadow_version(spec, registry)
        if shadow is not None:
            keys[f"{family}@shadow"] = (shadow, feature_set, fp)
    keys[CAMPAIGNS_KEY] = _campaign_files_key(settings.campaigns)
    return keys


def build_state(
    settings: ServingSettings,
    state: StateDirs,
    previous: ServingState | None = None,
    registry: Registry | None = None,
) -> ServingState:
    """Load every served model and its base; parts whose inputs did not change are reused.
    Families of the online store are not loaded (``state.remote`` names them)."""
    remote = settings.store_families
    settings = settings.in_process()
    registry = registry or Registry(tracking_uri_of(settings, state))
    keys = state_keys(settings, state, registry)
    campaigns = _load_campaigns(settings.campaigns)  # a broken file fails before models load
    old_keys = previous.keys if previous is not None else {}
    bases: dict[tuple[str, str], CustomerBase] = {}

    def base_for(dataset: str, feature_set: str, fp: tuple[Any, ...]) -> CustomerBase:
        key = (dataset, feature_set)
        if key in bases:
            return bases[key]
        reuse = previous.bases.get(key) if previous is not None else None
        bases[key] = (
            reuse
            if reuse is not None and reuse.fingerprint == fp
            else _load_base(state, dataset, feature_set)
        )
        return bases[key]

    models: dict[str, Any] = {}
    shadows: dict[str, Any] = {}
    for family, spec in settings.models.items():
        from serving.kinds import LoadContext  # pandas: only when a model is served in memory

        version, feature_set, fp = keys[family]
        base = base_for(spec.dataset, feature_set, fp)
        if (
            previous is not None
            and family in previous.models
            and old_keys.get(family) == keys[family]
        ):
            models[family] = previous.models[family]
        else:
            ctx = LoadContext(settings, state, spec)
            models[family] = _load_one(family, spec, spec.alias, registry, base, version, ctx)
        shadow_key = keys.get(f"{family}@shadow")
        if shadow_key is not None and shadow_key[0][0] != version[0]:
            if (
                previous is not None
                and family in previous.shadows
                and old_keys.get(f"{family}@shadow") == shadow_key
            ):
                shadows[family] = previous.shadows[family]
            else:
                # the shadow's reasons are never returned: no need to precompute them
                quiet = LoadContext(settings, state, spec, precompute_reasons=False)
                shadows[family] = _load_one(
                    family, spec, spec.shadow_alias or "", registry, base, shadow_key[0], quiet
                )
    return ServingState(
        models=models,
        shadows=shadows,
        bases=bases,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        keys=keys,
        campaigns=campaigns,
        remote=remote,
    )


def preflight(
    settings: ServingSettings, state: StateDirs, registry: Registry | None = None
) -> None:
    """The checks ``build_state`` would fail on, without scoring the base: every alias resolves
    in the store, every model loads, every snapshot's file is readable Parquet with a
    customer_id column and the feature-set fingerprint its model recorded, and the campaign
    files parse.

    Raises the first problem; `patron serve` runs it before starting the server so that a broken
    state fails in seconds with one line instead of after the worker's start."""
    import json

    import pyarrow.parquet as pq

    from features.build import SPEC_FILE, latest_snapshot
    from serving.base import base_fingerprint

    registry = registry or Registry(tracking_uri_of(settings, state))
    if settings.online_store is not None:
        from serving.online import check_published, open_store

        cfg = settings.online_store
        check_published(open_store(cfg.url, cfg.prefix), cfg.families, cfg.url)
    settings = settings.in_process()
    for family, spec in settings.models.items():  # each failure names the settings key
        try:
            version = registry.version(spec.registered_model, spec.alias)
            feature_set = served_feature_set(spec, registry, version[0])
            base_fingerprint(state, spec.dataset, feature_set)
        except Exception as exc:
            raise ValueError(
                f"models.{family} ({spec.registered_model}@{spec.alias}, dataset "
                f"{spec.dataset}): {type(exc).__name__}: {exc}"
            ) from exc
    keys = state_keys(settings, state, registry)  # aliases, recorded feature sets, snapshots
    _load_campaigns(settings.campaigns)
    for family, spec in settings.models.items():
        version, feature_set, _ = keys[family]
        _, path = latest_snapshot(state, spec.dataset, feature_set)
        try:
            columns = set(pq.read_schema(path).names)
            if "customer_id" not in columns:
                raise ValueError("no customer_id column")
        except Exception as exc:
            raise ValueError(f"snapshot {path} of model {family!r} is not readable: {exc}") from exc
        recorded = registry.feature_set(spec.registered_model, version[0]) or {}
        spec_path = path.parent / SPEC_FILE
        snapshot_fp = (
            (json.loads(spec_path.read_text()) or {}).get("fingerprint")
            if spec_path.exists()
            else None
        )
        model_fp = recorded.get("fingerprint")
        if model_fp and snapshot_fp and model_fp != snapshot_fp:
            raise FeatureSetMismatch(
                f"served model {family!r} ({spec.registered_model} v{version[0]}) was trained on "
                f"feature set {feature_set!r} with fingerprint {model_fp}, but the snapshot {path} "
                f"records fingerprint {snapshot_fp}: rebuild the snapshot with the model's feature "
                "set (`patron features`) or serve a model trained on it"
            )


def _load_base(state: StateDirs, dataset: str, feature_set: str) -> CustomerBase:
    from serving.base import load_base

    return load_base(state, dataset, feature_set)
