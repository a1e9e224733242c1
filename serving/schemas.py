"""Request and response schemas of the scoring API (pydantic; they make the OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CustomerScore(BaseModel):
    """The score of one known customer."""

    customer_id: str = Field(description="customer identifier", examples=["C0000042"])
    probability: float = Field(description="model probability (e.g. of churn in the horizon)",
                               ge=0.0, le=1.0, examples=[0.27])


class UnknownCustomer(BaseModel):
    """A requested id that the feature snapshot does not hold."""

    customer_id: str = Field(description="the id as sent", examples=["C9999999"])
    reason: str = Field(description="why it could not be scored",
                        examples=["not in the feature snapshot"])


class ScoreResponse(BaseModel):
    """Scores of the known customers, in request order, and the ids that could not be scored."""

    model: str = Field(description="model family", examples=["churn"])
    registered_model: str = Field(description="MLflow registered model", examples=["churn-synthetic"])
    version: str = Field(description="model version in the registry", examples=["3"])
    as_of: str = Field(description="date of the feature snapshot scored", examples=["2024-12-31"])
    scores: list[CustomerScore]
    unknown: list[UnknownCustomer]
