"""Deterministic synthetic CRM data with a known ground truth: Patron's default demo data.

Time runs in days from ``start`` 00:00. A cutoff date ``T`` follows ``features.definitions``: the
data known at ``T`` is every row dated on or before ``T`` (the whole day), the churn label looks at
days ``T+1 .. T+H`` and the lookback at days ``T-364 .. T``; so ``T`` is the instant ``T+1 00:00``.

The package, by idea: ``config`` (what to generate and the world's parameters), ``world`` (the
seasonality, the catalogue and the sampling steps shared by purchases and campaigns), ``people``
(customer records), ``purchases`` (the purchase process and the churn truth), ``campaigns``
(campaign responses and the uplift truth), ``columns`` (Arrow column builders) and ``writing``
(the files and ``generate``).
"""

from features.synthetic.campaigns import CAMPAIGN_COLUMNS, campaign_effects
from features.synthetic.config import REASONS, CampaignSpec, SyntheticConfig
from features.synthetic.people import CUSTOMER_COLUMNS
from features.synthetic.purchases import TRANSACTION_COLUMNS
from features.synthetic.writing import generate

__all__ = [
    "CAMPAIGN_COLUMNS",
    "CUSTOMER_COLUMNS",
    "REASONS",
    "TRANSACTION_COLUMNS",
    "CampaignSpec",
    "SyntheticConfig",
    "campaign_effects",
    "generate",
]
