"""The value of a contact per (customer, offer, channel), and what that figure is based on.

Incremental profit of contacting customer ``i`` with offer ``o`` on channel ``c``::

    uplift[i, o, c] x value[i, o]  -  cost_per_acceptance[o] x P(accept | contacted)[i, o, c]
                                   -  cost_per_contact[c]

``uplift`` is the incremental response probability, P(respond | contacted) - P(respond | not
contacted), from uplift models (one per offer/channel arm, or per offer scaled by the channel's
``uplift_multiplier``). The offer cost is paid on every acceptance, incremental or not, so it is
weighed by the treated response probability, never by the uplift. ``value`` is the offer's margin
or, for ``value_source: customer_value``, the customer's value (e.g. the CLV margin a retention
offer keeps).

The inputs say what they are by their type: an ``UpliftEstimate``, a ``ResponseProbability``
(P(respond | contacted), not incremental) or a ``ChurnProbability`` (P(leave), not a response
at all). A churn probability is accepted nowhere a response probability is expected: it can only
rank a campaign whose ``ranking.basis`` is ``non_causal_score``, as value at risk
(P(churn) x value - contact costs), labelled non-incremental.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.decisions.campaign import Campaign

BASIS_UPLIFT = "incremental (uplift)"
BASIS_NON_CAUSAL = "non-causal score — not an incremental effect"


def _probabilities(name: str, p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"{name}: probabilities must lie in [0, 1] with no NaN")
    return p


@dataclass(frozen=True)
class ResponseProbability:
    """P(respond | contacted) per (customer, offer[, channel]): a response model's output.

    Not incremental: it counts those who would have responded anyway.
    """

    p: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _probabilities("ResponseProbability.p", self.p))


@dataclass(frozen=True)
class ChurnProbability:
    """P(the customer leaves within the horizon) per customer: a churn model's output.

    It is not the probability of responding to anything and is never used as one.
    """

    p: np.ndarray

    def __post_init__(self) -> None:
        p = _probabilities("ChurnProbability.p", self.p)
        if p.ndim != 1:
            raise ValueError("ChurnProbability.p: one probability per customer (1-D)")
        object.__setattr__(self, "p", p)


@dataclass(frozen=True)
class UpliftEstimate:
    """Incremental response probability per (customer, offer, channel) or per (customer, offer).

    ``p_accept`` (P(accept | contacted), same shape or broadcastable) is needed as soon as an
    offer costs something per acceptance; it must be a ``ResponseProbability``.
    """

    uplift: np.ndarray
    p_accept: ResponseProbability | None = None

    def __post_init__(self) -> None:
        u = np.asarray(self.uplift, dtype=float)
        if np.isnan(u).any() or (u < -1).any() or (u > 1).any():
            raise ValueError("UpliftEstimate.uplift: effects must lie in [-1, 1] with no NaN")
        if u.ndim not in (2, 3):
            raise ValueError("UpliftEstimate.uplift: shape (customers, offers[, channels])")
        if self.p_accept is not None and not isinstance(self.p_accept, ResponseProbability):
            raise TypeError(
                "UpliftEstimate.p_accept must be a ResponseProbability (P(accept | contacted)); "
                f"got {type(self.p_accept).__name__} — a churn probability is not a response "
                "probability"
            )
        object.__setattr__(self, "uplift", u)


Estimate = UpliftEstimate | ResponseProbability | ChurnProbability


@dataclass(frozen=True)
class ContactValues:
    """Per (customer, offer, channel): the objective coefficient, the expected spend, the basis.

    ``objective`` is what the optimiser maximises (incremental profit or incremental responses;
    for a non-causal ranking, the non-incremental ranking value). ``profit`` is the incremental
    profit (uplift basis) or the non-incremental ranking value; ``spend`` the expected money
    spent (channel cost + offer cost x P(accept)); ``basis`` labels every figure.
    """

    objective: np.ndarray
    profit: np.ndarray
    responses: np.ndarray
    spend: np.ndarray
    basis: str
    #: P(accept | contacted) per (customer, offer, channel) where the estimate gives it
    accept: np.ndarray | None = None

    @property
    def incremental(self) -> bool:
        """True when the figures are incremental effects (an uplift estimate)."""
        return self.basis == BASIS_UPLIFT


def _arm_shape(a: np.ndarray, n: int, n_offers: int, n_channels: int, name: str) -> np.ndarray:
    """(n, O) or (n, O, C) → (n, O, C) (a per-offer array is repeated over the channels)."""
    if a.shape[:2] != (n, n_offers) or (a.ndim == 3 and a.shape[2] != n_channels):
        raise ValueError(
            f"{name}: shape {a.shape} does not match ({n}, {n_offers}[, {n_channels}]) "
            "(customers, offers[, channels])"
        )
    return a if a.ndim == 3 else np.repeat(a[:, :, None], n_channels, axis=2)


def offer_values(campaign: Campaign, n: int, customer_value: np.ndarray | None) -> np.ndarray:
    """The value of one incremental response, per (customer, offer)."""
    values = np.zeros((n, len(campaign.offers)))
    for j, offer in enumerate(campaign.offers):
        if offer.value_source == "customer_value":
            if customer_value is None:
                raise ValueError(f"offer {offer.id!r} is valued by customer_value: pass it")
            cv = np.asarray(customer_value, dtype=float)
            if cv.shape != (n,) or np.isnan(cv).any():
                raise ValueError(f"customer_value: one number per customer ({n}), no NaN")
            values[:, j] = cv
        else:
            assert offer.value is not None  # the schema requires it
            values[:, j] = offer.value
    return values


def contact_values(
    campaign: Campaign, estimate: Estimate, customer_value: np.ndarray | None = None
) -> ContactValues:
    """The value of every (customer, offer, channel) contact under the campaign's ranking basis."""
    offers, channels = campaign.offers, campaign.channels
    n_offers, n_channels = len(offers), len(channels)
    channel_cost = np.array([c.cost_per_contact for c in channels])[None, None, :]
    accept_cost = np.array([o.cost_per_acceptance for o in offers])[None, :, None]
    if isinstance(estimate, UpliftEstimate):
        if campaign.ranking.basis != "uplift":
            raise ValueError(
                "ranking.basis is non_causal_score but an UpliftEstimate was given: rank by "
                "uplift (the default) instead"
            )
        n = estimate.uplift.shape[0]
        uplift = estimate.uplift
        if uplift.ndim == 2:
            mult = np.array([c.uplift_multiplier for c in channels])[None, None, :]
            uplift = _arm_shape(uplift, n, n_offers, n_channels, "uplift") * mult
        else:
            uplift = _arm_shape(uplift, n, n_offers, n_channels, "uplift")
        uplift = np.clip(uplift, -1.0, 1.0)
        if estimate.p_accept is not None:
            p_acc = np.asarray(estimate.p_accept.p, dtype=float)
            p_accept = _arm_shape(p_acc, n, n_offers, n_channels, "p_accept")
            if (uplift > p_accept + 1e-9).any():
                raise ValueError(
                    "uplift exceeds P(accept | contacted) somewhere: an incremental response is "
                    "a response, so the uplift cannot be larger than the treated response rate"
                )
        elif (accept_cost > 0).any():
            raise ValueError(
                "an offer costs something per acceptance: pass UpliftEstimate.p_accept "
                "(ResponseProbability, P(accept | contacted)); the uplift alone would "
                "undercount acceptances by those who would have responded anyway"
            )
        else:
            p_accept = np.zeros_like(uplift)
        value = offer_values(campaign, n, customer_value)[:, :, None]
        spend = channel_cost + accept_cost * p_accept
        profit = uplift * value - spend
        responses = uplift
        basis = BASIS_UPLIFT
        objective = profit if campaign.objective == "incremental_profit" else uplift
        accept = p_accept if estimate.p_accept is not None else None
        return ContactValues(objective, profit, responses, spend, basis, accept)

    if campaign.ranking.basis != "non_causal_score":
        raise TypeError(
            f"a {type(estimate).__name__} is not an incremental effect: it may rank a campaign "
            "only when ranking.basis is non_causal_score (with a reason); pass an "
            "UpliftEstimate otherwise"
        )
    if isinstance(estimate, ChurnProbability):
        n = estimate.p.shape[0]
        if (accept_cost > 0).any():
            raise ValueError(
                "an offer costs something per acceptance, and a churn probability says nothing "
                "about accepting: rank by a ResponseProbability or an UpliftEstimate instead"
            )
        value = offer_values(campaign, n, customer_value)[:, :, None]
        at_risk = estimate.p[:, None, None] * value  # value at risk, not a response
        spend = np.broadcast_to(channel_cost, (n, n_offers, n_channels)).copy()
        profit = np.broadcast_to(at_risk, spend.shape) - spend
        responses = np.full(spend.shape, np.nan)  # no response figure exists
    elif isinstance(estimate, ResponseProbability):
        p = estimate.p
        n = p.shape[0]
        p = _arm_shape(p, n, n_offers, n_channels, "ResponseProbability.p")
        value = offer_values(campaign, n, customer_value)[:, :, None]
        spend = channel_cost + accept_cost * p
        profit = p * value - spend
        responses = p
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown estimate type {type(estimate).__name__}")
    if campaign.objective == "incremental_responses":
        raise ValueError(
            "objective incremental_responses needs an UpliftEstimate: a non-causal score has no "
            "incremental responses"
        )
    return ContactValues(profit, profit, responses, spend, BASIS_NON_CAUSAL)
