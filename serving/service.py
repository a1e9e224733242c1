"""The BentoML service: models by registry alias, the feature snapshot in memory, typed JSON APIs."""

from __future__ import annotations

import logging
from typing import Annotated

import bentoml
from pydantic import Field

from features.store import StateDirs
from serving.schemas import CustomerScore, ScoreResponse, UnknownCustomer
from serving.scoring import LoadedModel, load_model
from serving.settings import ServingSettings

log = logging.getLogger("patron.serving")

CustomerIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]],
    Field(
        min_length=1,
        description="customer ids to score (duplicates are scored once each time they appear)",
        examples=[["C0000001", "C0000002"]],
    ),
]


@bentoml.service(name="patron", traffic={"timeout": 30})
class Patron:
    """Scores customers with the champion models of the registry."""

    def __init__(self) -> None:
        self.settings = ServingSettings.from_env()
        self.state = StateDirs.resolve(self.settings.home)
        self.models: dict[str, LoadedModel] = {
            family: load_model(family, spec, self.state)
            for family, spec in self.settings.models.items()
        }
        log.info("loaded models %s", {f: m.version for f, m in self.models.items()})

    @bentoml.api(route="/score")
    def score(
        self,
        customer_ids: CustomerIds,
        model: Annotated[str, Field(description="model family", examples=["churn"])] = "churn",
    ) -> ScoreResponse:
        """Probability per customer from the model's champion; unknown ids are listed, not errors."""
        loaded = self.models.get(model)
        if loaded is None:
            raise bentoml.exceptions.InvalidArgument(
                f"model: unknown model {model!r}; served: {sorted(self.models)}"
            )
        if len(customer_ids) > self.settings.max_batch:
            raise bentoml.exceptions.InvalidArgument(
                f"customer_ids: {len(customer_ids)} ids exceed the maximum of "
                f"{self.settings.max_batch} per request"
            )
        scores, unknown = loaded.score(customer_ids)
        return ScoreResponse(
            model=model,
            registered_model=loaded.registered_model,
            version=loaded.version,
            as_of=loaded.as_of.isoformat(),
            scores=[
                CustomerScore(customer_id=c, probability=float(p))
                for c, p in zip(scores["customer_id"], scores["score"], strict=True)
            ],
            unknown=[
                UnknownCustomer(customer_id=c, reason="not in the feature snapshot")
                for c in unknown
            ],
        )
