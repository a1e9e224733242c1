"""The validated serving config: models to load by alias, limits, API keys from the environment.

People write one serving YAML naming every served family's model (``experiments/serving/``;
``patron serve --serving FILE``). The server process reads it from ``$PATRON_SERVING_FILE`` (a
Bento, a container) or as JSON in ``$PATRON_SERVING`` (written by the ``patron`` CLI, never by
hand); secrets never travel in it: API keys come from ``$PATRON_API_KEYS`` / ``$PATRON_ADMIN_KEYS``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_VAR = "PATRON_SERVING"
FILE_VAR = "PATRON_SERVING_FILE"
API_KEYS_VAR = "PATRON_API_KEYS"
ADMIN_KEYS_VAR = "PATRON_ADMIN_KEYS"
ANONYMOUS_VAR = "PATRON_ALLOW_ANONYMOUS"

#: The largest id list any request schema accepts; ``max_batch`` may only lower it.
HARD_MAX_BATCH = 10_000
#: The largest k of /next-best-offer.
MAX_K = 20
#: A configured campaign's name (the key of ``campaigns``; POST /campaigns/plan's campaign_name).
CAMPAIGN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: Model kinds the service knows (serving.kinds.KINDS); "auto" reads it from the loaded model.
ModelKindName = Literal["auto", "score", "nbo", "uplift"]


class ServedModel(BaseModel):
    """One model served by registry name and alias, with the snapshot it scores."""

    model_config = ConfigDict(extra="forbid")
    registered_model: str = Field(description="MLflow registered model name")
    alias: str = Field("champion", description="registry alias served")
    dataset: str = Field(description="dataset whose latest feature snapshot is scored")
    feature_set: str | None = Field(
        None,
        description="feature set key of that snapshot; None: the one the model recorded "
        "(churn_v1 for models that recorded none)",
    )
    kind: ModelKindName = Field("auto", description="model kind; auto: from the loaded model")
    shadow_alias: str | None = Field(
        None,
        description="alias scored in this one's shadow (aggregates logged, never returned)",
    )


class OnlineStoreSettings(BaseModel):
    """Families whose per-customer records (/score records or ranked offers, and consent flags)
    a batch job publishes to a shared store (`patron publish`); the service reads them per
    request instead of loading the model and the snapshot."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        description="redis://host:port/db (a Redis shared by the replicas), or memory:// (tests)"
    )
    families: list[str] = Field(
        min_length=1,
        description="served families read from the store: score models (/score) and "
        "next-best-offer models (/next-best-offer); `patron publish` writes each",
    )
    prefix: str = Field("patron", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="key prefix")
    keep_previous_s: float = Field(
        600.0, gt=0.0, description="a replaced publication stays readable this long"
    )


class ServingSettings(BaseModel):
    """The service's config, passed to the server process as JSON in $PATRON_SERVING."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, ServedModel] = Field(description="family name -> served model")
    home: str | None = Field(None, description="state folder (default $PATRON_HOME)")
    max_batch: int = Field(
        HARD_MAX_BATCH, gt=0, le=HARD_MAX_BATCH, description="largest customer_ids list accepted"
    )
    reload_interval_s: float = Field(
        60.0, ge=0.0, description="poll the registry aliases this often (0: only /admin/reload)"
    )
    precompute_reasons_max: int = Field(
        250_000,
        ge=0,
        description="bases up to this many customers get every reason code computed at load "
        "(a lookup per request); larger ones compute them per request",
    )
    shadow_log_every_s: float = Field(
        60.0, gt=0.0, description="log the shadow aggregates at most this often"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else the state's)"
    )
    campaigns: dict[Annotated[str, Field(pattern=CAMPAIGN_NAME)], str] = Field(
        default_factory=dict,
        description="campaign name -> campaign definition file (YAML, models.decisions.campaign) "
        "that POST /campaigns/plan plans by name and GET /offers lists; read and validated at "
        "start (a broken file stops the service, naming its key) and on every reload",
    )

    online_store: OnlineStoreSettings | None = Field(
        None, description="families served from a shared online store (Redis) written by a job"
    )

    @model_validator(mode="after")
    def _some_model(self) -> ServingSettings:
        if not self.models:
            raise ValueError("models: at least one served model is needed")
        if self.online_store is not None:
            unknown = sorted(set(self.online_store.families) - set(self.models))
            if unknown:
                raise ValueError(
                    f"online_store.families: {unknown} are not among models {sorted(self.models)}"
                )
        return self

    @property
    def store_families(self) -> frozenset[str]:
        """Families read from the online store (none without one)."""
        return frozenset(self.online_store.families) if self.online_store else frozenset()

    def in_process(self) -> ServingSettings:
        """These settings without the store's families: what the in-process state loads."""
        if not self.store_families:
            return self
        kept = {f: m for f, m in self.models.items() if f not in self.store_families}
        return self.model_construct(**{**dict(self), "models": kept})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """The serving YAML named by $PATRON_SERVING_FILE, else the JSON of $PATRON_SERVING."""
        env = os.environ if environ is None else environ
        if env.get(FILE_VAR):
            return cls.from_file(Path(env[FILE_VAR]))
        raw = env.get(ENV_VAR)
        if not raw:
            raise RuntimeError(
                f"neither ${FILE_VAR} nor ${ENV_VAR} is set; start the service with "
                "`patron serve --serving FILE` or point ${FILE_VAR} at a serving YAML"
            )
        return cls.model_validate(json.loads(raw))

    @classmethod
    def from_file(cls, path: Path) -> ServingSettings:
        """Read a serving YAML: ``${VAR}`` / ``${VAR:-default}`` expand; campaign files are
        relative to the YAML. A bad value is one ``ValueError`` line naming the file and key."""
        import yaml
        from pydantic import ValidationError

        from features.sources import expand_vars

        if not path.exists():
            raise FileNotFoundError(f"serving config not found: {path}")
        data = yaml.safe_load(expand_vars(path.read_text())) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a serving config is a mapping of keys")
        campaigns = data.get("campaigns")
        if isinstance(campaigns, dict):
            data["campaigns"] = {
                k: str((path.parent / str(v)).resolve()) if not Path(str(v)).is_absolute() else v
                for k, v in campaigns.items()
            }
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(part) for part in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ValueError(f"{path}: {key}: {first['msg']}{more}") from None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _split_keys(raw: str | None) -> frozenset[bytes]:
    return frozenset(_digest(k.strip()) for k in (raw or "").split(",") if k.strip())


@dataclass(frozen=True)
class AuthSettings:
    """API keys (held as SHA-256 digests) and whether anonymous access was asked for."""

    api_keys: frozenset[bytes]
    admin_keys: frozenset[bytes]
    anonymous: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        """Keys from $PATRON_API_KEYS and $PATRON_ADMIN_KEYS (comma-separated)."""
        env = os.environ if environ is None else environ
        admin = _split_keys(env.get(ADMIN_KEYS_VAR))
        return cls(
            api_keys=_split_keys(env.get(API_KEYS_VAR)) | admin,
            admin_keys=admin,
            anonymous=env.get(ANONYMOUS_VAR, "").strip().lower() in ("1", "true", "yes"),
        )

    def check_startable(self) -> None:
        """Refuse to serve with no key unless anonymous access was explicitly allowed."""
        if not self.api_keys and not self.anonymous:
            raise RuntimeError(
                f"no API key configured: set ${API_KEYS_VAR} (and ${ADMIN_KEYS_VAR}), or "
                f"{ANONYMOUS_VAR}=1 for a local demo without authentication"
            )

    def role(self, presented: str | None) -> Literal["admin", "user", "none"]:
        """The role a presented key grants (anonymous mode grants admin to everyone)."""
        if not self.api_keys and self.anonymous:
            return "admin"
        if not presented:
            return "none"
        digest = _digest(presented)
        # set membership on fixed-length digests: no timing signal about the key's characters
        if digest in self.admin_keys:
            return "admin"
        if digest in self.api_keys:
            return "user"
        return "none"
